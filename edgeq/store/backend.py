"""The results store's data-access layer: one interface over SQLite and PostgreSQL.

:class:`ResultsStore <edgeq.store.db.ResultsStore>` speaks to a :class:`Backend`
only: SQL with ``?`` placeholders, rows as tuples, one write transaction at a time
(:meth:`Backend.transaction`), a schema version, and the few places the two
databases differ (column types in DDL, how a new row's id comes back, where the
schema version lives). :func:`open_backend` picks one from what ``--db`` /
``EDGEQ_DB`` / ``store=`` says: a ``postgresql://`` (or ``postgres://``) URL is a
PostgreSQL server (:mod:`edgeq.store.postgres`, through psycopg 3); anything else
is a SQLite file path.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeq.errors import StoreError

__all__ = ["BUSY_TIMEOUT_S", "Backend", "SQLiteBackend", "db_errors", "is_server_url", "open_backend"]

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


class SQLiteBackend(Backend):
    """One SQLite file in WAL mode with a busy timeout; writes are ``BEGIN IMMEDIATE`` transactions.

    Raises:
        StoreError: the file cannot be opened or created, or is not a database.
    """

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.display = str(path)
        try:
            self._conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {exc}", argument="db", received=str(path),
                             fix="give a writable file path") from exc
        try:
            self.retry(lambda: self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}"))
            self.retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone())
            self.retry(lambda: self._conn.execute("PRAGMA synchronous = NORMAL"))
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if "locked" in str(exc).lower() or "busy" in str(exc).lower():
                raise StoreError(f"the database stayed locked by another process for {BUSY_TIMEOUT_S:g} s",
                                 argument="db", received=str(path),
                                 fix="wait for the other edgeq process to finish, then retry") from exc
            raise StoreError(f"not an edgeq results database ({exc})", argument="db", received=str(path),
                             fix="give another path, or move this file away to start a new store") from exc
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def wrap(cls, conn: sqlite3.Connection) -> SQLiteBackend:
        """A backend over a connection opened elsewhere (it stays the caller's to close)."""
        self = cls.__new__(cls)
        self.path = Path(":memory:")
        self.display = "sqlite connection"
        self._conn = conn
        return self

    def retry(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; retry while another process holds a lock sqlite's busy handler did not wait for."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._conn.execute(sql, list(args)).fetchall()]

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int | None:
        cur = self._conn.execute(sql, list(args))
        return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None

    @contextmanager
    def transaction(self) -> Iterator[Backend]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version = {int(version)}")

    def tables(self) -> list[str]:
        return [r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]

    def close(self) -> None:
        self._conn.close()


def open_backend(target: str | os.PathLike[str], *, create: bool = True) -> Backend:
    """The backend for a SQLite file path or a ``postgresql://`` URL.

    Raises:
        StoreError: the database cannot be reached, opened or created (``create=False``: a missing file).
    """
    if is_server_url(target):
        from edgeq.store.postgres import PostgresBackend  # psycopg only when a server is asked for

        return PostgresBackend(str(target))
    path = Path(target).expanduser()
    if path.is_dir():
        raise StoreError("is a directory, not a results database", argument="db", received=str(path),
                         fix="give a file path such as ~/.edgeq/results.db, or a postgresql:// URL")
    if not path.exists():
        if not create:
            raise StoreError("no results store at this path", argument="db", received=str(path),
                             fix="record runs first (edgeq store import FILE.json, edgeq compare) "
                                 "or pass --db / EDGEQ_DB to the right file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder: {exc.strerror or exc}", argument="db",
                             received=str(path), fix="give a writable path") from exc
    return SQLiteBackend(path)
