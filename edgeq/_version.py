"""The version of the edgeq distribution."""

__version__ = "0.1.0"
