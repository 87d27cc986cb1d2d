"""The results store in one SQLite file: :class:`SQLiteBackend` (WAL mode, a busy timeout, ``BEGIN IMMEDIATE``)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeq.errors import StoreError
from edgeq.store.backend import BUSY_TIMEOUT_S, Backend

__all__ = ["SQLiteBackend"]


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
