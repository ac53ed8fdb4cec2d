"""dimse: TODO docstring."""
