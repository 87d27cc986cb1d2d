"""Per-operator profiles of several ``.tflite`` files side by side (``edgeq profile``).

Each model is profiled on this machine by :func:`edgeq_device.measure.profile.profile_model`
(every operator cut into a model of its own and timed, beside the whole model). The
operators of the models are then lined up: the first model is the reference, and each
other model's operators are matched to its operators by type, in order
(:class:`difflib.SequenceMatcher`), so that a float32 ``CONV_2D`` sits beside the int8
``CONV_2D`` it became, while operators only one model has (the int8 model's input
``QUANTIZE``, float16's weight ``DEQUANTIZE``) get rows of their own.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq_device.measure.profile import OpProfile, ProfileParams, ProfileResult, profile_model
from edgeq_device.results.report_json import JsonResult

from edgeq.errors import InvalidArgumentError
from edgeq.targets.edgetpu.rules import predict_edgetpu

__all__ = ["ProfileComparison", "ProfileRow", "compare_profiles", "profile_models"]


@dataclass(frozen=True)
class ProfileRow:
    """One line of the side-by-side table: an operator of each model (None where a model has none)."""

    op: str
    ops: tuple[OpProfile | None, ...]

    def ratio(self, k: int) -> float | None:
        """Model ``k``'s time over the reference's (below 1: faster), where both were timed."""
        ref, other = self.ops[0], self.ops[k]
        if ref is None or other is None or not ref.p50_us or other.p50_us is None:
            return None
        return other.p50_us / ref.p50_us

    @property
    def slowest_us(self) -> float:
        return max((o.p50_us or 0.0 for o in self.ops if o is not None), default=0.0)


@dataclass(frozen=True)
class ProfileComparison(JsonResult):
    """The profiles of several models, with the Edge TPU prediction where one was asked for."""

    PREFIX = "edgeq"
    KIND = "profile-comparison"

    names: tuple[str, ...]
    profiles: tuple[ProfileResult, ...]
    target: str | None = None
    edgetpu_mapped: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.profiles) or not self.profiles:
            raise InvalidArgumentError("give one name per profile, and at least one profile", argument="names",
                                       received=len(self.names), fix=f"give {len(self.profiles)} names")

    def rows(self) -> list[ProfileRow]:
        """The operators lined up across the models (see the module docstring)."""
        ref = self.profiles[0].operators
        matched: list[dict[int, OpProfile]] = [{o.index: o for o in ref}]
        extra: list[dict[int, list[OpProfile]]] = [{}]  # after reference index j (-1: before all)
        for prof in self.profiles[1:]:
            ops = prof.operators
            sm = difflib.SequenceMatcher(None, [o.op for o in ref], [o.op for o in ops], autojunk=False)
            pairs = {b: a for blk in sm.get_matching_blocks() for a, b in
                     zip(range(blk.a, blk.a + blk.size), range(blk.b, blk.b + blk.size))}
            m: dict[int, OpProfile] = {}
            e: dict[int, list[OpProfile]] = {}
            last = -1
            for o in ops:
                if o.index in pairs:
                    last = pairs[o.index]
                    m[last] = o
                else:
                    e.setdefault(last, []).append(o)
            matched.append(m)
            extra.append(e)
        n = len(self.profiles)
        rows: list[ProfileRow] = []

        def add_extras(j: int) -> None:
            for k in range(1, n):
                for o in extra[k].get(j, []):
                    rows.append(ProfileRow(o.op, tuple(o if i == k else None for i in range(n))))

        add_extras(-1)
        for r in ref:
            rows.append(ProfileRow(r.op, tuple(matched[k].get(r.index) for k in range(n))))
            add_extras(r.index)
        return rows

    def on_edgetpu(self, k: int, op: OpProfile) -> bool | None:
        """Whether the Edge TPU prediction maps model ``k``'s operator (None without a target)."""
        if not self.edgetpu_mapped:
            return None
        return op.index in self.edgetpu_mapped[k]

    def __str__(self) -> str:
        lines = [f"profiles of {', '.join(self.names)}"]
        for name, p in zip(self.names, self.profiles):
            whole = f"{p.whole_p50_us:.1f} µs" if p.whole_p50_us is not None else f"not timed ({p.whole_note})"
            lines.append(f"  {name}: {len(p.timed)}/{len(p.operators)} operators, sum {p.sum_us:.1f} µs, "
                         f"whole {whole}")
        return "\n".join(lines)


def compare_profiles(profiles: Sequence[ProfileResult], names: Sequence[str] | None = None,
                     target: str | None = None, models: Sequence[Any] | None = None) -> ProfileComparison:
    """Put profiles side by side; with ``target="edgetpu"`` mark what the prediction maps.

    Args:
        profiles: the profiles; the first is the reference of the ratios.
        names: one name per profile (default: the model files' names).
        target: ``"edgetpu"`` or None.
        models: the models' paths or bytes, for the prediction (default: each profile's ``model``).
    """
    if target not in (None, "edgetpu"):
        raise InvalidArgumentError("unknown target", argument="target", received=target, fix="use edgetpu")
    names = list(names) if names is not None else [Path(p.model).stem if p.model else f"model{i}"
                                                   for i, p in enumerate(profiles)]
    mapped: list[tuple[int, ...]] = []
    if target == "edgetpu":
        sources = list(models) if models is not None else [p.model for p in profiles]
        for src in sources:
            if src is None:
                raise InvalidArgumentError("a profile of model bytes has no file to predict from", argument="models",
                                           fix="give the models' paths or bytes")
            pred = predict_edgetpu(src)
            mapped.append(tuple(p.index for p in pred.ops if p.status == "mapped"))
    return ProfileComparison(names=tuple(names), profiles=tuple(profiles), target=target,
                             edgetpu_mapped=tuple(mapped))


def profile_models(models: Sequence[str | os.PathLike[str]], params: ProfileParams | None = None, *,
                   target: str | None = None, log: Callable[[str], None] | None = None) -> ProfileComparison:
    """Profile each model on this machine (one after another) and put them side by side.

    Raises:
        InvalidArgumentError: no models, or two with the same file name.
        ModelFileError, RuntimeNotFoundError, DelegateError: as :func:`edgeq_device.measure.profile.profile_model`.
    """
    if not models:
        raise InvalidArgumentError("no models to profile", argument="models", received=0,
                                   fix="give one or more .tflite files")
    names = [Path(os.fspath(m)).stem for m in models]
    if len(set(names)) != len(names):
        raise InvalidArgumentError("two models have the same file name", argument="models",
                                   received=[str(m) for m in models], fix="rename one of them")
    params = params or ProfileParams()
    say = log or (lambda _line: None)
    results = []
    for name, m in zip(names, models):
        say(f"profiling {name}")
        results.append(profile_model(m, params))
    return compare_profiles(results, names, target, [os.fspath(m) for m in models])
