"""Compare every mode side by side: which ``.tflite`` should I ship?

:func:`compare` converts a Keras model in every mode, then for the Keras model and
each ``.tflite`` measures, on the same evaluation images:

- file size and its ratio to float32;
- top-1 / top-5 accuracy and the change from the Keras model in points;
- agreement with the Keras model's top-1;
- output fidelity against the Keras model: SQNR (dB), max abs error, cosine;
- host latency p50/p90 for each thread count, through ``edgeq_device``'s harness, the
  modes timed in interleaved rounds, with a 95% bootstrap interval of the p50;
- conversion time, multiply-accumulates and achieved MAC/s.

It then recommends the smallest (or fastest) mode within an accuracy budget and
says why in one sentence. Sizes within 2% are ties, and so are latencies unless one
p50 interval lies wholly below the other and is more than 15% faster (:data:`LATENCY_TIE`); a tie goes to the mode that runs on more targets (:data:`PORTABILITY`:
int8, float32, float16, int16x8, dynamic), and the reason says so. Every
measurement can go to the results store. The
images are preprocessed once by ``edgeq_device`` and run through its one
evaluation loop; the Keras model sees the very same arrays.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeq_device.analysis import analyze_flat_model
from edgeq_device.bench import benchmark, median_interval
from edgeq_device.evaluate import predict_arrays, top_k_hits
from edgeq_device.sysinfo import board_info

from edgeq._version import __version__
from edgeq.errors import DataError, InvalidArgumentError
from edgeq.inputs.data import DataSource, as_source
from edgeq.inputs.models import LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import task_progress
from edgeq.quantize.converter import MODES, ConversionResult, IOType, Mode, _enum_arg, _warnings_once, convert

__all__ = ["LATENCY_TIE", "PORTABILITY", "Comparison", "ModeRow", "Recommendation", "compare", "fidelity",
           "latency_summary", "latency_ties", "round_levels"]

KERAS = "keras"

# Timed runs of every mode are taken in this many rounds, the modes interleaved, so a change
# in the machine's load or clock during the comparison reaches every mode alike and shows in
# the spread of the rounds' medians (the p50's interval) instead of deciding the ranking.
LATENCY_ROUNDS = 30

# Latencies tie unless one p50 interval lies wholly below the other *and* that p50 is faster
# by more than this share. An interval holds the spread within one comparison; separate
# comparisons of the same .tflite files on one machine differ by more (each process gets its
# own memory layout and load): the int8/dynamic p50 ratio of a 10 µs CNN ranged 1.03 to 1.09
# over eight runs whose own intervals were about ±0.3%. A gap inside that is not a ranking.
LATENCY_TIE = 0.15

# When modes tie (sizes within 2%, latencies as above), the one that runs on more targets
# wins: first in this order.
PORTABILITY: tuple[str, ...] = ("int8", "float32", "float16", "int16x8", "dynamic")
_RUNS_ON = {
    "int8": "full-integer int8 runs on the most targets: CPUs, the Edge TPU, microcontrollers "
            "(TFLite Micro) and integer NPUs",
    "float32": "float32 runs on every CPU runtime, the GPU delegate and TFLite Micro",
    "float16": "float16 runs on CPUs (widened to float32 at load) and natively on the GPU delegate",
    "int16x8": "int16x8 runs on CPUs (reference kernels), TFLite Micro and some NPUs",
    "dynamic": "dynamic-range runs on CPU runtimes only (hybrid kernels)",
}


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
        """JSON-ready dict (latency keys as strings)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "latency_samples_us"}
        d["latency_us"] = {str(t): v for t, v in self.latency_us.items()}
        d["float_ops"] = list(self.float_ops)
        d["macs_per_second"] = {str(t): self.macs_per_second(t) for t in self.latency_us}
        return d


@dataclass(frozen=True)
class Recommendation:
    """The mode to ship and why, in one sentence."""

    mode: str | None
    reason: str
    budget_points: float
    prefer: str
    ties: tuple[str, ...] = ()
    """The modes that tied with ``mode`` (its own name included); empty when nothing tied."""


@dataclass
class Comparison:
    """The result of :func:`compare`: rows, recommendation, notes and where it ran.

    ``save(folder)`` writes ``results.json``, ``report.md``, ``report.html`` and the plots;
    in Jupyter the object displays as a table with its plots.
    """

    model_name: str
    rows: list[ModeRow]
    recommendation: Recommendation
    threads: tuple[int, ...]
    evaluation: str
    eval_images: int
    labeled: bool
    notes: list[str]
    board: dict[str, Any]
    created: str
    results: dict[str, ConversionResult] = field(repr=False, default_factory=dict)
    boards: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Rebuild from ``results.json`` (without the model bytes or the latency samples)."""
        if data.get("schema") != "edgeq/compare/1":
            raise DataError("not an edgeq compare results file", argument="results",
                            received=data.get("schema"), fix="give the results.json that edgeq compare wrote")
        known = set(ModeRow.__dataclass_fields__) - {"latency_samples_us"}
        rows = []
        for r in data["rows"]:
            kw = {k: v for k, v in r.items() if k in known}
            kw["latency_us"] = {int(t): v for t, v in r["latency_us"].items()}
            kw["float_ops"] = tuple(r.get("float_ops") or ())
            rows.append(ModeRow(**kw))
        rec = data["recommendation"]
        return cls(model_name=data["model"], rows=rows,
                   recommendation=Recommendation(rec["mode"], rec["reason"], rec["budget_points"], rec["prefer"],
                                                 tuple(rec.get("ties") or ())),
                   threads=tuple(data["threads"]), evaluation=data["evaluation"], eval_images=data["eval_images"],
                   labeled=data["labeled"], notes=list(data["notes"]), board=data["board"],
                   created=data["created"], boards=list(data.get("boards") or []))

    def attach_board_results(self, store: Any) -> int:
        """Add what boards measured for these very models (same sha256) from the results store.

        Keeps the newest bench and eval per board, mode, runtime and thread count. Returns how
        many board rows the report now shows.
        """
        from edgeq.store.db import ResultsStore

        st = store if isinstance(store, ResultsStore) else ResultsStore(store, create=False)
        benches: dict[tuple[str, str, str, Any], dict[str, Any]] = {}
        evals: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in self.rows[1:]:
            if not row.model_sha256:
                continue
            for m in st.runs(model=row.model_sha256):  # newest first
                if m.device == "host":
                    continue
                base = {"board": m.device, "mode": row.name, "runtime": m.runtime,
                        "runtime_version": m.runtime_version}
                if m.kind == "bench":
                    benches.setdefault((m.device, row.name, m.runtime, m.threads), dict(
                        base, threads=m.threads, p50_us=m.latency_p50_us, p90_us=m.latency_p90_us,
                        measured=m.created))
                elif m.kind == "eval":
                    evals.setdefault((m.device, row.name, m.runtime), {
                        "top1": m.accuracy_top1, "top5": m.accuracy_top5, "evaluated": m.created, **base})
        rows: list[dict[str, Any]] = []
        for (device, mode, runtime, _), entry in benches.items():
            ev: dict[str, Any] = evals.get((device, mode, runtime), {})
            rows.append({**entry, **{k: ev[k] for k in ("top1", "top5", "evaluated") if k in ev}})
        with_bench = {(e["board"], e["mode"], e["runtime"]) for e in rows}
        rows += [dict(e, threads=None) for k, e in evals.items() if k not in with_bench]
        self.boards = sorted(rows, key=lambda e: (e["board"], e["mode"], str(e["threads"])))
        return len(self.boards)

    def row(self, name: str) -> ModeRow:
        """The row of ``name`` (``"keras"`` or a mode)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise InvalidArgumentError("no such row", argument="name", received=name,
                                   fix=f"use one of: {', '.join(r.name for r in self.rows)}")

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content."""
        return {
            "schema": "edgeq/compare/1",
            "model": self.model_name,
            "created": self.created,
            "edgeq_version": __version__,
            "evaluation": self.evaluation,
            "eval_images": self.eval_images,
            "labeled": self.labeled,
            "threads": list(self.threads),
            "board": self.board,
            "recommendation": {"mode": self.recommendation.mode, "reason": self.recommendation.reason,
                               "budget_points": self.recommendation.budget_points,
                               "prefer": self.recommendation.prefer,
                               "ties": list(self.recommendation.ties), "latency_tie": LATENCY_TIE},
            "notes": list(self.notes),
            "rows": [r.to_dict() for r in self.rows],
            "boards": list(self.boards),
        }

    def table(self) -> Any:
        """The rows as a rich renderable table that fits the width it is printed at (see ``report.rich_table``)."""
        from edgeq.report.tables import rich_table

        return rich_table(self)

    def save(self, folder: str | os.PathLike[str], overwrite: bool = False, plots: bool = True) -> dict[str, Path]:
        """Write the report files (and each .tflite) into ``folder``; returns what was written.

        Raises:
            OutputExistsError: a report file exists and ``overwrite`` is False (nothing is written then).
            OutputError: ``folder`` cannot be written (a file on the way, no permission, read-only).
        """
        from edgeq.report.tables import write_report

        return write_report(self, Path(folder), overwrite=overwrite, plots=plots)

    def _repr_html_(self) -> str:
        from edgeq.report.tables import html_fragment

        return html_fragment(self)


_SLOW_WHY = {
    "dynamic": "dynamic-range models quantize activations on the fly at every inference, and XNNPACK "
               "runs float32 well.",
    "int16x8": "int16x8 kernels are the reference ones, without XNNPACK or SIMD-optimized paths.",
    "float16": "float16 weights are turned back to float32 at load time; speed should match float32.",
}


def fidelity(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """SQNR (dB), max abs error and mean cosine similarity of ``output`` against ``reference``.

    SQNR = 10 log10(sum(ref^2) / sum((ref - out)^2)); identical outputs give +inf.
    """
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(output, np.float64).reshape(len(output), -1)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    sqnr = float("inf") if noise == 0 else 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(norms > 0, np.sum(ref * out, axis=1) / np.where(norms > 0, norms, 1), 1.0)
    return {"sqnr_db": sqnr, "max_abs_error": float(np.max(np.abs(ref - out))), "cosine": float(np.mean(cos))}


def round_levels(rounds_by_mode: Sequence[Sequence[Sequence[float]]]) -> list[list[float]] | None:
    """How fast the machine was in each round, for each mode, as the other modes saw it.

    ``rounds_by_mode[m][r]`` holds the timed runs (µs) of mode ``m`` in round ``r``; every
    mode was timed in every round. Each mode's round medians are taken relative to that
    mode's median over the rounds; the level of round ``r`` for mode ``m`` is the median of
    those ratios over the *other* modes (so a hiccup that hit one mode alone does not move
    it, and a mode's own timing never sets the level it is measured against). With two
    modes this is the paired comparison: each round's median over the other mode's. None
    for fewer than two modes (nothing to share).
    """
    if len(rounds_by_mode) < 2:
        return None
    meds = np.array([[float(np.median(r)) if len(r) else np.nan for r in rounds] for rounds in rounds_by_mode])
    ratios = meds / np.nanmedian(meds, axis=1, keepdims=True)
    return [[float(v) for v in np.nanmedian(np.delete(ratios, m, axis=0), axis=0)] for m in range(len(meds))]


def latency_summary(rounds_us: Sequence[Sequence[float]], levels: Sequence[float] | None = None,
                    confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Latency figures (µs) of timed runs taken in rounds, and the interval of their p50.

    ``p50_us``, ``p90_us``, ``mean_us`` and ``std_us`` are over every run. Runs that follow
    each other are not independent draws (the machine's load and clock drift over seconds),
    so the interval (``p50_lo_us``, ``p50_hi_us``) comes from the rounds' medians: a seeded
    bootstrap of their median (``resamples`` resamples, central ``confidence`` share; see
    :func:`edgeq_device.bench.median_interval`), its relative spread placed around ``p50_us``
    (and kept within the fastest and slowest run).

    Args:
        rounds_us: the timed runs of each round, in microseconds.
        levels: optional, one per round: how fast the machine was in that round, shared by
            every mode timed in it (:func:`compare` gives this mode's :func:`round_levels`). Each round's
            median is divided by it first, so a change of load that slowed every mode alike
            does not widen the interval; what is left is this mode's own spread, and two
            modes' intervals then overlap only when the rounds do not tell them apart.
        confidence, resamples, seed: of the bootstrap.

    The same runs give the same figures.

    Raises:
        InvalidArgumentError: no round holds a run, or ``levels`` does not match the rounds.
    """
    if levels is not None and (len(levels) != len(rounds_us) or not all(v > 0 for v in levels)):
        raise InvalidArgumentError("need one positive level per round", argument="levels", received=list(levels),
                                   fix=f"give {len(rounds_us)} positive numbers, or None")
    pairs = [(np.asarray(r, np.float64).reshape(-1), 1.0 if levels is None else float(levels[i]))
             for i, r in enumerate(rounds_us) if len(r)]
    if not pairs:
        raise InvalidArgumentError("no timed runs to summarize", argument="rounds_us", received=len(rounds_us),
                                   fix="time at least one run (benchmark(..., keep_samples=True))")
    every = np.concatenate([r for r, _ in pairs])
    p50, p90 = (float(v) for v in np.percentile(every, [50, 90]))
    relative = [float(np.median(r)) / level for r, level in pairs]
    centre = float(np.median(relative))
    lo, hi = median_interval(relative, confidence, resamples, seed)
    return {"p50_us": p50, "p90_us": p90, "mean_us": float(every.mean()), "std_us": float(every.std()),
            "runs": int(every.size), "p50_lo_us": float(np.clip(p50 * lo / centre, every.min(), p50)),
            "p50_hi_us": float(np.clip(p50 * hi / centre, p50, every.max())), "rounds": len(pairs)}


def _top_k(outputs: np.ndarray, labels: np.ndarray | None, k: int) -> float | None:
    if labels is None:
        return None
    return float(np.mean(top_k_hits(outputs, labels, min(k, outputs.shape[1]))))


def _load_eval(source: DataSource, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    xs, ys = [], []
    total = limit if limit is not None else source.known_length()
    with task_progress("reading evaluation data", total) as tick:
        for s in source.samples(limit=limit, seed=seed):
            x = s.inputs
            if isinstance(x, (dict, list)):
                raise InvalidArgumentError("compare takes single-input models", argument="evaluation",
                                           received=type(x).__name__, fix="evaluate multi-input models with evaluate()")
            xs.append(np.asarray(x, np.float32))
            ys.append(s.label)
            tick()
    if not xs:
        raise DataError("the evaluation source gave no sample", argument="evaluation",
                        received=source.description, fix="give a labeled image folder or arrays with labels")
    labels = None if any(y is None for y in ys) else np.asarray(ys, np.int64)
    return np.stack(xs), labels


def _match_labels(given: Sequence[str] | str | os.PathLike[str] | None, calib: DataSource, eval_src: DataSource,
                  y: np.ndarray | None, outputs: int) -> tuple[tuple[str, ...] | None, np.ndarray | None, str]:
    """The model's class names and the evaluation labels renumbered to them, with a note saying how.

    Names: ``given``, else the calibration folder's classes, else the evaluation folder's. The
    evaluation folder's class folders are then the outputs of their names.
    """
    from edgeq_device.evaluate import read_labels
    from edgeq_device.images import describe_classes, list_image_folder

    from edgeq.errors import LabelMismatchError
    from edgeq.inputs.data import ImageFolder, check_label_range, class_labels

    if isinstance(given, (str, os.PathLike)):
        names: tuple[str, ...] | None = read_labels(given)
        where = "labels"
    elif given is not None:
        names, where = tuple(str(n) for n in given), "labels"
    else:
        names, where = class_labels(calib, outputs, "calibration"), "the calibration folder"
        if names is None:
            names, where = class_labels(eval_src, outputs, "evaluation"), "the evaluation folder"
    if names is not None and len(names) != outputs:
        raise LabelMismatchError(f"{len(names)} labels for a model with {outputs} outputs", argument="labels",
                                 received=len(names), fix=f"give exactly {outputs} labels, one per model output")
    if not isinstance(eval_src, ImageFolder) or eval_src.listing.labels is None:
        if y is not None:
            check_label_range(y, outputs, "evaluation", eval_src.description)
        return names, y, ""
    listing = eval_src.listing
    if names is not None:
        with warnings.catch_warnings():  # the empty folders were named when the folder was first listed
            warnings.simplefilter("ignore", UserWarning)
            listing = list_image_folder(listing.root, labels=names, argument="evaluation")
    listing = listing.fit_outputs(outputs, "evaluation")
    if y is not None:
        renumber = np.arange(max(outputs, int(y.max()) + 1))
        new = dict(listing.folders)
        for folder, old in eval_src.listing.folders:
            renumber[old] = new[folder]
        y = renumber[y]
    return names, y, (f"labels from {where}; evaluation folders: "
                      f"{describe_classes(listing.class_order, listing.folders)}")


def _keras_outputs(loaded: LoadedModel, x: np.ndarray, batch: int = 256) -> np.ndarray:
    outs = [loaded.predict([x[i:i + batch]])[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).reshape(len(x), -1).astype(np.float32)


def _recommend(rows: list[ModeRow], budget: float, prefer: str, threads: int, labeled: bool) -> Recommendation:
    keras_row = rows[0]
    candidates = []
    for r in rows[1:]:
        if labeled and r.top1_change_points is not None:
            ok = -r.top1_change_points <= budget
        else:
            ok = r.agreement is not None and (1 - r.agreement) * 100 <= budget
        if ok:
            candidates.append(r)
    metric = "top-1 accuracy" if labeled else "agreement with the Keras model"
    if not candidates:
        worst = min(rows[1:], key=lambda r: r.top1_change_points or 0.0)
        return Recommendation(None, f"No mode stays within the {budget:g}-point budget on {metric}; the closest "
                                    f"is {_closest(rows[1:], labeled)}. Try quantization-aware training "
                                    f"(edgeq qat) or keep sensitive layers in float (--max-drop). "
                                    f"Largest drop: {worst.name}.", budget, prefer)

    def size(r: ModeRow) -> float:
        return float(r.size_bytes or 0)

    def lat(r: ModeRow) -> float:
        return r.p50(threads) or float("inf")

    def rank(r: ModeRow) -> int:
        return PORTABILITY.index(r.name) if r.name in PORTABILITY else len(PORTABILITY)

    # Sizes within 2% are equal; p50s whose intervals overlap are equal (latency_ties). Among
    # equals the next criterion decides, and last the mode that runs on more targets.
    if prefer == "size":
        floor = min(size(r) for r in candidates)
        near = [r for r in candidates if size(r) <= floor * 1.02]
        tied = latency_ties(near, threads)
        best = min(tied, key=lambda r: (rank(r), lat(r), size(r)))
        if len(near) == 1:
            what = "smallest model"
        elif len(tied) == 1:
            what = "fastest of the smallest models (sizes within 2%)"
        else:
            what = "smallest model (sizes within 2%, speed a tie)"
        ties = tied if len(tied) > 1 else []
    else:
        fast = latency_ties(candidates, threads)
        floor = min(size(r) for r in fast)
        tied = [r for r in fast if size(r) <= floor * 1.02]
        best = min(tied, key=lambda r: (rank(r), size(r), lat(r)))
        what = "fastest model" if len(fast) == 1 else (
            "smallest of the fastest models (speed a tie)" if len(tied) == 1
            else "fastest model (speed a tie, sizes within 2%)")
        ties = tied if len(tied) > 1 else []
    f32 = next((r for r in rows if r.name == "float32"), None)
    parts = []
    if f32 and best.size_bytes and f32.size_bytes:
        parts.append(f"{f32.size_bytes / best.size_bytes:.1f}x smaller than float32")
    if best.p50(threads):
        parts.append(f"p50 {_p50_text(best, threads)} at {threads} thread{'s' if threads > 1 else ''}")
    if best.p50(threads) and f32 and f32.p50(threads):
        ratio = f32.p50(threads) / best.p50(threads)  # type: ignore[operator]
        parts.append(f"{ratio:.2f}x the float32 speed")
    if labeled and best.top1 is not None:
        parts.append(f"top-1 {best.top1 * 100:.1f}% ({best.top1_change_points:+.1f} points vs Keras "
                     f"{keras_row.top1 * 100:.1f}%)" if keras_row.top1 is not None else "")
    elif best.agreement is not None:
        parts.append(f"{best.agreement * 100:.1f}% agreement with Keras")
    reason = (f"{best.name} is the {what} within the {budget:g}-point budget on {metric}: "
              + ", ".join(p for p in parts if p) + ".")
    if ties:
        others = ", ".join(f"{r.name} {_p50_text(r, threads)}" for r in sorted(ties, key=rank) if r is not best)
        reason += (f" {others} {'is' if len(ties) == 2 else 'are'} not clearly faster (95% bootstrap "
                   f"intervals of the p50 over the timed runs overlap, or the p50s are within "
                   f"{LATENCY_TIE:.0%}): a tie, so the mode that runs on more targets wins; "
                   f"{_RUNS_ON.get(best.name, best.name + ' runs on this host')}.")
    return Recommendation(best.name, reason, budget, prefer, tuple(r.name for r in sorted(ties, key=rank)))


def latency_ties(rows: Sequence[ModeRow], threads: int) -> list[ModeRow]:
    """The rows that are not clearly slower than another row.

    Row ``r`` is clearly slower than row ``s`` when ``r``'s p50 interval lies wholly above
    ``s``'s *and* ``r``'s p50 exceeds ``s``'s by more than :data:`LATENCY_TIE`. A row without
    a latency counts as infinitely slow; with no latency at all, every row ties.
    """
    inf = float("inf")
    spans = [(r.p50(threads) or inf, *(r.p50_interval(threads) or (inf, inf))) for r in rows]

    def slower(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        return a[1] > b[2] and a[0] > b[0] * (1 + LATENCY_TIE)

    return [r for r, a in zip(rows, spans) if not any(slower(a, b) for b in spans)]


def _nth(levels: list[list[float]] | None, i: int) -> list[float] | None:
    return None if levels is None else levels[i]


def _p50_text(r: ModeRow, threads: int) -> str:
    from edgeq.report.tables import p50_text

    return p50_text(r.latency_us.get(threads, {}))


def _closest(rows: list[ModeRow], labeled: bool) -> str:
    if labeled:
        r = max(rows, key=lambda r: r.top1_change_points if r.top1_change_points is not None else -1e9)
        return f"{r.name} ({r.top1_change_points:+.1f} points)"
    r = max(rows, key=lambda r: r.agreement or 0.0)
    return f"{r.name} ({(r.agreement or 0) * 100:.1f}% agreement)"


@quiet_native_logs()
@_warnings_once
def compare(
    model: Any,
    *,
    calibration: Any,
    evaluation: Any,
    modes: Sequence[str | Mode] | str = "all",
    threads: Sequence[int] | None = None,
    io: str | IOType = "float",
    samples: int = 200,
    eval_samples: int | None = None,
    seed: int = 0,
    budget: float = 1.0,
    prefer: str = "size",
    preprocess: Any = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    runs: int = 50,
    min_secs: float = 0.5,
    max_secs: float = 20.0,
    store: Any = None,
    show_progress: bool | None = None,
) -> Comparison:
    """Convert ``model`` in every mode and measure each against the Keras model.

    Args:
        model: a Keras 3 / tf_keras model, a ``.keras``/``.h5`` file or a SavedModel folder
            (single input).
        calibration: calibration data (as for :func:`edgeq.convert`).
        evaluation: evaluation data: a labeled image folder, ``(x, y)`` arrays, ``.npz``...; without
            labels, accuracy is left out and agreement with the Keras model decides.
        modes: ``"all"`` or a list of modes.
        threads: thread counts to time (default: 1 and all cores).
        io: I/O type of the int8 model (``float``, ``int8``, ``uint8``).
        samples: calibration samples.
        eval_samples: evaluate on a seeded subset of this many (default: all).
        budget: accuracy budget in points of top-1 for the recommendation (default 1).
        prefer: ``"size"`` (smallest within budget) or ``"latency"`` (fastest).
        labels: class names in output order (or a text file, one per line), stored in the models'
            metadata; the evaluation folder's class folders are matched to them by name. Default:
            the calibration folder's classes, else the evaluation folder's (integer folder names
            are their output, other names sorted as Keras does; see :mod:`edgeq_device.images`).
        runs, min_secs, max_secs: latency loop per mode and thread count (see ``edgeq_device.bench``),
            in total over ``LATENCY_ROUNDS`` rounds that interleave the modes.
        store: a :class:`edgeq.store.ResultsStore` or a path to record every measurement in.
        show_progress: progress on stderr.

    Raises:
        InvalidArgumentError, DataError, CalibrationError, ConversionError and the errors of convert.
    """
    if prefer not in ("size", "latency"):
        raise InvalidArgumentError("unknown value", argument="prefer", received=prefer, fix="use 'size' or 'latency'")
    if not isinstance(budget, (int, float)) or budget < 0:
        raise InvalidArgumentError("must be a number of points >= 0", argument="budget", received=budget,
                                   fix="give e.g. 1.0 (one point of top-1 accuracy)")
    if isinstance(modes, str) and modes.lower() != "all":
        modes = [modes]
    mode_list = list(MODES) if isinstance(modes, str) else [
        _enum_arg(Mode, m, "modes", [v.value for v in MODES]) for m in modes]
    if not mode_list:
        raise InvalidArgumentError("no modes to compare", argument="modes", received=modes,
                                   fix="give 'all' or modes such as ['int8', 'float16']")
    cores = os.cpu_count() or 1
    thread_list = tuple(sorted(set(threads))) if threads else tuple(sorted({1, cores}))
    if any((not isinstance(t, int)) or t < 1 for t in thread_list):
        raise InvalidArgumentError("thread counts must be positive integers", argument="threads",
                                   received=threads, fix="give e.g. (1, 4)")
    loaded = load_model(model)
    if len(loaded.inputs) != 1:
        raise InvalidArgumentError("compare takes single-input models", argument="model",
                                   received=[s.name for s in loaded.inputs], fix="use convert() and evaluate() per input")
    from edgeq.quantize.converter import default_preprocess

    pre = preprocess or default_preprocess(loaded.inputs[0])
    eval_src = as_source(evaluation, pre, argument="evaluation")
    x, y = _load_eval(eval_src, eval_samples, seed)
    keras_out = _keras_outputs(loaded, x)
    calib = as_source(calibration, pre)
    names, y, label_note = _match_labels(labels, calib, eval_src, y, keras_out.shape[1])
    keras_pred = keras_out.argmax(axis=1)
    labeled = y is not None
    keras_top1 = _top_k(keras_out, y, 1) if labeled else None
    rows = [ModeRow(
        name=KERAS, mode=KERAS, io="float", size_bytes=None, size_ratio=None, top1=keras_top1,
        top5=_top_k(keras_out, y, 5) if labeled else None, top1_change_points=0.0 if labeled else None,
        agreement=1.0, sqnr_db=None, max_abs_error=0.0, cosine=1.0, latency_us={})]
    results: dict[str, ConversionResult] = {}
    for mode in mode_list:
        res = convert(loaded, mode, calibration=calib if mode.needs_calibration else None, samples=samples,
                      seed=seed, io=io if mode is Mode.INT8 else "float", preprocess=pre,
                      labels=names or (), show_progress=show_progress)
        results[mode.value] = res
    f32_size = results["float32"].size_bytes if "float32" in results else None
    from edgeq.store.db import file_sha256

    round_runs = max(1, -(-runs // LATENCY_ROUNDS))
    measured: dict[str, dict[str, Any]] = {}
    with task_progress("measuring modes", len(results) + LATENCY_ROUNDS * len(thread_list),
                       show_progress) as tick:
        for name, res in results.items():
            out = predict_arrays(res.model_bytes, x, workers=None)
            tick()
            measured[name] = {"out": out, "rounds": {t: [] for t in thread_list}}
        # Latency in rounds, the modes interleaved: see LATENCY_ROUNDS.
        for _ in range(LATENCY_ROUNDS):
            for t in thread_list:
                for name, res in results.items():
                    bench = benchmark(res.model_bytes, runs=round_runs, min_secs=min_secs / LATENCY_ROUNDS,
                                      max_secs=max_secs / LATENCY_ROUNDS, warmup=3, threads=t, keep_samples=True)
                    measured[name]["rounds"][t].append(list(bench.samples_us or ()))
                tick()
        levels = {t: round_levels([measured[name]["rounds"][t] for name in results]) for t in thread_list}
        for i, (name, res) in enumerate(results.items()):
            out = measured[name]["out"]
            fid = fidelity(keras_out, out)
            pred = out.argmax(axis=1)
            top1 = _top_k(out, y, 1) if labeled else None
            lat = {t: latency_summary(measured[name]["rounds"][t], _nth(levels[t], i)) for t in thread_list}
            samples_us = {t: [v for r in measured[name]["rounds"][t] for v in r] for t in thread_list}
            ana = analyze_flat_model(res.model_bytes)
            rows.append(ModeRow(
                name=name, mode=res.mode.value, io=res.io.value, size_bytes=res.size_bytes,
                size_ratio=None if not f32_size else f32_size / res.size_bytes,
                top1=top1, top5=_top_k(out, y, 5) if labeled else None,
                top1_change_points=None if top1 is None or keras_top1 is None else (top1 - keras_top1) * 100,
                agreement=float(np.mean(pred == keras_pred)), sqnr_db=fid["sqnr_db"],
                max_abs_error=fid["max_abs_error"], cosine=fid["cosine"], latency_us=lat,
                latency_samples_us=samples_us, conversion_seconds=res.conversion_seconds,
                macs=ana.total_macs, params=ana.total_params, peak_activation_bytes=ana.peak_activation_bytes,
                model_sha256=file_sha256(res.model_bytes), float_ops=res.float_ops))
    notes = [label_note] if label_note else []
    f32 = next((r for r in rows if r.name == "float32"), None)
    for r in rows[1:]:
        if f32 is None or r is f32:
            continue
        for t in thread_list:
            a, b = r.p50(t), f32.p50(t)
            if a and b and a > b * 1.05:
                notes.append(f"{r.name} is slower than float32 on this CPU at {t} thread{'s' if t > 1 else ''} "
                             f"({a / 1000:.3f} ms vs {b / 1000:.3f} ms p50): quantized is not always faster; "
                             + _SLOW_WHY.get(r.name, "XNNPACK runs float32 well on this CPU."))
    rec = _recommend(rows, float(budget), prefer, thread_list[0], labeled)
    board = board_info()
    comp = Comparison(
        model_name=results[next(iter(results))].source_name if results else loaded.name,
        rows=rows, recommendation=rec, threads=thread_list, evaluation=eval_src.description,
        eval_images=len(x), labeled=labeled, notes=notes, board=board.to_dict(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), results=results)
    if store is not None:
        record(comp, store)
    return comp


def record(comp: Comparison, store: Any) -> int:
    """Write every measurement of ``comp`` to the results store (path or ResultsStore); returns the count."""
    from edgeq.store.db import Measurement, ResultsStore

    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    board = comp.board
    device = "host"
    from edgeq_device.runtime import resolve_runtime

    rt = resolve_runtime()
    n = 0
    for r in comp.rows[1:]:
        for t, lat in r.latency_us.items():
            st.add_measurement(Measurement(
                model_sha256=r.model_sha256 or "", model_name=comp.model_name, mode=r.mode, device=device,
                runtime=rt.name, runtime_version=rt.version, threads=t, kind="compare",
                size_bytes=r.size_bytes, latency_p50_us=lat["p50_us"], latency_p90_us=lat["p90_us"],
                latency_mean_us=lat["mean_us"], accuracy_top1=r.top1, accuracy_top5=r.top5,
                agreement=r.agreement, sqnr_db=r.sqnr_db if r.sqnr_db is not None and np.isfinite(r.sqnr_db) else None,
                source="compare", payload={"row": r.to_dict(), "board": board, "evaluation": comp.evaluation}))
            n += 1
    return n
