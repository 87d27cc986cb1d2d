"""Open the results store's database: :func:`open_backend` (a SQLite file, or a ``postgresql://`` server)."""

from __future__ import annotations

import os
from pathlib import Path

from edgeq.errors import StoreError
from edgeq.store.backend import Backend, is_server_url
from edgeq.store.sqlite_backend import SQLiteBackend

__all__ = ["open_backend"]


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
