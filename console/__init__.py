"""The pacsdeck console: a Textual TUI over every node of a fleet."""
