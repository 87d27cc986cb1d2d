"""The results store's schema and its migrations, one list for SQLite and PostgreSQL.

``MIGRATIONS[i]`` takes a version-``i`` database to version ``i + 1``; each is written once,
in SQLite's SQL, and runs on PostgreSQL through :meth:`Backend.ddl <edgeq.store.backend.Backend.ddl>`
(its column types). A migration may be given a plain ``sqlite3.Connection`` too (older files
are built that way in tests).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from edgeq.store.backend import Backend
from edgeq.store.records import canonical_json
from edgeq.store.sqlite_backend import SQLiteBackend

__all__ = ["COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "TASK_COLUMNS", "fingerprint"]

COLUMNS = ("model_sha256", "model_name", "mode", "device", "runtime", "runtime_version", "threads", "kind",
           "created", "size_bytes", "latency_p50_us", "latency_p90_us", "latency_mean_us", "accuracy_top1",
           "accuracy_top5", "agreement", "sqnr_db", "source", "payload")

#: Columns added by later migrations: in a run's fingerprint only where set, so the runs recorded before
#: them keep theirs (and the same JSON imported again is still found).
TASK_COLUMNS = ("task", "task_metric", "task_metric2")


def fingerprint(values: Mapping[str, Any]) -> str:
    """What makes two rows the same run: everything but the row number."""
    keys = (*COLUMNS, *(k for k in TASK_COLUMNS if values.get(k) is not None))
    return hashlib.sha256(canonical_json({k: values[k] for k in keys}).encode()).hexdigest()


def _db(conn: Backend | sqlite3.Connection) -> Backend:
    return SQLiteBackend.wrap(conn) if isinstance(conn, sqlite3.Connection) else conn


def _migrate_1(conn: Backend | sqlite3.Connection) -> None:
    """Version 1: one row per measurement, its figures as columns and its payload as JSON."""
    db = _db(conn)
    db.execute(db.ddl("""
        CREATE TABLE measurements (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            model_sha256 TEXT NOT NULL,
            model_name TEXT,
            mode TEXT NOT NULL,
            device TEXT NOT NULL,
            runtime TEXT NOT NULL,
            runtime_version TEXT,
            threads INTEGER,
            kind TEXT NOT NULL,
            created TEXT NOT NULL,
            size_bytes INTEGER,
            latency_p50_us REAL,
            latency_p90_us REAL,
            latency_mean_us REAL,
            accuracy_top1 REAL,
            accuracy_top5 REAL,
            agreement REAL,
            sqnr_db REAL,
            source TEXT NOT NULL,
            payload TEXT NOT NULL
        )"""))
    db.execute("CREATE INDEX ix_measurements_key ON measurements "
               "(model_sha256, mode, device, runtime, threads, created)")


def _migrate_2(conn: Backend | sqlite3.Connection) -> None:
    """Version 2: a fingerprint per row, so importing the same JSON file twice records it once.

    Rows already stored get their fingerprint computed; of any identical rows, the first
    keeps it and the others keep NULL (they stay, nothing is deleted).
    """
    db = _db(conn)
    db.execute("ALTER TABLE measurements ADD COLUMN fingerprint TEXT")
    seen: set[str] = set()
    cols = ", ".join(COLUMNS)
    for row in db.execute(f"SELECT id, {cols} FROM measurements ORDER BY id"):
        values = dict(zip(COLUMNS, row[1:]))
        values["payload"] = json.loads(values["payload"])
        fp = fingerprint(values)
        if fp not in seen:
            seen.add(fp)
            db.execute("UPDATE measurements SET fingerprint = ? WHERE id = ?", (fp, row[0]))
    db.execute("CREATE UNIQUE INDEX ux_measurements_fingerprint ON measurements (fingerprint)")
    db.execute("CREATE INDEX ix_measurements_created ON measurements (created)")


def _migrate_task_metrics(conn: Backend | sqlite3.Connection) -> None:
    """Task metrics: the task (detection, segmentation, fidelity) and its two figures as columns.

    Rows already stored are classification runs or runs of no task: their new columns stay NULL.
    """
    db = _db(conn)
    db.execute("ALTER TABLE measurements ADD COLUMN task TEXT")
    db.execute(db.ddl("ALTER TABLE measurements ADD COLUMN task_metric REAL"))
    db.execute(db.ddl("ALTER TABLE measurements ADD COLUMN task_metric2 REAL"))


def _migrate_compressed_size(conn: Backend | sqlite3.Connection) -> None:
    """A ``compressed_size_bytes`` column (gzip -9 of the file); rows stored before have NULL.

    Not part of the fingerprint: the same file always compresses to the same size.
    """
    _db(conn).execute("ALTER TABLE measurements ADD COLUMN compressed_size_bytes INTEGER")


def _migrate_deploy_runs(conn: Backend | sqlite3.Connection) -> None:
    """Deploy runs: a run id per ``edgeq deploy``, and the state each of its boards ended in.

    ``deploy_runs``: id, when, the model, the run's settings (JSON). ``deploy_boards``: per run and
    board label, the state (``ok``, ``failed``, ``unreachable``, ``timed-out``, ``interrupted``), the
    failed step, the board's message, its groups, its settings (JSON: how to reach it again for
    ``--resume``), the measurement row ids it stored, and how many attempts it took. Measurements
    get the ``run_id`` that made them (NULL for rows stored before, and for those not from a deploy).
    """
    db = _db(conn)
    db.execute("""
        CREATE TABLE deploy_runs (
            run_id TEXT PRIMARY KEY,
            created TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            model_name TEXT,
            settings TEXT NOT NULL
        )""")
    db.execute(db.ddl("""
        CREATE TABLE deploy_boards (
            run_id TEXT NOT NULL REFERENCES deploy_runs (run_id),
            label TEXT NOT NULL,
            host TEXT NOT NULL,
            state TEXT NOT NULL,
            error_kind TEXT,
            step TEXT,
            error TEXT,
            groups_json TEXT NOT NULL,
            board TEXT NOT NULL,
            stored_ids TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            finished TEXT NOT NULL,
            PRIMARY KEY (run_id, label)
        )"""))
    db.execute("ALTER TABLE measurements ADD COLUMN run_id TEXT")


def _migrate_measurement_groups(conn: Backend | sqlite3.Connection) -> None:
    """A ``groups_json`` column: the inventory groups of the board that measured the row (a JSON list).

    Rows stored before, and rows not from an inventory, have ``[]``. Not part of the fingerprint:
    a board's groups say where it sits, not what was measured.
    """
    _db(conn).execute("ALTER TABLE measurements ADD COLUMN groups_json TEXT NOT NULL DEFAULT '[]'")


#: Schema migrations in order; ``MIGRATIONS[i]`` takes a version-``i`` file to version ``i + 1``.
MIGRATIONS: list[Callable[[Any], None]] = [_migrate_1, _migrate_2, _migrate_task_metrics, _migrate_compressed_size,
                                           _migrate_deploy_runs, _migrate_measurement_groups]
SCHEMA_VERSION = len(MIGRATIONS)
