"""The local SQLite store of measurements."""

from edgeq.store.db import Measurement, ResultsStore

__all__ = ["Measurement", "ResultsStore"]
