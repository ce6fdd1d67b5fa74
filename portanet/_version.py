"""The package version (its own module: io writes it into every checkpoint)."""

__version__ = "0.1.0"
