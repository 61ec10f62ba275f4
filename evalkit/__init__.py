"""evalkit: an evaluation harness for small code and math models."""

__version__ = "0.1.0"
