"""The version of edgeq-device (kept equal to ``device/pyproject.toml``)."""

__version__ = "0.1.0"
