"""What the accuracy budget search tried and chose: :class:`Candidate` and :class:`BudgetReport`.

``BudgetReport.to_dict`` is versioned (``schema`` ``edgeq/budget/2``: version 1 had no
16-bit layers, agreement or SQNR; :meth:`BudgetReport.from_dict` reads both); its ``table()``
(also ``str()``) is what the CLI prints.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from typing import Any

from edgeq.errors import InvalidArgumentError
from edgeq.quantize.result import ConversionResult

__all__ = ["SCHEMA", "BudgetReport", "Candidate"]

SCHEMA = "edgeq/budget/2"


@dataclass(frozen=True)
class Candidate:
    """One conversion the budget search tried.

    Attributes:
        name: ``int8``, ``int8+a16(k)``, ``int8+float(k)``, ``int16x8`` or ``float16``.
        mode: the conversion mode.
        float_layers: the worst layers, kept in float (int8 with float layers only).
        float_readers: the layers reading their outputs, kept in float with them so the
            damaged tensors are never re-quantized.
        float_nodes: every op (by output tensor) kept in float.
        size_bytes: the ``.tflite`` size (None if the conversion failed).
        latency_ms: median latency of one inference on this machine.
        accuracy: top-1 accuracy (0..1) on the evaluation data.
        drop: accuracy lost against the float32 baseline, in percentage points.
        within_budget: whether ``drop <= max_drop``.
        error: why the conversion failed, if it did.
        result: the conversion itself (not in ``to_dict``).
        a16_layers: the worst layers given 16-bit activations (int8 with 16-bit layers only).
        a16_nodes: every op (by output tensor) at 16-bit activations: those layers and their readers.
        agreement: arg-max agreement (0..1) with the float32 model on the evaluation data.
        sqnr_db: output SQNR against the float32 model's outputs, in dB.
    """

    name: str
    mode: str
    float_layers: tuple[str, ...] = ()
    float_readers: tuple[str, ...] = ()
    float_nodes: tuple[str, ...] = ()
    size_bytes: int | None = None
    latency_ms: float | None = None
    accuracy: float | None = None
    drop: float | None = None
    within_budget: bool = False
    error: str | None = None
    result: ConversionResult | None = field(default=None, repr=False, compare=False)
    a16_layers: tuple[str, ...] = ()
    a16_nodes: tuple[str, ...] = ()
    agreement: float | None = None
    sqnr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (without the conversion)."""
        return {"name": self.name, "mode": self.mode, "float_layers": list(self.float_layers),
                "float_readers": list(self.float_readers), "float_nodes": list(self.float_nodes),
                "a16_layers": list(self.a16_layers), "a16_nodes": list(self.a16_nodes), "size_bytes": self.size_bytes,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
                "accuracy": self.accuracy, "drop_points": None if self.drop is None else round(self.drop, 4),
                "agreement": self.agreement, "sqnr_db": None if self.sqnr_db is None else round(self.sqnr_db, 3),
                "within_budget": self.within_budget, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """The candidate :meth:`to_dict` described (schema 1 or 2; ``result`` is None)."""
        def opt(key: str) -> float | None:
            return None if data.get(key) is None else float(data[key])

        return cls(str(data["name"]), str(data["mode"]), tuple(data.get("float_layers", ())),
                   tuple(data.get("float_readers", ())), tuple(data.get("float_nodes", ())),
                   None if data.get("size_bytes") is None else int(data["size_bytes"]), opt("latency_ms"),
                   opt("accuracy"), opt("drop_points"), bool(data.get("within_budget", False)), data.get("error"),
                   None, tuple(data.get("a16_layers", ())), tuple(data.get("a16_nodes", ())), opt("agreement"),
                   opt("sqnr_db"))


@dataclass(frozen=True)
class BudgetReport:
    """What the accuracy budget search tried and what it chose.

    Attributes:
        model: the model's name.
        max_drop: the budget, in top-1 percentage points.
        baseline_accuracy: top-1 (0..1) of the float32 ``.tflite`` on the evaluation data.
        baseline_size_bytes, baseline_latency_ms: the float32 model's size and latency.
        evaluation: what the accuracy was measured on, and ``samples`` how many.
        candidates: every candidate tried, in order.
        chosen: index of the chosen candidate in ``candidates``.
        reason: why it was chosen.
    """

    model: str
    max_drop: float
    baseline_accuracy: float
    baseline_size_bytes: int
    baseline_latency_ms: float
    evaluation: str
    samples: int
    candidates: tuple[Candidate, ...]
    chosen: int
    reason: str

    @property
    def choice(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.chosen]

    @property
    def within_budget(self) -> bool:
        """Whether the chosen candidate meets the budget."""
        return self.choice.within_budget

    @property
    def pareto(self) -> tuple[str, ...]:
        """The candidates no other beats on drop, size and latency together (each at least as good, one better)."""
        done = [c for c in self.candidates if c.error is None and c.drop is not None and c.size_bytes is not None
                and c.latency_ms is not None]

        def key(c: Candidate) -> tuple[float, float, float]:
            return (float(c.drop or 0.0), float(c.size_bytes or 0), float(c.latency_ms or 0.0))

        return tuple(c.name for c in done if not any(
            all(a <= b for a, b in zip(key(o), key(c))) and key(o) != key(c) for o in done))

    def table(self) -> str:
        """The candidates as a text table, followed by the reason for the choice."""
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"accuracy budget for {self.model}: top-1 drop <= {self.max_drop:g} points "
                        f"({self.samples} samples of {self.evaluation})", title_justify="left")
        for col in ("candidate", "size KiB", "latency ms", "top-1 %", "drop pts", "agree %", "SQNR dB", "budget",
                    "16-bit or float layers"):
            t.add_column(col, justify="left" if col in ("candidate", "budget", "16-bit or float layers") else "right",
                         overflow="fold")
        t.add_row("float32 (baseline)", f"{self.baseline_size_bytes / 1024:.1f}",
                  f"{self.baseline_latency_ms:.3f}", f"{self.baseline_accuracy * 100:.2f}", "-", "-", "-", "-", "")
        for i, c in enumerate(self.candidates):
            mark = "chosen" if i == self.chosen else ("ok" if c.within_budget else ("failed" if c.error else "over"))
            t.add_row(c.name, "-" if c.size_bytes is None else f"{c.size_bytes / 1024:.1f}",
                      "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
                      "-" if c.accuracy is None else f"{c.accuracy * 100:.2f}",
                      "-" if c.drop is None else f"{c.drop:+.2f}",
                      "-" if c.agreement is None else f"{c.agreement * 100:.2f}",
                      "-" if c.sqnr_db is None else f"{c.sqnr_db:.1f}", mark,
                      c.error[:80] if c.error else _float_text(c))
        buf = io.StringIO()
        Console(file=buf, width=140, color_system=None, force_jupyter=False, force_terminal=False).print(t)
        buf.write(self.reason + "\n")
        if self.pareto:
            buf.write("Pareto set (drop, size, latency): " + ", ".join(self.pareto) + "\n")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The candidates as an HTML table (notebooks)."""
        return "<pre>" + html.escape(self.table()) + "</pre>"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"schema": SCHEMA, "model": self.model, "max_drop_points": self.max_drop,
                "baseline": {"mode": "float32", "accuracy": self.baseline_accuracy,
                             "size_bytes": self.baseline_size_bytes,
                             "latency_ms": round(self.baseline_latency_ms, 4)},
                "evaluation": self.evaluation, "samples": self.samples,
                "candidates": [c.to_dict() for c in self.candidates], "chosen": self.choice.name,
                "within_budget": self.within_budget, "reason": self.reason, "pareto": list(self.pareto)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetReport:
        """The report :meth:`to_dict` wrote (``edgeq/budget/1`` or ``/2``); candidates carry no conversion.

        Raises:
            InvalidArgumentError: not a budget report, or an incomplete one.
        """
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema not in ("edgeq/budget/1", SCHEMA):
            raise InvalidArgumentError("not a budget report this edgeq reads", argument="data", received=schema,
                                       fix=f"give the dict BudgetReport.to_dict() wrote (schema {SCHEMA!r})")
        try:
            candidates = tuple(Candidate.from_dict(c) for c in data["candidates"])
            chosen = [c.name for c in candidates].index(data["chosen"])
            base = data["baseline"]
            return cls(str(data["model"]), float(data["max_drop_points"]), float(base["accuracy"]),
                       int(base["size_bytes"]), float(base["latency_ms"]), str(data["evaluation"]),
                       int(data["samples"]), candidates, chosen, str(data["reason"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"the budget report is incomplete ({type(exc).__name__}: {exc})",
                                       argument="data", received=sorted(data),
                                       fix="give the dict BudgetReport.to_dict() wrote") from None


def _float_text(c: Candidate) -> str:
    if c.a16_layers:
        return "16-bit: " + ", ".join(c.a16_layers)
    text = ", ".join(c.float_layers)
    if c.float_readers:
        text += f" (+ read by {', '.join(c.float_readers)})"
    return text
