"""The records the results store keeps: :class:`Measurement` (one run) and :class:`Regression`.

Both are versioned results (``"schema": "edgeq/measurement/1"``,
``"edgeq/regression/1"``) with ``to_dict()``/``from_dict()`` and strict JSON,
like ``edgeq_device``'s results (see :mod:`edgeq_device.results.report_json`);
``from_dict`` also reads the JSON of edgeq versions that wrote no ``schema``
key. A run's model is named by ``model_sha256``, the sha256 of the ``.tflite``
bytes, as in every edgeq result.

Units: latencies in microseconds; accuracies and agreement as fractions in
[0, 1]; SQNR in dB; sizes in bytes; times as ISO 8601 UTC
(``2025-01-31T12:00:00.000000Z``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from edgeq_device.errors import InvalidArgumentError, ModelFileError
from edgeq_device.results.report_json import JsonResult, dumps_json, to_plain
from edgeq_device.results.result_view import plain_text

__all__ = [
    "KINDS",
    "TASK_METRICS",
    "Measurement",
    "Regression",
    "canonical_json",
    "file_sha256",
    "normalize_time",
    "now_iso",
    "task_regressions",
]

#: The kinds of run a measurement records.
KINDS = ("bench", "eval", "compare", "profile")
#: The tasks whose figures a measurement keeps in ``task_metric`` and ``task_metric2``, with their names.
TASK_METRICS: dict[str, tuple[str, str]] = {"detection": ("mAP", "mAP@.5"), "segmentation": ("mIoU", "pixel acc"),
                                            "fidelity": ("", "")}
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

BytesOrPath = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


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


def now_iso() -> str:
    """This moment as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_time(value: Any, argument: str = "created") -> str:
    """Any ISO 8601 string, datetime or epoch seconds -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC).

    Raises:
        InvalidArgumentError: ``value`` is not a time.
    """
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
    """What the store writes for an object JSON has no form for: datetimes as text, else its repr."""
    if isinstance(obj, datetime):
        return str(obj)
    return repr(obj)


def canonical_json(obj: Any) -> str:
    """The store's one JSON text of a value: strict, keys sorted (what fingerprints hash)."""
    return dumps_json(obj, sort_keys=True, default=_json_default)



@dataclass(frozen=True, kw_only=True)
class Measurement(JsonResult):
    """One recorded run: a model in one mode on one device with one runtime and thread count.

    Required: ``model_sha256`` (64 hex digits), ``mode``, ``device``, ``runtime``, ``kind``
    (``"bench"``, ``"eval"``, ``"compare"`` or ``"profile"``, whose latency is the whole model's
    p50). Every figure is optional (None when the run did not measure it). ``created`` defaults to now and is normalized to ISO UTC.
    Accuracies and agreement are fractions in [0, 1]; latencies are microseconds. ``task`` says
    what ``task_metric`` and ``task_metric2`` are (fractions): ``detection`` mAP@[.5:.95] and mAP@.5,
    ``segmentation`` mIoU and pixel accuracy (None for classification, whose figures are the top-k).
    ``sqnr_db`` is the output SQNR against the float Keras model (the lowest over the outputs).
    ``groups``: the inventory groups of the board that measured it (empty when not from an inventory).
    ``id`` is the row number once stored (None before).

    Raises:
        InvalidArgumentError: a field has a value the store cannot keep.
    """

    PREFIX = "edgeq"
    KIND = "measurement"

    model_sha256: str
    model_name: str | None = None
    mode: str
    device: str
    runtime: str
    runtime_version: str | None = None
    threads: int | None = None
    kind: str
    created: str = field(default_factory=now_iso)
    size_bytes: int | None = None
    compressed_size_bytes: int | None = None
    """The file gzip-compressed at level 9: what an over-the-air update downloads."""
    latency_p50_us: float | None = None
    latency_p90_us: float | None = None
    latency_mean_us: float | None = None
    accuracy_top1: float | None = None
    accuracy_top5: float | None = None
    agreement: float | None = None
    sqnr_db: float | None = None
    task: str | None = None
    task_metric: float | None = None
    task_metric2: float | None = None
    source: str = "host"
    payload: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    """The inventory groups of the board that measured it (``edgeq deploy --inventory``); empty otherwise."""
    id: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        sha = str(self.model_sha256).lower()
        if not SHA256_RE.match(sha):
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
        for name in ("size_bytes", "compressed_size_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidArgumentError("must be a non-negative integer or None", argument=name, received=value,
                                           fix="give the .tflite size in bytes (gzip -9 for compressed_size_bytes)")
        if self.task is not None and self.task not in TASK_METRICS:
            raise InvalidArgumentError("unknown task", argument="task", received=self.task,
                                       fix=f"use one of: {', '.join(TASK_METRICS)}, or None")
        for name in ("latency_p50_us", "latency_p90_us", "latency_mean_us", "sqnr_db",
                     "accuracy_top1", "accuracy_top5", "agreement", "task_metric", "task_metric2"):
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
            if name in ("accuracy_top1", "accuracy_top5", "agreement", "task_metric", "task_metric2") \
                    and not 0.0 <= value <= 1.0:
                raise InvalidArgumentError("must be a fraction in [0, 1]", argument=name, received=value,
                                           fix="divide a percentage by 100")
        object.__setattr__(self, "created", normalize_time(self.created))
        groups = self.groups
        if isinstance(groups, str) or not isinstance(groups, (list, tuple)) \
                or not all(isinstance(g, str) and g.strip() for g in groups):
            raise InvalidArgumentError("must be a list of non-empty group names", argument="groups",
                                       received=groups, fix="give e.g. ('kitchen', 'pi4'), or () for none")
        object.__setattr__(self, "groups", tuple(groups))
        if not isinstance(self.payload, Mapping):
            raise InvalidArgumentError("must be a dict", argument="payload", received=type(self.payload).__name__,
                                       fix="give the run's full result as a JSON-able dict")

    @property
    def label(self) -> str:
        """The model's name if known, else the first 12 digits of its hash."""
        return self.model_name or self.model_sha256[:12]

    def __str__(self) -> str:
        """The run's fields, one a line; the payload only as its number of keys."""
        body = {k: v for k, v in to_plain(self).items() if k != "payload"}
        body["payload"] = f"{len(self.payload)} keys"
        return plain_text(self.schema(), body)


@dataclass(frozen=True)
class Regression(JsonResult):
    """A figure that got worse between two consecutive runs with the same key.

    ``metric`` is ``"latency_p50_us"`` (``change``: relative increase, 0.25 = 25 % slower),
    ``"accuracy_top1"``, ``"map"`` or ``"miou"`` (a task's figure; ``change``: difference in
    percentage points, negative when worse) or ``"sqnr_db"`` (output SQNR against the float
    model; ``change`` in dB, negative when worse).
    ``previous`` and ``current`` are in the metric's own unit (microseconds, fraction).
    """

    PREFIX = "edgeq"
    KIND = "regression"

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
        if self.metric == "sqnr_db":
            return f"{where}: output SQNR {self.change:+.1f} dB ({self.previous:.1f} dB -> {self.current:.1f} dB)"
        if self.metric in ("map", "miou"):
            name = "mAP@[.5:.95]" if self.metric == "map" else "mIoU"
            return (f"{where}: {name} {self.change:+.2f} points "
                    f"({self.previous * 100:.2f} -> {self.current * 100:.2f})")
        return (f"{where}: top-1 accuracy {self.change:+.2f} points "
                f"({self.previous * 100:.2f}% -> {self.current * 100:.2f}%)")


def _between(prev: Measurement, cur: Measurement, metric: str, p: float, c: float, change: float) -> Regression:
    return Regression(model=cur.label, mode=cur.mode, device=cur.device, threads=cur.threads, metric=metric,
                      previous=p, current=c, change=change, created_previous=prev.created,
                      created_current=cur.created, runtime=cur.runtime, model_sha256=cur.model_sha256)


def task_regressions(runs: list[Measurement], points: float, sqnr_db: float) -> list[Regression]:
    """Of one key's runs (oldest first): the task figure (mAP or mIoU) of the latest run down by more than
    ``points`` against the run before that measured it, and its output SQNR down by more than ``sqnr_db``."""
    found: list[Regression] = []
    for task, metric in (("detection", "map"), ("segmentation", "miou")):
        scored = [r for r in runs if r.task == task and r.task_metric is not None]
        if len(scored) >= 2:
            prev, cur = scored[-2], scored[-1]
            p, c = float(prev.task_metric), float(cur.task_metric)  # type: ignore[arg-type]
            if (p - c) * 100.0 > points:
                found.append(_between(prev, cur, metric, p, c, (c - p) * 100.0))
    faithful = [r for r in runs if r.sqnr_db is not None]
    if len(faithful) >= 2:
        prev, cur = faithful[-2], faithful[-1]
        p, c = float(prev.sqnr_db), float(cur.sqnr_db)  # type: ignore[arg-type]
        if p - c > sqnr_db:
            found.append(_between(prev, cur, "sqnr_db", p, c, c - p))
    return found
