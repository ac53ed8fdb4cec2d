"""pools: TODO docstring."""
