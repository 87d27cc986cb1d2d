"""The results store's data-access layer: one interface over SQLite and PostgreSQL.

:class:`ResultsStore <edgeq.store.db.ResultsStore>` speaks to a :class:`Backend`
only: SQL with ``?`` placeholders, rows as tuples, one write transaction at a time
(:meth:`Backend.transaction`), a schema version, and the few places the two
databases differ (column types in DDL, how a new row's id comes back, where the
schema version lives). The two are :mod:`edgeq.store.sqlite_backend` and
:mod:`edgeq.store.postgres`; :func:`edgeq.store.connect.open_backend` picks one from what
``--db`` / ``EDGEQ_DB`` / ``store=`` says.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["BUSY_TIMEOUT_S", "Backend", "db_errors", "is_server_url"]

BUSY_TIMEOUT_S = 60.0


def db_errors() -> tuple[type[Exception], ...]:
    """The exceptions a database call may raise: sqlite3's, and psycopg's where it is installed."""
    try:
        import psycopg
    except ModuleNotFoundError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def is_server_url(target: object) -> bool:
    """True for a ``postgresql://`` / ``postgres://`` URL (a database server, not a file)."""
    return isinstance(target, str) and target.split("://", 1)[0].lower() in ("postgresql", "postgres")


class Backend:
    """What the store needs of a database (see the module docs). Subclasses: SQLite, PostgreSQL."""

    dialect = ""
    #: where the data is, for messages (a file path, or a URL without its password)
    display = ""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders); its rows (empty for statements returning none)."""
        raise NotImplementedError

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int | None:
        """Run an ``INSERT ... ON CONFLICT DO NOTHING``; the new row's id, None when it conflicted."""
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[Backend]:
        """One write transaction; writers from other processes wait for it (and it for them)."""
        raise NotImplementedError
        yield self  # pragma: no cover

    def ddl(self, sql: str) -> str:
        """A ``CREATE``/``ALTER`` statement written for SQLite, in this database's column types."""
        return sql

    def schema_version(self) -> int:
        raise NotImplementedError

    def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    def tables(self) -> list[str]:
        """The tables that are not the store's own bookkeeping."""
        raise NotImplementedError

    def lock_schema(self) -> None:
        """Inside a transaction: hold off other processes migrating the same database."""

    def close(self) -> None:
        raise NotImplementedError
