"""The Python client (async first) and its recipes."""
