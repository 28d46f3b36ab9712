"""jppo's version, read by pyproject.toml and written into exported models."""
__version__ = "0.1.0"
