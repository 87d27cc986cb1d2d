"""The results store on a PostgreSQL server, through psycopg 3 (``pip install 'edgeq[postgres]'``).

A team and its CI share one database: ``--db postgresql://user@host/edgeq`` (or
``EDGEQ_DB``). The tables and migrations are the SQLite file's (:mod:`edgeq.store.migrations`),
with PostgreSQL's types (``BIGSERIAL`` ids, ``DOUBLE PRECISION`` figures); the schema version
lives in a one-row table ``edgeq_schema``. Concurrent writers from many hosts are safe: each
write is one transaction, a measurement goes in with ``ON CONFLICT (fingerprint) DO NOTHING``
(so the same run recorded twice at once is stored once), and a migration holds an advisory lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from edgeq.errors import StoreError
from edgeq.store.backend import Backend

__all__ = ["PostgresBackend", "redact_url"]

_LOCK_KEY = 0x65646765_71  # "edgeq": the advisory lock a migration holds


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and reports)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresBackend(Backend):
    """One connection to a PostgreSQL database (autocommit outside :meth:`transaction`).

    Raises:
        StoreError: psycopg is not installed, or the server cannot be reached or refuses the login.
    """

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.display = redact_url(url)
        try:
            import psycopg
        except ModuleNotFoundError:
            raise StoreError("a PostgreSQL results store needs psycopg", argument="db", received=self.display,
                             fix="pip install 'edgeq[postgres]'") from None
        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=15)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"cannot connect to the PostgreSQL server: {first}", argument="db",
                             received=self.display,
                             fix="check the URL (postgresql://USER@HOST:PORT/DBNAME), that the server runs and "
                                 "that the user may log in") from exc

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(_sql(sql), list(args))  # type: ignore[arg-type]
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int | None:
        rows = self.execute(sql + " RETURNING id", args)
        return int(rows[0][0]) if rows else None

    @contextmanager
    def transaction(self) -> Iterator[Backend]:
        with self._conn.transaction():
            yield self

    def ddl(self, sql: str) -> str:
        sql = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)

    def _ensure_version_table(self) -> None:
        self._conn.execute("CREATE TABLE IF NOT EXISTS edgeq_schema (version INTEGER NOT NULL)")

    def schema_version(self) -> int:
        # a query of the catalog, not to_regclass: that would answer from this session's cache, which
        # may still say "no such table" after another process made it while this one waited for the lock
        if not self.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                            "AND table_name = 'edgeq_schema'"):
            return 0
        got = self.execute("SELECT version FROM edgeq_schema")
        return int(got[0][0]) if got else 0

    def set_schema_version(self, version: int) -> None:
        self._ensure_version_table()
        self.execute("DELETE FROM edgeq_schema")
        self.execute("INSERT INTO edgeq_schema (version) VALUES (?)", [int(version)])

    def lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", [_LOCK_KEY])

    def tables(self) -> list[str]:
        return [r[0] for r in self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_name <> 'edgeq_schema'")]

    def close(self) -> None:
        self._conn.close()
