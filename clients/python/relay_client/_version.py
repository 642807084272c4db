"""Version of the Python relay client."""

__version__ = "0.2.0"
