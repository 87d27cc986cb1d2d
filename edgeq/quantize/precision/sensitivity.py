"""Which layers to give 16-bit activations, chosen by what promoting them does to the model's output.

The per-layer debugger (:mod:`edgeq.quantize.layer_error`) ranks layers by their own
error, each fed the float model's inputs. In a residual network the int8 error is spread
over many layers and accumulates through the additions; promoting the layers with the
worst isolated error then changes nothing (measured on a ResNet-8: 1 to 8 such layers gave
-0.5 to +0.1 dB while all layers at 16 bits gave +9 dB). Here each candidate is promoted
alone and the model's output SQNR against float32 measured on a few dozen calibration
samples (one quantization and one pass per candidate, the ranges calibrated once); then
the promoted set grows greedily in that order, measured at every step, a candidate that
lowers the SQNR by more than :data:`TOLERANCE_DB` left out. Promotions interact (an int8/int16
boundary re-quantizes), so the search also goes down from all layers at 16 bits: each group
demoted alone, then demoted in that order while the SQNR stays within the tolerance of
all-16-bit's. The path reported is, for each number of groups, the best set measured, kept
where it beats every smaller set: the SQNR never falls along it.

A candidate is one computing op, or an ADD / CONCATENATION with the ops writing its inputs
(followed back through ops that only move values): the branches and the op joining them
share the joined tensor's scale, so they go to 16 bits together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.run.runtime import ModelRunner

from edgeq.errors import CalibrationError, EdgeqError, InvalidArgumentError, QuantizationError
from edgeq.quantize.calibration import warn_at_caller
from edgeq.quantize.conversion import convert_mode
from edgeq.quantize.layer_error import QuantDebugSession
from edgeq.quantize.modes import IOType, Mode, enum_arg
from edgeq.quantize.precision.mixed import (
    A16_OPS,
    PASS_THROUGH_OPS,
    MixedPlan,
    calibrated_ranges,
    converter_ranges,
    mixed_result,
    plan_a16,
    quantize_mixed,
    quantize_runnable,
    resolve_nodes,
)
from edgeq.quantize.result import ConversionResult

__all__ = ["TOLERANCE_DB", "A16Search", "A16Step", "candidate_groups", "convert_a16", "search_a16"]

TOLERANCE_DB = 0.2
"""A step of the greedy search may lower the output SQNR by at most this much below the best so far."""

_JOINING = frozenset({"ADD", "CONCATENATION", "SUB", "MUL"})
_SKIP = frozenset({"QUANTIZE", "DEQUANTIZE", "SHAPE"})


def candidate_groups(model_bytes: bytes) -> list[tuple[str, ...]]:
    """The float ``.tflite``'s candidates for 16 bits: groups of op output names, in model order.

    Every op with a 16-bit kernel that computes (not one that only moves values) is a
    candidate; an op joining branches (ADD, CONCATENATION, SUB, MUL of two activations) is
    grouped with the computing ops writing its inputs.
    """
    sg = read_flat_model(model_bytes).main
    ops = [(sg.tensors[op.outputs[0]].name, op.opcode, [i for i in op.inputs if i >= 0])
           for op in sg.operators if op.outputs and op.outputs[0] >= 0 and op.opcode not in _SKIP]
    writer = {}
    for op in sg.operators:
        for i in op.outputs:
            if i >= 0 and op.outputs[0] >= 0:
                writer[i] = (sg.tensors[op.outputs[0]].name, op.opcode, [j for j in op.inputs if j >= 0])
    parent = {n: n for n, op, _ in ops if op in A16_OPS and op not in PASS_THROUGH_OPS}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def computing_writer(tensor: int) -> str | None:
        seen = 0
        while tensor in writer and seen < 64:
            name, op, ins = writer[tensor]
            if name in parent:
                return name
            if op not in PASS_THROUGH_OPS or not ins:
                return None
            tensor, seen = ins[0], seen + 1
        return None

    for name, kind, ins in ops:
        if kind in _JOINING and name in parent and len(ins) > 1 and all(i in writer for i in ins):
            for i in ins:
                src = computing_writer(i)
                if src is not None:
                    parent[find(src)] = find(name)
    groups: dict[str, list[str]] = {}
    for name, _, _ in ops:
        if name in parent:
            groups.setdefault(find(name), []).append(name)
    order = [n for n, _, _ in ops]
    return sorted((tuple(g) for g in groups.values()), key=lambda g: order.index(g[0]))


def _sqnr(reference: np.ndarray, outputs: np.ndarray) -> float:
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((outputs.astype(np.float64) - reference) ** 2))
    if noise <= 0:
        return 120.0
    return min(120.0, 10 * math.log10(signal / noise)) if signal > 0 else -120.0


def _outputs(model_bytes: bytes, items: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    runner = ModelRunner(model_bytes)
    return np.concatenate([np.asarray(runner.run([np.asarray(v) for v in item.values()])[0]).reshape(1, -1)
                           for item in items])


@dataclass(frozen=True)
class A16Step:
    """One measured promoted set: its groups (by first op name), the ops at 16 bits, and the SQNR."""

    groups: tuple[str, ...]
    a16_nodes: tuple[str, ...]
    sqnr_db: float


@dataclass(frozen=True)
class A16Search:
    """What promoting layers to 16-bit activations did, measured on calibration samples.

    Attributes:
        int8_db: output SQNR of the plain int8 model (no group promoted).
        all_db: output SQNR with every candidate promoted (as int16x8 would).
        single: ``(group, SQNR with that group alone promoted)``, best first.
        steps: the path: for each number of groups the best set measured, where it beats every
            smaller set (so the SQNR never falls along it); it starts at int8 (no group).
        samples: samples measured on; seconds: time taken; groups: candidate groups;
        plans: each step's plan; tried: sets measured.
    """

    int8_db: float
    all_db: float
    single: tuple[tuple[tuple[str, ...], float], ...]
    steps: tuple[A16Step, ...]
    samples: int
    seconds: float
    groups: int = 0
    plans: dict[tuple[str, ...], MixedPlan] = field(default_factory=dict, repr=False, compare=False)
    tried: int = 0

    @property
    def path(self) -> tuple[A16Step, ...]:
        """The accepted steps, in order (each adds one group)."""
        return self.steps

    def best_within(self, groups: int) -> A16Step | None:
        """The best step with 1 to ``groups`` groups, if it beats int8 (None: none does)."""
        fit = [s for s in self.steps if 0 < len(s.groups) <= groups and s.sqnr_db > self.int8_db]
        return max(fit, key=lambda s: s.sqnr_db) if fit else None

    def smallest_recovering(self, fraction: float = 0.5) -> A16Step | None:
        """The first accepted step recovering ``fraction`` of the all-16-bit gain over int8 (None: no gain)."""
        gain = self.all_db - self.int8_db
        if gain <= 0:
            return None
        return next((s for s in self.path if s.sqnr_db - self.int8_db >= fraction * gain), None)

    @property
    def spread(self) -> bool:
        """True when half the gain needs more than half the groups: only all-16-bit (or float) helps."""
        step = self.smallest_recovering(0.5)
        return step is None or len(step.groups) > max(1, self.groups // 2)

    def verdict(self) -> str:
        """One line saying where promotion pays, or that the error is spread."""
        gain = self.all_db - self.int8_db
        if gain <= TOLERANCE_DB:
            return (f"16-bit activations do not help: int8 {self.int8_db:.1f} dB, all 16-bit "
                    f"{self.all_db:.1f} dB on {self.samples} calibration samples")
        step = self.smallest_recovering(0.5)
        if step is None or self.spread:
            return (f"the int8 error is spread over the model: half of all-16-bit's gain ({self.int8_db:.1f} -> "
                    f"{self.all_db:.1f} dB) needs more than half of its {self.groups} layer groups; "
                    "only int16x8 (or float) helps")
        names = ", ".join(g.split(";")[0] for g in step.groups)
        return (f"{len(step.groups)} of {self.groups} layer group(s) at 16 bits give {step.sqnr_db:.1f} dB "
                f"(int8 {self.int8_db:.1f}, all 16-bit {self.all_db:.1f}): {names}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"int8_db": self.int8_db, "all_db": self.all_db, "samples": self.samples, "seconds": self.seconds,
                "groups": self.groups, "verdict": self.verdict(),
                "single": [{"group": list(g), "sqnr_db": db} for g, db in self.single],
                "tried": self.tried,
                "steps": [{"groups": list(s.groups), "sqnr_db": s.sqnr_db} for s in self.steps]}

    def __str__(self) -> str:
        lines = [self.verdict(), f"  groups  SQNR dB   ({self.tried} sets measured on {self.samples} samples, "
                                 f"{self.seconds:.0f} s)"]
        lines += [f"  {len(s.groups):6d}  {s.sqnr_db:7.2f}" for s in self.steps]
        return "\n".join(lines)


def search_a16(float_model: bytes, items: Sequence[dict[str, np.ndarray]], *, io_: IOType = IOType.FLOAT,
               ranges: Mapping[str, tuple[float, float]] | None = None, measure_samples: int = 32,
               max_groups: int | None = None, progress: Callable[[str], None] | None = None) -> A16Search:
    """Rank 16-bit candidates by their effect on the output, then grow the promoted set greedily.

    Args:
        float_model: edgeq's float32 ``.tflite`` of the model.
        items: the calibration samples (dicts keyed by input name); all calibrate the ranges
            (once), the first ``measure_samples`` are measured on.
        ranges: tensor ranges replacing litert-quantizer's min/max (:func:`~edgeq.quantize.precision.mixed.converter_ranges`).
        max_groups: at most this many groups will be used (default: all): the forward path stops
            there, and with fewer than half of the groups the backward one (from all 16-bit) is skipped.
        progress: called with one line per measured candidate.

    Raises:
        InvalidArgumentError: no calibration sample; QuantizationError: the int8 model cannot be made.
    """
    if not items:
        raise InvalidArgumentError("no calibration sample", argument="calibration", received=0,
                                   fix="give calibration data with at least one sample")
    start = time.perf_counter()
    qsvs = calibrated_ranges(float_model, items, io_, ranges)
    probe = list(items[:max(1, measure_samples)])
    reference = _outputs(float_model, probe)
    plans: dict[tuple[str, ...], MixedPlan] = {}

    def measure(nodes: Sequence[str]) -> float | None:
        plan = plan_a16(float_model, nodes)
        try:
            raw, plan = quantize_runnable(float_model, items, plan, io_, ranges, qsvs=qsvs)
        except EdgeqError:
            return None
        plans[tuple(nodes)] = plan
        q = _outputs(raw, probe)
        if io_ is IOType.INT8:  # compare in float: the output's own scale
            q = q.astype(np.float64)
        return _sqnr(reference, q)

    raw8, _ = quantize_mixed(float_model, items, MixedPlan((), ()), io_, ranges, qsvs)
    int8_db = _sqnr(reference, _outputs(raw8, probe))
    groups = candidate_groups(float_model)
    all_nodes = [n for g in groups for n in g]
    all_db = measure(all_nodes) if all_nodes else int8_db
    measured: dict[frozenset[str], float] = {}  # group firsts -> SQNR
    by_first = {g[0]: g for g in groups}

    def measure_set(firsts: Sequence[str]) -> float | None:
        key = frozenset(firsts)
        if key not in measured:
            db = measure([n for f in firsts for n in by_first[f]])
            measured[key] = db if db is not None else float("nan")
        return None if math.isnan(measured[key]) else measured[key]

    measured[frozenset()] = int8_db
    firsts = [g[0] for g in groups]
    if all_db is not None:
        measured[frozenset(firsts)] = all_db
    single: list[tuple[tuple[str, ...], float]] = []
    without: list[tuple[str, float]] = []
    # Sets near all-16-bit only matter when that many groups may be chosen.
    backward = len(firsts) > 1 and (max_groups is None or max_groups >= len(firsts) // 2)
    for i, first in enumerate(firsts, 1):
        db = measure_set([first])
        rest = measure_set([f for f in firsts if f != first]) if backward else None
        if progress:
            progress(f"16-bit candidate {i}/{len(groups)} {first.split(';')[0]}: alone "
                     + ("does not run" if db is None else f"{db:.2f} dB") + ", all but it "
                     + ("-" if rest is None else f"{rest:.2f} dB"))
        if db is not None:
            single.append((by_first[first], db))
        if rest is not None:
            without.append((first, rest))
    single.sort(key=lambda gd: -gd[1])
    # Forward: promote in order of the effect alone, leaving out a group that lowers the SQNR.
    chosen: list[str] = []
    best = int8_db
    for tries, (group, _) in enumerate(single):
        if max_groups is not None and (len(chosen) >= max_groups or tries >= 2 * max_groups + 4):
            break
        db = measure_set([*chosen, group[0]])
        if db is not None and db >= best - TOLERANCE_DB:
            chosen.append(group[0])
            best = max(best, db)
    # Backward: from all at 16 bits, demote first the groups whose demotion alone costs least.
    # A group stays demoted while the SQNR stays within TOLERANCE_DB of all-16-bit's; each
    # kept set measured is a point of the path.
    kept = list(firsts)
    floor = (all_db if all_db is not None else int8_db) - TOLERANCE_DB
    for first, _ in sorted(without, key=lambda fd: -fd[1]):
        trial = [f for f in kept if f != first]
        db = measure_set(trial) if trial else int8_db
        if db is not None and db >= floor:
            kept = trial
    # The path: for each number of groups the best set measured, kept where it beats every smaller one.
    best_of: dict[int, tuple[float, frozenset[str]]] = {}
    for key, db in measured.items():
        if not math.isnan(db) and (len(key) not in best_of or db > best_of[len(key)][0]):
            best_of[len(key)] = (db, key)
    steps: list[A16Step] = []
    top = -math.inf
    for size in sorted(best_of):
        db, key = best_of[size]
        if db > top:
            order = tuple(f for f in firsts if f in key)
            plan = plans.get(tuple(n for f in order for n in by_first[f]))
            steps.append(A16Step(order, plan.a16_nodes if plan else (), db))
            top = db
            if progress:
                progress(f"16-bit path: {size} group(s) -> {db:.2f} dB")
    return A16Search(int8_db, all_db if all_db is not None else int8_db, tuple(single), tuple(steps), len(probe),
                     time.perf_counter() - start, len(groups),
                     {s.groups: plans.get(tuple(n for f in s.groups for n in by_first[f]), MixedPlan((), ()))
                      for s in steps}, len(measured))


def convert_a16(model: Any, a16_layers: Sequence[str] | int, *, calibration: Any, samples: int = 200,
                seed: int = 0, io: str | IOType = "float", batch_size: int | None = None,
                preprocess: Preprocess | None = None, labels: Sequence[str] | None = None,
                progress: bool | None = None) -> ConversionResult:
    """``model`` in int8 with ``a16_layers`` at 16-bit activations (``edgeq.convert(..., a16_layers=...)``).

    Args:
        a16_layers: Keras layer names or op output names (``LayerError.name``), or a number
            ``k``: the best set of at most ``k`` layer groups found by :func:`search_a16`
            (measured by their effect on the output; the search is kept in ``metadata.extra["a16_search"]``).
        calibration, samples, seed, io, batch_size, preprocess, labels, progress: as for ``convert``.

    Raises:
        InvalidArgumentError: unknown layer names, a bad ``k``, I/O other than float or int8;
        QuantizationError: none of the layers has a 16-bit kernel, no ``k`` groups improve on int8, or
            the model does not run;
        what ``convert`` raises.
    """
    io_ = enum_arg(IOType, io, "io")
    if io_ not in (IOType.FLOAT, IOType.INT8):
        raise InvalidArgumentError("16-bit layers take float or int8 I/O", argument="io", received=io_.value,
                                   fix="use io='float' or io='int8'")
    if isinstance(a16_layers, bool) or (isinstance(a16_layers, int) and a16_layers < 1):
        raise InvalidArgumentError("must be layer names or a positive number of worst layers",
                                   argument="a16_layers", received=a16_layers, fix="give e.g. a16_layers=2")
    if calibration is None:
        raise CalibrationError("16-bit layers need calibration data", argument="calibration", received=None,
                               fix="pass calibration= an image folder, arrays or a tf.data.Dataset (--calib)")
    start = time.perf_counter()
    session = QuantDebugSession(model, calibration, samples=samples, seed=seed, preprocess=preprocess,
                                batch_size=batch_size, progress=progress)
    base = convert_mode(session.loaded, Mode.FLOAT32, calibration=session.source, batch_size=batch_size,
                        preprocess=session.preprocess, labels=labels, progress=progress)
    flat = read_flat_model(base.model_bytes)
    ranges = converter_ranges(session.calibrated_model)
    search: A16Search | None = None
    if isinstance(a16_layers, int):
        search = search_a16(base.model_bytes, session.items, io_=io_, ranges=ranges, max_groups=a16_layers)
        step = search.best_within(a16_layers)
        if step is None:
            raise QuantizationError(
                f"no {a16_layers} layer group(s) at 16 bits improve on int8 here: {search.verdict()}",
                argument="a16_layers", received=a16_layers, fix="convert in int16x8, or keep int8")
        by_first = {g[0]: g for g, _ in search.single}
        nodes = tuple(n for f in step.groups for n in by_first[f])
        names: Sequence[str] = list(dict.fromkeys(session.layer_of(f) if session.layer_of(f) != "-" else f
                                                  for f in step.groups))
    else:
        nodes = resolve_nodes(flat, a16_layers, session.layer_of)
        names = list(a16_layers)
    plan = plan_a16(base.model_bytes, nodes)
    if not plan.a16_nodes:
        raise QuantizationError(
            "no op of these layers can take 16 bits (no 16-bit kernel, or an int8 model output): " + ", ".join(f"{n.split(';')[0]} ({op})"
                                                                     for n, op in plan.kept_int8[:4]),
            argument="a16_layers", received=list(names)[:4], fix="choose other layers, or convert in int16x8")
    qsvs = calibrated_ranges(base.model_bytes, session.items, io_, ranges)
    raw, plan = quantize_runnable(base.model_bytes, session.items, plan, io_, ranges, qsvs=qsvs)
    # Measured against int8 on calibration samples, and said when 16 bits made it worse.
    probe = session.items[:32]
    reference = _outputs(base.model_bytes, probe)
    int8_raw, _ = quantize_mixed(base.model_bytes, session.items, MixedPlan((), ()), io_, ranges, qsvs)
    int8_db, a16_db = _sqnr(reference, _outputs(int8_raw, probe)), _sqnr(reference, _outputs(raw, probe))
    result = mixed_result(base, raw, plan, io_, time.perf_counter() - start, session.samples, names)
    result.metadata.extra["a16_sqnr_db"] = {"int8": int8_db, "a16": a16_db, "samples": len(probe)}
    if search is not None:
        result.metadata.extra["a16_search"] = search.to_dict()
    if a16_db < int8_db - TOLERANCE_DB:
        warn_at_caller(f"16-bit activations on {', '.join(map(str, names))[:120]} make the output worse than "
                       f"int8 on {len(probe)} calibration samples ({a16_db:.1f} vs {int8_db:.1f} dB SQNR): "
                       "give a16_layers a number to choose by effect, or keep int8", UserWarning)
    return result
