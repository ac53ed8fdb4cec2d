"""The `pacsdeck` command line: one entry point over node, agent and console."""
