"""The store of measurements and deploy runs: a SQLite file, or a PostgreSQL server a team shares."""

from edgeq.store.db import Measurement, ResultsStore

__all__ = ["Measurement", "ResultsStore"]
