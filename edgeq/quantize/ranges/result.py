"""What a conversion with chosen activation ranges did: :class:`RangesChoice`.

Stored in the converted model's edgeq metadata (``extra["ranges"]``) and so in
:attr:`edgeq.ConversionResult.ranges`; versioned by ``schema`` (``edgeq/ranges/1``).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from edgeq.errors import InvalidArgumentError

__all__ = ["FOLDS", "RANGES_METHODS", "RANGES_SCHEMA", "RangesChoice"]

RANGES_SCHEMA = "edgeq/ranges/1"
RANGES_METHODS = ("minmax", "percentile", "mse", "entropy", "cautious", "auto")
"""The ``ranges=`` methods (``--ranges``)."""
FOLDS = 5
"""``auto`` keeps a method over minmax only if it is better on each of this many interleaved parts of
the held-out samples."""


@dataclass(frozen=True)
class RangesChoice:
    """How the activation ranges of an int8 model were chosen.

    Attributes:
        method: the method asked for (``minmax``, ``percentile``, ``mse``, ``entropy``, ``cautious``, ``auto``).
        chosen: the method whose ranges the model has (``auto``'s pick, a key of ``sqnr_db``:
            ``percentile@99.999`` is the percentile method at that percentile; else ``method``).
        percentile: the percentile ``percentile`` uses.
        samples: calibration samples the ranges were chosen on.
        held_out: samples ``auto`` held out to compare the methods (0 otherwise).
        sqnr_db: ``auto``: output SQNR (dB) vs the float model on the held-out samples, per method.
        folds_won: ``auto``: per method other than minmax, on how many of the parts of the held-out
            samples it beat minmax (it is only chosen if on all of them).
        narrowed: activation tensors whose range the method narrowed (within their min/max).
        widened: tensors widened: to the scale they share with others, or beyond their min/max.
        tensors: every activation tensor by name: ``kept`` (its min/max), ``narrowed``, ``widened to
            a shared scale`` or ``widened`` — what the written model has, against plain min/max.
        kept: tensors kept at their min/max, as ``"name: reason"`` (a range TFLite fixes, a shared
            scale, the model's input).
        constant: tensors that held a single value in calibration (all zero, say), left as they were.
    """

    method: str
    chosen: str
    percentile: float = 99.99
    samples: int = 0
    held_out: int = 0
    sqnr_db: dict[str, float] = field(default_factory=dict)
    folds_won: dict[str, int] = field(default_factory=dict)
    narrowed: int = 0
    kept: tuple[str, ...] = ()
    constant: tuple[str, ...] = ()
    widened: int = 0
    tensors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON-ready form (an infinite SQNR is written as null)."""
        return {"schema": RANGES_SCHEMA, "method": self.method, "chosen": self.chosen,
                "percentile": self.percentile, "samples": self.samples, "held_out": self.held_out,
                "sqnr_db": {k: (v if math.isfinite(v) else None) for k, v in self.sqnr_db.items()},
                "folds_won": dict(self.folds_won),
                "narrowed": self.narrowed, "widened": self.widened, "kept": list(self.kept),
                "constant": list(self.constant), "tensors": dict(self.tensors)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangesChoice:
        """Read :meth:`to_dict`'s form back.

        Raises:
            InvalidArgumentError: not a ``edgeq/ranges/1`` dict.
        """
        if not isinstance(data, dict) or data.get("schema") != RANGES_SCHEMA:
            raise InvalidArgumentError("not a ranges record", argument="data",
                                       received=data.get("schema") if isinstance(data, dict) else type(data).__name__,
                                       fix=f"give the dict RangesChoice.to_dict() wrote (schema {RANGES_SCHEMA!r})")
        return cls(method=str(data["method"]), chosen=str(data["chosen"]), percentile=float(data["percentile"]),
                   samples=int(data["samples"]), held_out=int(data["held_out"]),
                   sqnr_db={str(k): (math.inf if v is None else float(v)) for k, v in data["sqnr_db"].items()},
                   folds_won={str(k): int(v) for k, v in data.get("folds_won", {}).items()},
                   narrowed=int(data["narrowed"]), kept=tuple(data["kept"]), constant=tuple(data["constant"]),
                   widened=int(data.get("widened", 0)),
                   tensors={str(k): str(v) for k, v in data.get("tensors", {}).items()})

    def summary(self) -> str:
        """One line: the method, auto's pick and the SQNR per method."""
        text = f"ranges {self.method}"
        if self.method == "percentile" or self.chosen == "percentile":
            text += f" ({self.percentile:g}th percentile)"
        if self.method == "auto":
            text += f" chose {self.chosen} on {self.held_out} held-out samples"
            if self.sqnr_db:
                text += " (output SQNR " + ", ".join(
                    f"{k} {v:.1f} dB" + (f" better on {self.folds_won[k]}/{FOLDS} parts" if k in self.folds_won
                                         else "") for k, v in self.sqnr_db.items()) + ")"
        return text + (f"; {self.narrowed} range(s) narrowed, {self.widened} widened, {len(self.kept)} kept at a "
                       f"fixed min/max, {len(self.constant)} constant")

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  kept: {k}" for k in self.kept[:10]]
        lines += [f"  constant: {c}" for c in self.constant[:10]]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"
