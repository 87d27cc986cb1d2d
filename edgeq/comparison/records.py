"""The records of a comparison: one row per model variant, the recommendation, and the whole result.

:class:`Comparison` is what :func:`edgeq.compare` returns and what ``results.json`` holds
(:data:`COMPARE_SCHEMA`): ``to_dict()`` writes it, ``from_dict()`` reads it back (without the
model bytes or the timed runs), and every report renders from that dict (:mod:`edgeq.report`),
so a report rebuilt from a ``results.json`` is the report first written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq_device.model.info import format_bytes

from edgeq._version import __version__
from edgeq.errors import DataError, InvalidArgumentError
from edgeq.quantize.result import ConversionResult
from edgeq.report.files import write_report
from edgeq.report.html import html_fragment
from edgeq.report.plots import plot_pngs
from edgeq.report.tables import FittedTable, p50_text, plain_text, rich_table
from edgeq.store.db import ResultsStore

__all__ = ["COMPARE_SCHEMA", "KERAS", "Comparison", "ModeRow", "Recommendation"]

#: The ``schema`` of ``results.json`` that this version writes and reads.
COMPARE_SCHEMA = "edgeq/compare/3"
#: Older ``results.json`` schemas :meth:`Comparison.from_dict` reads (version 1: no ``profile`` and no
#: ``board_profiles``; version 2: no ``task``, ``task_details``, nor the rows' task metrics and
#: per-output fidelity).
_OLD_COMPARE_SCHEMAS = ("edgeq/compare/1", "edgeq/compare/2")

#: The name of the reference row (the Keras model).
KERAS = "keras"
#: How the task figures read in text.
_METRIC_NAMES = {"map": "mAP", "map50": "mAP@.5", "miou": "mIoU", "pixel_accuracy": "pixel acc"}


@dataclass(frozen=True)
class ModeRow:
    """The figures of one model variant (the Keras model or one converted mode)."""

    name: str
    mode: str
    io: str
    size_bytes: int | None
    size_ratio: float | None
    top1: float | None
    top5: float | None
    top1_change_points: float | None
    agreement: float | None
    sqnr_db: float | None
    max_abs_error: float | None
    cosine: float | None
    latency_us: dict[int, dict[str, float]]
    latency_samples_us: dict[int, list[float]] = field(repr=False, default_factory=dict)
    conversion_seconds: float | None = None
    macs: int | None = None
    params: int | None = None
    peak_activation_bytes: int | None = None
    model_sha256: str | None = None
    path: str | None = None
    float_ops: tuple[str, ...] = ()
    task_metrics: dict[str, float] = field(default_factory=dict)
    """The task's figures (fractions): ``map``/``map50`` (detection) or ``miou``/``pixel_accuracy``
    (segmentation); empty for classification."""
    task_change_points: float | None = None
    """The task's first figure (mAP@[.5:.95] or mIoU) minus the Keras model's, in points."""
    outputs_fidelity: tuple[dict[str, Any], ...] = ()
    """Per output, against the Keras model's reference outputs: ``name``, ``sqnr_db``, ``cosine``,
    ``max_abs_error``, ``argmax_agreement`` (None for outputs that are not vectors)."""
    compressed_size_bytes: int | None = None
    """The file gzip-compressed at level 9 (None in results written before it was measured)."""
    mcu: dict[str, Any] | None = None
    """With ``target="mcu"``: TFLM support, arena and flash bytes, board fit (:func:`edgeq.targets.mcu.check.mcu_cell`)."""

    def p50(self, threads: int) -> float | None:
        """Median latency in microseconds at ``threads`` threads (None if not measured)."""
        return self.latency_us.get(threads, {}).get("p50_us")

    def p50_interval(self, threads: int) -> tuple[float, float] | None:
        """The 95% interval of the median latency in microseconds at ``threads`` (None if not measured).

        Rows read from an older ``results.json`` without an interval give ``(p50, p50)``.
        """
        lat = self.latency_us.get(threads, {})
        p50 = lat.get("p50_us")
        if p50 is None:
            return None
        return float(lat.get("p50_lo_us", p50)), float(lat.get("p50_hi_us", p50))

    def macs_per_second(self, threads: int) -> float | None:
        """Achieved multiply-accumulates per second at the median latency."""
        p50 = self.p50(threads)
        return None if not self.macs or not p50 else self.macs / (p50 * 1e-6)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (latency keys as strings; without the timed runs)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "latency_samples_us"}
        d["latency_us"] = {str(t): v for t, v in self.latency_us.items()}
        d["float_ops"] = list(self.float_ops)
        d["outputs_fidelity"] = [dict(o) for o in self.outputs_fidelity]
        d["macs_per_second"] = {str(t): self.macs_per_second(t) for t in self.latency_us}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModeRow:
        """Rebuild from :meth:`to_dict`'s dict (keys it does not know, such as ``macs_per_second``, are skipped)."""
        known = set(cls.__dataclass_fields__) - {"latency_samples_us"}
        kw = {k: v for k, v in data.items() if k in known}
        kw["latency_us"] = {int(t): dict(v) for t, v in data["latency_us"].items()}
        kw["float_ops"] = tuple(data.get("float_ops") or ())
        kw["task_metrics"] = dict(data.get("task_metrics") or {})
        kw["outputs_fidelity"] = tuple(dict(o) for o in data.get("outputs_fidelity") or ())
        return cls(**kw)

    def __str__(self) -> str:
        parts = [f"{self.name} ({self.mode}, {self.io} I/O)"]
        if self.size_bytes is not None:
            parts.append(format_bytes(self.size_bytes))
        if self.compressed_size_bytes is not None:
            parts.append(f"{format_bytes(self.compressed_size_bytes)} gzip -9")
        if self.top1 is not None:
            parts.append(f"top-1 {self.top1 * 100:.2f}%"
                         + ("" if self.top1_change_points is None else f" ({self.top1_change_points:+.2f} points)"))
        for k, v in self.task_metrics.items():
            parts.append(f"{_METRIC_NAMES.get(k, k)} {v * 100:.2f}")
        if self.task_metrics and self.task_change_points is not None:
            parts[-len(self.task_metrics)] += f" ({self.task_change_points:+.2f} points)"
        if self.agreement is not None:
            parts.append(f"agreement {self.agreement * 100:.2f}%")
        if self.sqnr_db is not None:
            parts.append(f"SQNR {self.sqnr_db:.1f} dB")
        for t in sorted(self.latency_us):
            parts.append(f"p50 {p50_text(self.latency_us[t])} at {t} thread{'s' if t > 1 else ''}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Recommendation:
    """The mode to ship and why, in one sentence."""

    mode: str | None
    reason: str
    budget_points: float
    prefer: str
    ties: tuple[str, ...] = ()
    """The modes that tied with ``mode`` (its own name included); empty when nothing tied."""
    latency_tie: float | None = None
    """The share by which a p50 had to be faster to count as faster (None where not known)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``recommendation`` entry of ``results.json``)."""
        return {"mode": self.mode, "reason": self.reason, "budget_points": self.budget_points,
                "prefer": self.prefer, "ties": list(self.ties), "latency_tie": self.latency_tie}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recommendation:
        """Rebuild from :meth:`to_dict`'s dict."""
        return cls(data["mode"], data["reason"], data["budget_points"], data["prefer"],
                   tuple(data.get("ties") or ()), data.get("latency_tie"))

    def __str__(self) -> str:
        return f"{self.mode or 'none'}: {self.reason}"


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`edgeq.compare`: rows, recommendation, notes and where it ran.

    ``save(folder)`` writes ``results.json``, ``report.md``, ``report.html`` and the plots;
    in Jupyter the object displays as a table with its plots; ``print()`` shows the table.
    ``rows[0]`` is the Keras model.
    """

    model_name: str
    rows: tuple[ModeRow, ...]
    recommendation: Recommendation
    threads: tuple[int, ...]
    evaluation: str
    eval_images: int
    labeled: bool
    notes: tuple[str, ...]
    board: dict[str, Any]
    created: str
    results: dict[str, ConversionResult] = field(repr=False, compare=False, default_factory=dict)
    """The converted models by mode (not in ``results.json``)."""
    boards: tuple[dict[str, Any], ...] = ()
    """What boards measured for the same models (see :meth:`with_board_results`)."""
    board_profiles: tuple[dict[str, Any], ...] = ()
    """The boards' per-operator profiles of the same models: ``board``, ``mode``, ``runtime``,
    ``threads``, ``measured`` and ``profile`` (the ``edgeq-device/profile`` document)."""
    profile: dict[str, Any] | None = None
    """The modes' per-operator profiles on this host (``compare(..., profile=True)``): an
    ``edgeq/profile-comparison`` document (:class:`~edgeq.measure.profile.ProfileComparison`), or None."""
    task: str = "classification"
    """What the accuracy figures measure: ``classification`` (top-1/top-5), ``detection`` (COCO mAP)
    or ``segmentation`` (mIoU)."""
    task_details: dict[str, Any] | None = None
    """What the task's plots draw, by row name: ``curves`` (precision at 101 recall points at IoU .5,
    detection) and ``per_class`` (AP or IoU by class name)."""
    files: dict[str, bytes] = field(repr=False, compare=False, default_factory=dict)
    """Files written beside ``results.json`` by :meth:`save` (not in it): ``inputs.npz`` and
    ``reference.npz``, the evaluation inputs and the Keras model's outputs on them."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """Rebuild from ``results.json`` (without the model bytes or the latency samples); version 1 reads too.

        Raises:
            DataError: ``data`` is not an edgeq compare results file, or lacks a field.
        """
        if not isinstance(data, Mapping) or data.get("schema") not in (COMPARE_SCHEMA, *_OLD_COMPARE_SCHEMAS):
            raise DataError("not an edgeq compare results file", argument="results",
                            received=data.get("schema") if isinstance(data, Mapping) else type(data).__name__,
                            fix="give the results.json that edgeq compare wrote")
        try:
            return cls(model_name=data["model"], rows=tuple(ModeRow.from_dict(r) for r in data["rows"]),
                       recommendation=Recommendation.from_dict(data["recommendation"]),
                       threads=tuple(data["threads"]), evaluation=data["evaluation"],
                       eval_images=data["eval_images"], labeled=data["labeled"], notes=tuple(data["notes"]),
                       board=dict(data["board"]), created=data["created"],
                       boards=tuple(data.get("boards") or ()),
                       board_profiles=tuple(data.get("board_profiles") or ()),
                       profile=data.get("profile") or None, task=data.get("task") or "classification",
                       task_details=data.get("task_details") or None)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DataError("the compare results file lacks a field or has one of the wrong type",
                            argument="results", received=repr(exc),
                            fix="give the results.json that edgeq compare wrote, unedited") from exc

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content: what every report renders from."""
        return {
            "schema": COMPARE_SCHEMA,
            "model": self.model_name,
            "created": self.created,
            "edgeq_version": __version__,
            "evaluation": self.evaluation,
            "eval_images": self.eval_images,
            "labeled": self.labeled,
            "threads": list(self.threads),
            "board": self.board,
            "recommendation": self.recommendation.to_dict(),
            "notes": list(self.notes),
            "rows": [r.to_dict() for r in self.rows],
            "boards": list(self.boards),
            "board_profiles": list(self.board_profiles),
            "profile": self.profile,
            "task": self.task,
            "task_details": self.task_details,
        }

    def row(self, name: str) -> ModeRow:
        """The row of ``name`` (``"keras"`` or a mode).

        Raises:
            InvalidArgumentError: no row has that name.
        """
        for r in self.rows:
            if r.name == name:
                return r
        raise InvalidArgumentError("no such row", argument="name", received=name,
                                   fix=f"use one of: {', '.join(r.name for r in self.rows)}")

    def with_board_results(self, store: ResultsStore | str | os.PathLike[str] | None) -> Comparison:
        """This comparison with what boards measured for these very models (same sha256) in the results store.

        Keeps the newest bench and eval per board, mode, runtime and thread count; ``boards``
        of the copy holds them (the report's "On boards" table, with each board's inventory groups
        where the deploy stored them). The newest profile per board,
        mode, runtime and thread count goes to ``board_profiles`` (the report's per-operator
        sections). ``store``: a
        :class:`~edgeq.store.db.ResultsStore`, a path, or None for the default store.

        Raises:
            StoreError: the store does not exist or cannot be read.
        """
        st = store if isinstance(store, ResultsStore) else ResultsStore(store, create=False)
        benches: dict[tuple[str, str, str, Any], dict[str, Any]] = {}
        evals: dict[tuple[str, str, str], dict[str, Any]] = {}
        profiles: dict[tuple[str, str, str, Any], dict[str, Any]] = {}
        for row in self.rows[1:]:
            if not row.model_sha256:
                continue
            for m in st.runs(model=row.model_sha256):  # newest first
                if m.device == "host":
                    continue
                base = {"board": m.device, "mode": row.name, "runtime": m.runtime,
                        "runtime_version": m.runtime_version, "groups": list(m.groups)}
                if m.kind == "bench":
                    benches.setdefault((m.device, row.name, m.runtime, m.threads), dict(
                        base, threads=m.threads, p50_us=m.latency_p50_us, p90_us=m.latency_p90_us,
                        measured=m.created))
                elif m.kind == "profile":
                    profiles.setdefault((m.device, row.name, m.runtime, m.threads), dict(
                        base, threads=m.threads, measured=m.created, profile=m.payload))
                elif m.kind == "eval":
                    evals.setdefault((m.device, row.name, m.runtime), {
                        "top1": m.accuracy_top1, "top5": m.accuracy_top5, "evaluated": m.created, **base})
        rows: list[dict[str, Any]] = []
        for (device, mode, runtime, _), entry in benches.items():
            ev: dict[str, Any] = evals.get((device, mode, runtime), {})
            rows.append({**entry, **{k: ev[k] for k in ("top1", "top5", "evaluated") if k in ev}})
        with_bench = {(e["board"], e["mode"], e["runtime"]) for e in rows}
        rows += [dict(e, threads=None) for k, e in evals.items() if k not in with_bench]
        def order(e: Mapping[str, Any]) -> tuple[str, str, str]:
            return e["board"], e["mode"], str(e["threads"])

        return dataclasses.replace(self, boards=tuple(sorted(rows, key=order)),
                                   board_profiles=tuple(sorted(profiles.values(), key=order)))

    def latency_samples(self) -> dict[str, Sequence[float]]:
        """Every timed run (µs) of each mode at the first thread count, by mode (empty after ``from_dict``)."""
        t = self.threads[0] if self.threads else None
        return {r.name: r.latency_samples_us[t] for r in self.rows[1:] if t in r.latency_samples_us}

    def table(self) -> FittedTable:
        """The rows as a rich renderable that fits the width it is printed at (``report.tables.rich_table``)."""
        return rich_table(self.to_dict())

    def save(self, folder: str | os.PathLike[str], overwrite: bool = False, plots: bool = True) -> dict[str, Path]:
        """Write the report files (and each .tflite) into ``folder``; returns what was written.

        Raises:
            OutputExistsError: a report file exists and ``overwrite`` is False (nothing is written then).
            OutputError: ``folder`` cannot be written (a file on the way, no permission, read-only).
        """
        return write_report(self.to_dict(), folder, overwrite=overwrite, plots=plots,
                            models={r.default_filename: r.model_bytes for r in self.results.values()},
                            samples=self.latency_samples(), extra=self.files)

    def __str__(self) -> str:
        return plain_text(self.to_dict())

    def __rich__(self) -> FittedTable:
        return self.table()

    def _repr_html_(self) -> str:
        data = self.to_dict()
        return html_fragment(data, plot_pngs(data, self.latency_samples()))
