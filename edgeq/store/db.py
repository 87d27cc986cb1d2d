"""The results store: every measurement edgeq makes, kept in one SQLite file.

Rows come from three places:

- ``edgeq.compare`` on the host (one row per model x mode x threads, ``kind="compare"``),
- ``edgeq-device bench --json`` / ``edgeq-device eval --json`` files, here or from a board
  (:meth:`ResultsStore.import_json`, :meth:`ResultsStore.add_device_result`; read through
  ``edgeq_device``'s own schema, see :mod:`edgeq.store.device_json`),
- deploys, which hand a board's result to :meth:`ResultsStore.add_device_result` with the
  board's label.

A run is identified by the model file's hash (sha256 of the ``.tflite`` bytes), the
quantization mode, the device (``"host"`` for this machine, a board label, or the name of
the board the result describes), the runtime, the thread count and the time. The full
payload is kept beside the extracted figures, so nothing measured is lost. The records are
:class:`~edgeq.store.records.Measurement` and :class:`~edgeq.store.records.Regression`.

The file is opened in WAL mode with a busy timeout and every write is one transaction, so
several processes can record at once. Its schema is versioned with ``PRAGMA user_version``:
opening a file written by an older edgeq upgrades it in place (:data:`MIGRATIONS`); a file
from a newer edgeq is refused with a :class:`~edgeq.errors.StoreError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeq_device.errors import InvalidArgumentError
from edgeq_device.results.report_json import loads_json

from edgeq.errors import StoreError
from edgeq.store.device_json import DEVICE_RESULTS, measurement_from_device, read_device_json
from edgeq.store.records import KINDS, Measurement, Regression, canonical_json, file_sha256, task_regressions

__all__ = [
    "DEVICE_SCHEMAS",
    "KINDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Measurement",
    "Regression",
    "ResultsStore",
    "default_db_path",
    "file_sha256",
]

#: The device JSON schemas the store records, and the kind of run each is.
DEVICE_SCHEMAS = {cls.schema(): kind if kind in KINDS else "eval" for kind, cls in DEVICE_RESULTS.items()}
_BUSY_TIMEOUT_S = 60.0


def default_db_path() -> Path:
    """``$EDGEQ_DB`` if set, else ``~/.edgeq/results.db``."""
    env = os.environ.get("EDGEQ_DB")
    return Path(env).expanduser() if env else Path("~/.edgeq/results.db").expanduser()


# --------------------------------------------------------------------------- schema

_COLUMNS = ("model_sha256", "model_name", "mode", "device", "runtime", "runtime_version", "threads", "kind",
            "created", "size_bytes", "latency_p50_us", "latency_p90_us", "latency_mean_us", "accuracy_top1",
            "accuracy_top5", "agreement", "sqnr_db", "source", "payload")


#: Columns added by later migrations: in a run's fingerprint only where set, so the runs recorded before
#: them keep theirs (and the same JSON imported again is still found).
_TASK_COLUMNS = ("task", "task_metric", "task_metric2")


def _fingerprint(values: Mapping[str, Any]) -> str:
    """What makes two rows the same run: everything but the row number."""
    keys = (*_COLUMNS, *(k for k in _TASK_COLUMNS if values.get(k) is not None))
    return hashlib.sha256(canonical_json({k: values[k] for k in keys}).encode()).hexdigest()


def _migrate_1(conn: sqlite3.Connection) -> None:
    """Version 1: one row per measurement, its figures as columns and its payload as JSON."""
    conn.execute("""
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
        )""")
    conn.execute("CREATE INDEX ix_measurements_key ON measurements "
                 "(model_sha256, mode, device, runtime, threads, created)")


def _migrate_2(conn: sqlite3.Connection) -> None:
    """Version 2: a fingerprint per row, so importing the same JSON file twice records it once.

    Rows already stored get their fingerprint computed; of any identical rows, the first
    keeps it and the others keep NULL (they stay, nothing is deleted).
    """
    conn.execute("ALTER TABLE measurements ADD COLUMN fingerprint TEXT")
    seen: set[str] = set()
    cols = ", ".join(_COLUMNS)
    for row in conn.execute(f"SELECT id, {cols} FROM measurements ORDER BY id").fetchall():
        values = dict(zip(_COLUMNS, row[1:]))
        values["payload"] = json.loads(values["payload"])
        fp = _fingerprint(values)
        if fp not in seen:
            seen.add(fp)
            conn.execute("UPDATE measurements SET fingerprint = ? WHERE id = ?", (fp, row[0]))
    conn.execute("CREATE UNIQUE INDEX ux_measurements_fingerprint ON measurements (fingerprint)")
    conn.execute("CREATE INDEX ix_measurements_created ON measurements (created)")


def _migrate_task_metrics(conn: sqlite3.Connection) -> None:
    """Task metrics: the task (detection, segmentation, fidelity) and its two figures as columns.

    Rows already stored are classification runs or runs of no task: their new columns stay NULL.
    """
    conn.execute("ALTER TABLE measurements ADD COLUMN task TEXT")
    conn.execute("ALTER TABLE measurements ADD COLUMN task_metric REAL")
    conn.execute("ALTER TABLE measurements ADD COLUMN task_metric2 REAL")


def _migrate_compressed_size(conn: sqlite3.Connection) -> None:
    """A ``compressed_size_bytes`` column (gzip -9 of the file); rows stored before have NULL.

    Not part of the fingerprint: the same file always compresses to the same size.
    """
    conn.execute("ALTER TABLE measurements ADD COLUMN compressed_size_bytes INTEGER")


#: Schema migrations in order; ``MIGRATIONS[i]`` takes a version-``i`` file to version ``i + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_1, _migrate_2, _migrate_task_metrics,
                                                           _migrate_compressed_size]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- the store


class ResultsStore:
    """Every measurement, in one SQLite file (see the module docs).

    Args:
        path: the database file; None means ``$EDGEQ_DB`` or ``~/.edgeq/results.db``.
            Its folder is created if needed.
        create: False refuses to create a missing file (raises StoreError), for commands
            that only read.

    Raises:
        StoreError: the file cannot be opened or created, is not an edgeq results store,
            or was written by a newer edgeq.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        if self.path.is_dir():
            raise StoreError("is a directory, not a results database", argument="db", received=str(self.path),
                             fix="give a file path such as ~/.edgeq/results.db")
        if not self.path.exists():
            if not create:
                raise StoreError("no results store at this path", argument="db", received=str(self.path),
                                 fix="record runs first (edgeq store import FILE.json, edgeq compare) "
                                     "or pass --db / EDGEQ_DB to the right file")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder: {exc.strerror or exc}", argument="db",
                                 received=str(self.path), fix="give a writable path") from exc
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {exc}", argument="db", received=str(self.path),
                             fix="give a writable file path") from exc
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    # -- connection, schema

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; retry while another process holds a lock sqlite's busy handler did not wait for."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
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

    def _setup(self) -> None:
        try:
            self._retry(lambda: self._conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}"))
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone())
            self._retry(lambda: self._conn.execute("PRAGMA synchronous = NORMAL"))
            self._retry(self._migrate)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc).lower() or "busy" in str(exc).lower():
                raise StoreError(f"the database stayed locked by another process for {_BUSY_TIMEOUT_S:g} s",
                                 argument="db", received=str(self.path),
                                 fix="wait for the other edgeq process to finish, then retry") from exc
            raise StoreError(f"cannot open the database ({exc})", argument="db", received=str(self.path),
                             fix="give a writable file path") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"not an edgeq results database ({exc})", argument="db", received=str(self.path),
                             fix="give another path, or move this file away to start a new store") from exc

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the results store has schema version {version}, written by a newer edgeq "
                    f"(this edgeq reads up to version {SCHEMA_VERSION})", argument="db",
                    received=str(self.path), fix="upgrade edgeq (pip install -U edgeq)")
            if version == 0:
                tables = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
                if tables:
                    raise StoreError(f"the database holds other tables ({', '.join(tables[:5])}) and is "
                                     "not an edgeq results store", argument="db", received=str(self.path),
                                     fix="give another path for the results store")
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
                conn.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so writers queue instead of deadlock."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        """The file's schema version (``PRAGMA user_version``)."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- writing

    def record(self, m: Measurement) -> tuple[int, bool]:
        """Store ``m``; return (row id, True if it is new, False if the same run was already stored)."""
        if not isinstance(m, Measurement):
            raise InvalidArgumentError("must be an edgeq.store.Measurement", argument="m",
                                       received=type(m).__name__, fix="build one with Measurement(...)")
        values = {k: getattr(m, k) for k in (*_COLUMNS, *_TASK_COLUMNS)}
        fp = _fingerprint(values)
        values["payload"] = canonical_json(m.payload)
        values["compressed_size_bytes"] = m.compressed_size_bytes  # not fingerprinted
        cols = ", ".join((*values, "fingerprint"))
        marks = ", ".join("?" for _ in range(len(values) + 1))

        def write() -> tuple[int, bool]:
            with self._transaction() as conn:
                row = conn.execute("SELECT id FROM measurements WHERE fingerprint = ?", (fp,)).fetchone()
                if row is not None:
                    return int(row[0]), False
                cur = conn.execute(f"INSERT INTO measurements ({cols}) VALUES ({marks})", [*values.values(), fp])
                return int(cur.lastrowid or 0), True

        try:
            return self._retry(write)  # type: ignore[no-any-return]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the measurement: {exc}", argument="db", received=str(self.path),
                             fix="check the file is writable and the disk not full") from exc

    def add_measurement(self, m: Measurement) -> int:
        """Record one measurement; return its row id.

        The same measurement recorded twice (every field equal, time included) is stored once
        and its existing id is returned.
        """
        return self.record(m)[0]

    @staticmethod
    def measurement_from_device(payload: Mapping[str, Any], *, device: str | None = None,
                                source: str = "device", model_name: str | None = None,
                                origin: str = "payload") -> Measurement:
        """Turn an ``edgeq-device`` bench/eval/profile result into a :class:`Measurement` (not stored).

        See :func:`edgeq.store.device_json.measurement_from_device`.

        Raises:
            DataError: the payload is not edgeq-device bench/eval/profile JSON.
        """
        return measurement_from_device(payload, device=device, source=source, model_name=model_name,
                                       origin=origin)

    def add_device_result(self, payload: dict[str, Any], *, device: str | None = None, source: str = "device",
                          model_name: str | None = None) -> int:
        """Record the result of ``edgeq-device bench``, ``eval`` or ``profile`` (the dict its ``--json`` writes).

        Args:
            payload: the parsed JSON (``"schema": "edgeq-device/bench/1"``, ``".../eval/1"`` or
                ``".../profile/1"``).
            device: the board's label; None takes a name from the payload's sysinfo.
            source: where it came from (``"device"``, ``"deploy"``, ...).
            model_name: a name for the model; None takes it from the payload (model path's stem).

        Returns:
            The row id.

        Raises:
            DataError: the payload is not edgeq-device JSON or does not identify the model.
        """
        return self.record(self.measurement_from_device(payload, device=device, source=source,
                                                         model_name=model_name))[0]

    @staticmethod
    def read_device_json(path: str | os.PathLike[str], *, device: str | None = None,
                         model_name: str | None = None) -> Measurement:
        """Read one ``edgeq-device bench/eval --json`` file into a :class:`Measurement` (not stored).

        Raises:
            DataError: the file is missing, not JSON, or not edgeq-device JSON (the message names
                the file and what was found instead).
        """
        return read_device_json(path, device=device, model_name=model_name)

    def import_json(self, path: str | os.PathLike[str], *, device: str | None = None) -> int:
        """Record one file written by ``edgeq-device bench --json`` or ``eval --json``; return its id.

        Importing the same file twice records it once (the existing id is returned).

        Args:
            path: the JSON file.
            device: the device label; None takes a name from the file's sysinfo.

        Raises:
            DataError: the file is missing, not JSON, or not edgeq-device JSON (the message names
                the file and what was found instead).
        """
        return self.record(self.read_device_json(path, device=device))[0]

    # -- reading

    def _where(self, model: str | None, device: str | None, mode: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if model:
            m = model.strip()
            alts = ["model_name = ?"]
            args.append(m)
            if re.fullmatch(r"[0-9a-fA-F]{6,64}", m):
                alts.append("model_sha256 LIKE ?")
                args.append(m.lower() + "%")
            clauses.append("(" + " OR ".join(alts) + ")")
        if device:
            clauses.append("device = ?")
            args.append(device)
        if mode:
            clauses.append("mode = ?")
            args.append(mode)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _select(self, sql: str, args: list[Any]) -> list[Measurement]:
        cols = ", ".join(("id", *_COLUMNS, *_TASK_COLUMNS, "compressed_size_bytes"))
        try:
            rows = self._conn.execute(f"SELECT {cols} FROM measurements{sql}", args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the results: {exc}", argument="db", received=str(self.path),
                             fix="check the file is an edgeq results store") from exc
        out = []
        for row in rows:
            values = dict(zip((*_COLUMNS, *_TASK_COLUMNS, "compressed_size_bytes"), row[1:]))
            try:
                values["payload"] = loads_json(values["payload"])
            except (TypeError, ValueError):
                values["payload"] = {"unreadable": values["payload"]}
            out.append(Measurement(id=row[0], **values))
        return out

    def runs(self, *, model: str | None = None, device: str | None = None, mode: str | None = None,
             limit: int | None = None) -> list[Measurement]:
        """Recorded runs, newest first.

        Args:
            model: a model name, or a prefix (6+ hex digits) of its sha256.
            device: a device label (``"host"``, a board label).
            mode: a quantization mode (``"int8"``, ...).
            limit: at most this many runs.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidArgumentError("must be a positive integer", argument="limit", received=limit,
                                       fix="give e.g. 20")
        where, args = self._where(model, device, mode)
        sql = where + " ORDER BY created DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._select(sql, args)

    def diff(self, *, model: str | None = None, device: str | None = None, mode: str | None = None,
             latency_threshold: float = 0.10, accuracy_threshold: float = 0.5,
             sqnr_threshold: float = 3.0) -> list[Regression]:
        """Regressions of each key's latest run against the run before it.

        A key is model hash + mode + device + runtime + threads. For each key, the newest run
        that measured p50 latency is compared with the one before it, and likewise for top-1
        accuracy.

        Args:
            latency_threshold: flag p50 latency up by more than this fraction (0.10 = 10 %).
            accuracy_threshold: flag top-1 accuracy, or a task's mAP@[.5:.95] or mIoU, down by more than
                this many percentage points.
            sqnr_threshold: flag the output SQNR against the float model down by more than this many dB.

        Returns:
            The regressions found (empty when none).
        """
        for name, value in (("latency_threshold", latency_threshold), ("accuracy_threshold", accuracy_threshold),
                            ("sqnr_threshold", sqnr_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError("must be a non-negative number", argument=name, received=value,
                                           fix="give e.g. 0.10 for latency, 0.5 points for accuracy")
        where, args = self._where(model, device, mode)
        groups: dict[tuple[Any, ...], list[Measurement]] = {}
        for m in self._select(where + " ORDER BY created ASC, id ASC", args):
            groups.setdefault((m.model_sha256, m.mode, m.device, m.runtime, m.threads), []).append(m)
        found: list[Regression] = []
        for runs in groups.values():
            timed = [r for r in runs if r.latency_p50_us is not None]
            if len(timed) >= 2:
                prev, cur = timed[-2], timed[-1]
                p, c = float(prev.latency_p50_us), float(cur.latency_p50_us)  # type: ignore[arg-type]
                change = (c - p) / p if p > 0 else 0.0
                if change > latency_threshold:
                    found.append(self._regression(prev, cur, "latency_p50_us", p, c, change))
            scored = [r for r in runs if r.accuracy_top1 is not None]
            if len(scored) >= 2:
                prev, cur = scored[-2], scored[-1]
                p, c = float(prev.accuracy_top1), float(cur.accuracy_top1)  # type: ignore[arg-type]
                points = (c - p) * 100.0
                if -points > accuracy_threshold:
                    found.append(self._regression(prev, cur, "accuracy_top1", p, c, points))
            found += task_regressions(runs, accuracy_threshold, sqnr_threshold)
        found.sort(key=lambda r: r.created_current, reverse=True)
        return found

    @staticmethod
    def _regression(prev: Measurement, cur: Measurement, metric: str, p: float, c: float,
                    change: float) -> Regression:
        return Regression(model=cur.label, mode=cur.mode, device=cur.device, threads=cur.threads, metric=metric,
                          previous=p, current=c, change=change, created_previous=prev.created,
                          created_current=cur.created, runtime=cur.runtime, model_sha256=cur.model_sha256)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])
