"""The results store: every measurement edgeq makes, kept in one SQLite file.

Rows come from three places:

- ``edgeq.compare`` on the host (one row per model x mode x threads, ``kind="compare"``),
- ``edgeq-device bench --json`` / ``edgeq-device eval --json`` files, here or from a board
  (:meth:`ResultsStore.import_json`, :meth:`ResultsStore.add_device_result`),
- deploys, which hand a board's result to :meth:`ResultsStore.add_device_result` with the
  board's label.

A run is identified by the model file's hash (sha256 of the ``.tflite`` bytes), the
quantization mode, the device (``"host"`` for this machine, a board label, or a name taken
from the board's sysinfo), the runtime, the thread count and the time. The full payload is
kept beside the extracted figures, so nothing measured is lost.

The file is opened in WAL mode with a busy timeout and every write is one transaction, so
several processes can record at once. Its schema is versioned with ``PRAGMA user_version``:
opening a file written by an older edgeq upgrades it in place; a file from a newer edgeq is
refused with a :class:`~edgeq.errors.StoreError`.

Units: latencies in microseconds; accuracies and agreement as fractions in [0, 1];
SQNR in dB; sizes in bytes; times as ISO 8601 UTC (``2025-01-31T12:00:00.000000Z``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from edgeq_device.errors import DataError, InvalidArgumentError, ModelFileError

from edgeq.errors import StoreError

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

KINDS = ("bench", "eval", "compare")
DEVICE_SCHEMAS = {"edgeq-device/bench/1": "bench", "edgeq-device/eval/1": "eval"}
_BUSY_TIMEOUT_S = 60.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

BytesOrPath = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


# --------------------------------------------------------------------------- helpers


def default_db_path() -> Path:
    """``$EDGEQ_DB`` if set, else ``~/.edgeq/results.db``."""
    env = os.environ.get("EDGEQ_DB")
    return Path(env).expanduser() if env else Path("~/.edgeq/results.db").expanduser()


def file_sha256(path_or_bytes: BytesOrPath) -> str:
    """The sha256 (hex) of a file's bytes, or of the bytes given.

    Raises:
        ModelFileError: the path does not exist or cannot be read.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(path_or_bytes)).hexdigest()
    p = Path(path_or_bytes)
    h = hashlib.sha256()
    try:
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise ModelFileError(f"cannot read the file: {exc.strerror or exc}", argument="path",
                             received=str(p), fix="give the path of an existing .tflite file") from exc
    return h.hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalize_time(value: Any, argument: str = "created") -> str:
    """Any ISO 8601 string, datetime or epoch seconds -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        dt = datetime.fromtimestamp(float(value), timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidArgumentError("not an ISO 8601 time", argument=argument, received=value,
                                       fix="give e.g. '2025-01-31T12:00:00Z'") from None
    else:
        raise InvalidArgumentError("not a time", argument=argument, received=value,
                                   fix="give an ISO 8601 string such as '2025-01-31T12:00:00Z'")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (Path, datetime)):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default, allow_nan=True)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One recorded run: a model in one mode on one device with one runtime and thread count.

    Required: ``model_sha256`` (64 hex digits), ``mode``, ``device``, ``runtime``, ``kind``
    (``"bench"``, ``"eval"`` or ``"compare"``). Every figure is optional (None when the run
    did not measure it). ``created`` defaults to now and is normalized to ISO UTC.
    Accuracies and agreement are fractions in [0, 1]; latencies are microseconds.
    ``id`` is the row number once stored (None before).

    Raises:
        InvalidArgumentError: a field has a value the store cannot keep.
    """

    model_sha256: str
    model_name: str | None = None
    mode: str
    device: str
    runtime: str
    runtime_version: str | None = None
    threads: int | None = None
    kind: str
    created: str = field(default_factory=_now_iso)
    size_bytes: int | None = None
    latency_p50_us: float | None = None
    latency_p90_us: float | None = None
    latency_mean_us: float | None = None
    accuracy_top1: float | None = None
    accuracy_top5: float | None = None
    agreement: float | None = None
    sqnr_db: float | None = None
    source: str = "host"
    payload: dict[str, Any] = field(default_factory=dict)
    id: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        sha = str(self.model_sha256).lower()
        if not _SHA_RE.match(sha):
            raise InvalidArgumentError("must be the 64-hex-digit sha256 of the .tflite bytes",
                                       argument="model_sha256", received=self.model_sha256,
                                       fix="compute it with edgeq.store.file_sha256(path)")
        object.__setattr__(self, "model_sha256", sha)
        for name in ("mode", "device", "runtime", "source"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidArgumentError("must be a non-empty string", argument=name, received=value,
                                           fix=f"give the run's {name}")
        if self.kind not in KINDS:
            raise InvalidArgumentError("unknown kind of run", argument="kind", received=self.kind,
                                       fix=f"use one of: {', '.join(KINDS)}")
        if self.threads is not None:
            if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
                raise InvalidArgumentError("must be a positive integer or None", argument="threads",
                                           received=self.threads, fix="give e.g. 1 or 4")
        if self.size_bytes is not None and (not isinstance(self.size_bytes, int) or self.size_bytes < 0):
            raise InvalidArgumentError("must be a non-negative integer or None", argument="size_bytes",
                                       received=self.size_bytes, fix="give the .tflite size in bytes")
        for name in ("latency_p50_us", "latency_p90_us", "latency_mean_us", "sqnr_db",
                     "accuracy_top1", "accuracy_top5", "agreement"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                if isinstance(value, (bool, str)):
                    raise TypeError(name)
                value = float(value)
            except (TypeError, ValueError):
                raise InvalidArgumentError("must be a number or None", argument=name, received=value,
                                           fix="give a float") from None
            object.__setattr__(self, name, value)
            if name.startswith("latency") and value < 0:
                raise InvalidArgumentError("a latency cannot be negative", argument=name, received=value,
                                           fix="give microseconds")
            if name in ("accuracy_top1", "accuracy_top5", "agreement") and not 0.0 <= value <= 1.0:
                raise InvalidArgumentError("must be a fraction in [0, 1]", argument=name, received=value,
                                           fix="divide a percentage by 100")
        object.__setattr__(self, "created", _normalize_time(self.created))
        if not isinstance(self.payload, Mapping):
            raise InvalidArgumentError("must be a dict", argument="payload", received=type(self.payload).__name__,
                                       fix="give the run's full result as a JSON-able dict")

    @property
    def label(self) -> str:
        """The model's name if known, else the first 12 digits of its hash."""
        return self.model_name or self.model_sha256[:12]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return json.loads(_dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class Regression:
    """A figure that got worse between two consecutive runs with the same key.

    ``metric`` is ``"latency_p50_us"`` (``change``: relative increase, 0.25 = 25 % slower) or
    ``"accuracy_top1"`` (``change``: difference in percentage points, negative when worse).
    ``previous`` and ``current`` are in the metric's own unit (microseconds, fraction).
    """

    model: str
    mode: str
    device: str
    threads: int | None
    metric: str
    previous: float
    current: float
    change: float
    created_previous: str
    created_current: str
    runtime: str = ""
    model_sha256: str = ""

    def describe(self) -> str:
        """One human sentence, e.g. ``mnist int8 on host (litert, 1 thread): p50 latency +25.0% ...``."""
        threads = "default threads" if self.threads is None else f"{self.threads} thread{'s' * (self.threads != 1)}"
        where = f"{self.model} {self.mode} on {self.device} ({self.runtime}, {threads})"
        if self.metric == "latency_p50_us":
            return (f"{where}: p50 latency {self.change * 100:+.1f}% "
                    f"({self.previous / 1000:.3f} ms -> {self.current / 1000:.3f} ms)")
        return (f"{where}: top-1 accuracy {self.change:+.2f} points "
                f"({self.previous * 100:.2f}% -> {self.current * 100:.2f}%)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- schema

_COLUMNS = ("model_sha256", "model_name", "mode", "device", "runtime", "runtime_version", "threads", "kind",
            "created", "size_bytes", "latency_p50_us", "latency_p90_us", "latency_mean_us", "accuracy_top1",
            "accuracy_top5", "agreement", "sqnr_db", "source", "payload")


def _fingerprint(values: Mapping[str, Any]) -> str:
    """What makes two rows the same run: everything but the row number."""
    return hashlib.sha256(_dumps({k: values[k] for k in _COLUMNS}).encode()).hexdigest()


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


#: Schema migrations in order; ``MIGRATIONS[i]`` takes a version-``i`` file to version ``i + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_1, _migrate_2]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- device JSON


def _get(d: Any, *paths: str) -> Any:
    """The first non-None value among dotted ``paths`` in nested dicts."""
    for path in paths:
        cur = d
        for part in path.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            else:
                cur = None
                break
        if cur is not None:
            return cur
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    f = _num(value)
    return None if f is None or f != int(f) else int(f)


def _fraction(value: Any) -> float | None:
    """An accuracy given as a fraction or as a percentage (> 1) -> a fraction."""
    f = _num(value)
    if f is None:
        return None
    return f / 100.0 if f > 1.0 else f


def _latency_us(payload: Mapping[str, Any], stat: str) -> float | None:
    """A latency statistic in microseconds from the places a bench JSON may hold it."""
    us = _get(payload, f"latency_us.{stat}", f"latency.{stat}_us", f"latency_us_{stat}",
              f"stats.latency_us.{stat}", f"timing.{stat}_us", f"latency.us.{stat}")
    if us is not None:
        return _num(us)
    ms = _get(payload, f"latency_ms.{stat}", f"latency.{stat}_ms")
    return None if _num(ms) is None else _num(ms) * 1000.0  # type: ignore[operator]


def _device_from_sysinfo(sysinfo: Any) -> str | None:
    """A device name from ``edgeq_device.sysinfo.BoardInfo``'s JSON (as ``BoardInfo.name`` does)."""
    if not isinstance(sysinfo, Mapping):
        return None
    for key in ("label", "device_model", "board", "name", "hostname"):
        value = sysinfo.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    cpu = sysinfo.get("cpu_model")
    arch = sysinfo.get("architecture") or sysinfo.get("machine")
    if cpu or arch:
        return f"{cpu or 'unknown CPU'} ({arch or 'unknown'})"
    return None


def _mode_from_model(path: Path) -> str | None:
    """The quantization mode in a ``.tflite``'s edgeq metadata, or None."""
    from edgeq_device.metadata import read_metadata

    try:
        meta = read_metadata(path)
    except ModelFileError:  # a model we cannot read just has no known mode
        return None
    return None if meta is None else meta.mode


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = sorted(str(k) for k in obj)
        shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"a JSON object with keys [{shown}] and schema {obj.get('schema')!r}"
    return f"a JSON {type(obj).__name__}"


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
        values = {k: getattr(m, k) for k in _COLUMNS}
        fp = _fingerprint(values)
        values["payload"] = _dumps(m.payload)
        cols = ", ".join((*_COLUMNS, "fingerprint"))
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))

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
        """Turn an ``edgeq-device`` bench/eval result into a :class:`Measurement` (not stored).

        ``origin`` names where the payload came from in error messages (e.g. a file path).

        Raises:
            DataError: the payload is not edgeq-device JSON, or lacks the model's hash and a
                readable model path to compute it from.
        """
        if not isinstance(payload, Mapping):
            raise DataError("not edgeq-device JSON: expected an object with a 'schema' key",
                            argument=origin, received=_describe(payload),
                            fix="give a file written by edgeq-device bench --json or eval --json")
        schema = payload.get("schema")
        kind = DEVICE_SCHEMAS.get(schema) if isinstance(schema, str) else None
        if kind is None and isinstance(schema, str) and schema.startswith("edgeq-device/"):
            parts = schema.split("/")
            if len(parts) == 3 and parts[1] in ("bench", "eval"):
                raise DataError(f"edgeq-device JSON of an unknown version {schema!r}", argument=origin,
                                received=schema, fix="upgrade edgeq to read it")
        if kind is None:
            raise DataError("not edgeq-device JSON (no 'schema': 'edgeq-device/bench/1' or "
                            "'edgeq-device/eval/1')", argument=origin, received=_describe(payload),
                            fix="give a file written by edgeq-device bench --json or eval --json")
        model = payload.get("model")
        model_path = model if isinstance(model, str) else _get(payload, "model.path", "model_path")
        sha = _get(payload, "model.sha256", "model_sha256", "sha256")
        # The model file, when it is on this machine: it gives the hash, mode and size a payload lacks.
        local = Path(str(model_path)) if model_path and Path(str(model_path)).is_file() else None
        local_sha = None if local is None else file_sha256(local)
        if not sha:
            sha = local_sha
        if not isinstance(sha, str) or not _SHA_RE.match(sha.lower()):
            raise DataError("the result does not name the model's sha256 and its model file is not here",
                            argument=origin, received=sha or model_path,
                            fix="record it with an edgeq-device that writes model.sha256, or run the "
                                "import where the model file is")
        if model_name is None:
            name = _get(payload, "model.name", "model_name")
            if name is None and model_path:
                name = Path(str(model_path)).stem
            model_name = None if name is None else str(name)
        runtime = payload.get("runtime")
        rt_name = runtime if isinstance(runtime, str) else _get(payload, "runtime.name", "runtime_name")
        rt_version = _get(payload, "runtime.version", "runtime_version")
        delegate = _get(payload, "delegate", "runtime.delegate", "params.delegate", "config.delegate")
        rt = str(rt_name or "unknown")
        if delegate and str(delegate).lower() not in ("none", "cpu", "false"):
            rt = f"{rt}+{Path(str(delegate)).name if '/' in str(delegate) else delegate}"
        sysinfo = _get(payload, "board", "sysinfo", "system", "device_info")
        label = device or _get(payload, "device", "label") or _device_from_sysinfo(sysinfo) or "unknown"
        mode = _get(payload, "mode", "model.mode", "metadata.mode", "model.metadata.mode")
        same_file = local is not None and local_sha == sha.lower()
        if mode is None and same_file:
            mode = _mode_from_model(local)  # type: ignore[arg-type]
        created = _get(payload, "created", "timestamp", "time", "started", "finished") or _now_iso()
        threads = _int(_get(payload, "threads", "params.threads", "config.threads", "runtime.threads"))
        size = _int(_get(payload, "model.size_bytes", "model.size", "size_bytes", "model_size_bytes"))
        if size is None and same_file:
            size = local.stat().st_size  # type: ignore[union-attr]
        return Measurement(
            model_sha256=sha.lower(),
            model_name=model_name,
            mode=str(mode or "unknown"),
            device=str(label),
            runtime=rt,
            runtime_version=None if rt_version is None else str(rt_version),
            threads=threads if threads and threads > 0 else None,
            kind=kind,
            created=created,
            size_bytes=size,
            latency_p50_us=_latency_us(payload, "p50") if kind == "bench" else None,
            latency_p90_us=_latency_us(payload, "p90") if kind == "bench" else None,
            latency_mean_us=_latency_us(payload, "mean") if kind == "bench" else None,
            accuracy_top1=_fraction(_get(payload, "accuracy.top1", "top1", "accuracy_top1")),
            accuracy_top5=_fraction(_get(payload, "accuracy.top5", "top5", "accuracy_top5")),
            agreement=_fraction(_get(payload, "agreement", "accuracy.agreement")),
            sqnr_db=_num(_get(payload, "sqnr_db", "accuracy.sqnr_db")),
            source=source,
            payload=dict(payload),
        )

    def add_device_result(self, payload: dict[str, Any], *, device: str | None = None, source: str = "device",
                          model_name: str | None = None) -> int:
        """Record the result of ``edgeq-device bench`` or ``eval`` (the dict its ``--json`` writes).

        Args:
            payload: the parsed JSON (``"schema": "edgeq-device/bench/1"`` or ``".../eval/1"``).
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
        p = Path(path)
        fix = "give a JSON file written by edgeq-device bench --json or eval --json"
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError("no such file", argument=str(p), fix=fix) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read the file: {exc}", argument=str(p), fix=fix) from exc
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON ({exc.msg} at line {exc.lineno})", argument=str(p),
                            received=text[:40], fix=fix) from exc
        return ResultsStore.measurement_from_device(payload, device=device, source="device",
                                                    model_name=model_name, origin=str(p))

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
        cols = ", ".join(("id", *_COLUMNS))
        try:
            rows = self._conn.execute(f"SELECT {cols} FROM measurements{sql}", args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the results: {exc}", argument="db", received=str(self.path),
                             fix="check the file is an edgeq results store") from exc
        out = []
        for row in rows:
            values = dict(zip(_COLUMNS, row[1:]))
            try:
                values["payload"] = json.loads(values["payload"])
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
             latency_threshold: float = 0.10, accuracy_threshold: float = 0.5) -> list[Regression]:
        """Regressions of each key's latest run against the run before it.

        A key is model hash + mode + device + runtime + threads. For each key, the newest run
        that measured p50 latency is compared with the one before it, and likewise for top-1
        accuracy.

        Args:
            latency_threshold: flag p50 latency up by more than this fraction (0.10 = 10 %).
            accuracy_threshold: flag top-1 accuracy down by more than this many percentage points.

        Returns:
            The regressions found (empty when none).
        """
        for name, value in (("latency_threshold", latency_threshold), ("accuracy_threshold", accuracy_threshold)):
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
