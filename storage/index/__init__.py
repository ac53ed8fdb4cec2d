"""index: TODO docstring."""
