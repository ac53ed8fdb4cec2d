"""imaging: TODO docstring."""
