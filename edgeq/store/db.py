"""The results store: every measurement edgeq makes, kept in one SQLite file or a PostgreSQL database.

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

The store speaks to its database through one data-access layer (:mod:`edgeq.store.backend`):
a SQLite file (WAL mode, a busy timeout), or a ``postgresql://`` URL, a server a team and its CI
share (:mod:`edgeq.store.postgres`). Every write is one transaction, so several processes (and
hosts) can record at once. The schema is versioned (SQLite: ``PRAGMA user_version``): opening a
database written by an older edgeq upgrades it in place (:data:`MIGRATIONS`, the same for both);
one from a newer edgeq is refused with a :class:`~edgeq.errors.StoreError`. Deploy runs and the
state each board ended in are kept beside the measurements (:class:`~edgeq.store.runs.DeployRunsMixin`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeq_device.errors import InvalidArgumentError
from edgeq_device.results.report_json import loads_json

from edgeq.errors import StoreError
from edgeq.store.backend import BUSY_TIMEOUT_S, db_errors, is_server_url
from edgeq.store.connect import open_backend
from edgeq.store.device_json import DEVICE_RESULTS, measurement_from_device, read_device_json
from edgeq.store.migrations import COLUMNS, MIGRATIONS, SCHEMA_VERSION, TASK_COLUMNS, fingerprint
from edgeq.store.records import KINDS, Measurement, Regression, canonical_json, file_sha256, task_regressions
from edgeq.store.runs import DeployRunsMixin
from edgeq.store.sqlite_backend import SQLiteBackend

__all__ = [
    "DEVICE_SCHEMAS",
    "KINDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Measurement",
    "Regression",
    "ResultsStore",
    "default_db_path",
    "default_db_target",
    "file_sha256",
]

def _groups(text: Any) -> tuple[str, ...]:
    """A row's ``groups_json`` as a tuple of names (an unreadable value reads as no groups)."""
    try:
        value = loads_json(text)
    except (TypeError, ValueError):
        return ()
    return tuple(g for g in value if isinstance(g, str) and g.strip()) if isinstance(value, list) else ()


#: The device JSON schemas the store records, and the kind of run each is.
DEVICE_SCHEMAS = {cls.schema(): kind if kind in KINDS else "eval" for kind, cls in DEVICE_RESULTS.items()}


def default_db_path() -> Path:
    """``$EDGEQ_DB`` if set (and a file path), else ``~/.edgeq/results.db``."""
    env = os.environ.get("EDGEQ_DB")
    return Path(env).expanduser() if env and not is_server_url(env) else Path("~/.edgeq/results.db").expanduser()


def default_db_target() -> str:
    """``$EDGEQ_DB`` (a file path or a ``postgresql://`` URL) if set, else ``~/.edgeq/results.db``."""
    env = os.environ.get("EDGEQ_DB")
    return env if env and is_server_url(env) else str(default_db_path())


# --------------------------------------------------------------------------- the store

_COLUMNS, _TASK_COLUMNS, _fingerprint = COLUMNS, TASK_COLUMNS, fingerprint  # the names older code imports


class ResultsStore(DeployRunsMixin):
    """Every measurement, in one SQLite file or a PostgreSQL database (see the module docs).

    Args:
        path: the database file, or a ``postgresql://USER@HOST:PORT/DBNAME`` URL (a server the team
            shares; ``pip install 'edgeq[postgres]'``); None means ``$EDGEQ_DB`` or
            ``~/.edgeq/results.db``. A file's folder is created if needed.
        create: False refuses to create a missing file (raises StoreError), for commands
            that only read.

    Raises:
        StoreError: the database cannot be opened, created or reached, is not an edgeq results
            store, or was written by a newer edgeq.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        target = path if path is not None else default_db_target()
        self.path: Path | str = str(target) if is_server_url(target) else Path(target).expanduser()
        self._db = open_backend(target, create=create)
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    # -- connection, schema

    def _retry(self, fn: Callable[[], Any]) -> Any:
        return self._db.retry(fn) if isinstance(self._db, SQLiteBackend) else fn()

    def _setup(self) -> None:
        try:
            self._retry(self._migrate)
        except StoreError:
            raise
        except db_errors() as exc:
            msg = str(exc).lower()
            if "locked" in msg or "busy" in msg:
                raise StoreError(f"the database stayed locked by another process for {BUSY_TIMEOUT_S:g} s",
                                 argument="db", received=self.location,
                                 fix="wait for the other edgeq process to finish, then retry") from exc
            raise StoreError(f"not an edgeq results database, or not writable ({exc})", argument="db",
                             received=self.location,
                             fix="give another path, or move this file away to start a new store") from exc

    def _migrate(self) -> None:
        if self._db.schema_version() == SCHEMA_VERSION:
            return
        with self._db.transaction() as db:
            db.lock_schema()
            version = db.schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the results store has schema version {version}, written by a newer edgeq "
                    f"(this edgeq reads up to version {SCHEMA_VERSION})", argument="db",
                    received=self.location, fix="upgrade edgeq (pip install -U edgeq)")
            if version == 0:
                tables = db.tables()
                if tables:
                    raise StoreError(f"the database holds other tables ({', '.join(tables[:5])}) and is "
                                     "not an edgeq results store", argument="db", received=self.location,
                                     fix="give another path for the results store")
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
                db.set_schema_version(step + 1)

    @property
    def schema_version(self) -> int:
        """The database's schema version (SQLite: ``PRAGMA user_version``)."""
        return self._db.schema_version()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({self.location!r})"

    # -- writing

    def record(self, m: Measurement, *, run_id: str | None = None) -> tuple[int, bool]:
        """Store ``m``; return (row id, True if it is new, False if the same run was already stored).

        ``run_id``: the deploy run that measured it (see :meth:`start_deploy_run`).
        """
        if not isinstance(m, Measurement):
            raise InvalidArgumentError("must be an edgeq.store.Measurement", argument="m",
                                       received=type(m).__name__, fix="build one with Measurement(...)")
        values = {k: getattr(m, k) for k in (*_COLUMNS, *_TASK_COLUMNS)}
        fp = _fingerprint(values)
        values["payload"] = canonical_json(m.payload)
        values["compressed_size_bytes"] = m.compressed_size_bytes  # not fingerprinted
        values["run_id"] = run_id  # not fingerprinted: which deploy run stored it
        values["groups_json"] = canonical_json(list(m.groups))  # not fingerprinted: where the board sits
        cols = ", ".join((*values, "fingerprint"))
        marks = ", ".join("?" for _ in range(len(values) + 1))

        def write() -> tuple[int, bool]:
            with self._db.transaction() as db:
                rows = db.execute("SELECT id FROM measurements WHERE fingerprint = ?", (fp,))
                if rows:
                    return int(rows[0][0]), False
                # ON CONFLICT: another process may record the same run between the SELECT and here
                new = db.insert(f"INSERT INTO measurements ({cols}) VALUES ({marks}) ON CONFLICT (fingerprint) "
                                "DO NOTHING", [*values.values(), fp])
                if new is not None:
                    return new, True
                return int(db.execute("SELECT id FROM measurements WHERE fingerprint = ?", (fp,))[0][0]), False

        try:
            return self._retry(write)  # type: ignore[no-any-return]
        except db_errors() as exc:
            raise StoreError(f"cannot write the measurement: {exc}", argument="db", received=self.location,
                             fix="check the database is writable and the disk not full") from exc

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
                          model_name: str | None = None, run_id: str | None = None,
                          groups: Sequence[str] = ()) -> int:
        """Record the result of ``edgeq-device bench``, ``eval`` or ``profile`` (the dict its ``--json`` writes).

        Args:
            payload: the parsed JSON (``"schema": "edgeq-device/bench/1"``, ``".../eval/1"`` or
                ``".../profile/1"``).
            device: the board's label; None takes a name from the payload's sysinfo.
            source: where it came from (``"device"``, ``"deploy"``, ...).
            model_name: a name for the model; None takes it from the payload (model path's stem).
            run_id: the deploy run that measured it.
            groups: the board's inventory groups, kept on the row (``edgeq history --group``).

        Returns:
            The row id.

        Raises:
            DataError: the payload is not edgeq-device JSON or does not identify the model.
        """
        m = self.measurement_from_device(payload, device=device, source=source, model_name=model_name)
        return self.record(dataclasses.replace(m, groups=tuple(groups)), run_id=run_id)[0]

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

    def _where(self, model: str | None, device: str | None, mode: str | None,
               group: str | None = None) -> tuple[str, list[Any]]:
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
        if group is not None and (not isinstance(group, str) or not group.strip()):
            raise InvalidArgumentError("must be the name of an inventory group", argument="group",
                                       received=group, fix="give e.g. 'kitchen' (see edgeq history --deploy RUN_ID)")
        if group:  # a first cut in SQL (the group's JSON string); _select keeps the exact matches
            clauses.append("groups_json LIKE ? ESCAPE '!'")
            args.append("%" + re.sub(r"([!%_])", r"!\1", canonical_json(group)) + "%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _select(self, sql: str, args: list[Any], group: str | None = None) -> list[Measurement]:
        cols = ", ".join(("id", *_COLUMNS, *_TASK_COLUMNS, "compressed_size_bytes", "groups_json"))
        try:
            rows = self._db.execute(f"SELECT {cols} FROM measurements{sql}", args)
        except db_errors() as exc:
            raise StoreError(f"cannot read the results: {exc}", argument="db", received=self.location,
                             fix="check the database is an edgeq results store") from exc
        out = []
        for row in rows:
            values = dict(zip((*_COLUMNS, *_TASK_COLUMNS, "compressed_size_bytes"), row[1:-1]))
            try:
                values["payload"] = loads_json(values["payload"])
            except (TypeError, ValueError):
                values["payload"] = {"unreadable": values["payload"]}
            groups = _groups(row[-1])
            if group is None or group in groups:
                out.append(Measurement(id=row[0], groups=groups, **values))
        return out

    def runs(self, *, model: str | None = None, device: str | None = None, mode: str | None = None,
             limit: int | None = None, group: str | None = None) -> list[Measurement]:
        """Recorded runs, newest first.

        Args:
            model: a model name, or a prefix (6+ hex digits) of its sha256.
            device: a device label (``"host"``, a board label).
            mode: a quantization mode (``"int8"``, ...).
            limit: at most this many runs.
            group: only runs of boards in this inventory group (as ``edgeq deploy --inventory`` stored them).
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidArgumentError("must be a positive integer", argument="limit", received=limit,
                                       fix="give e.g. 20")
        where, args = self._where(model, device, mode, group)
        sql = where + " ORDER BY created DESC, id DESC"
        if limit is not None and not group:
            sql += " LIMIT ?"
            args.append(limit)
        return self._select(sql, args, group)[:limit]

    def diff(self, *, model: str | None = None, device: str | None = None, mode: str | None = None,
             group: str | None = None, latency_threshold: float = 0.10, accuracy_threshold: float = 0.5,
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
            group: only runs of boards in this inventory group.

        Returns:
            The regressions found (empty when none).
        """
        for name, value in (("latency_threshold", latency_threshold), ("accuracy_threshold", accuracy_threshold),
                            ("sqnr_threshold", sqnr_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError("must be a non-negative number", argument=name, received=value,
                                           fix="give e.g. 0.10 for latency, 0.5 points for accuracy")
        where, args = self._where(model, device, mode, group)
        groups: dict[tuple[Any, ...], list[Measurement]] = {}
        for m in self._select(where + " ORDER BY created ASC, id ASC", args, group):
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
        return int(self._db.execute("SELECT COUNT(*) FROM measurements")[0][0])
