"""The package version (one place; the serialize format records it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
