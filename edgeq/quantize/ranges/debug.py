"""Per-layer int8 error for each activation-ranges method side by side: :func:`debug_ranges`.

One :class:`~edgeq.quantize.layer_error.QuantDebugSession` calibrates the model; each method's
ranges (:mod:`edgeq.quantize.ranges.convert`) are written into its calibrated model and TFLite's
numeric-verify debugger measures every op's SQNR on the same samples, so the columns differ only
by the ranges. The final output's SQNR against the float model is given per method too.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeq_device.model.preprocess import Preprocess

from edgeq.errors import InvalidArgumentError
from edgeq.quantize.layer_error import QuantDebugSession
from edgeq.quantize.modes import Mode
from edgeq.quantize.ranges.convert import (
    LiteRunner,
    check_ranges,
    choose_ranges,
    collect_histograms,
    output_sqnr,
    rewrite_ranges,
    tensor_ranges,
)
from edgeq.quantize.ranges.histograms import METHODS

__all__ = ["RANGES_DEBUG_SCHEMA", "RangesDebugReport", "RangesLayer", "debug_ranges"]

RANGES_DEBUG_SCHEMA = "edgeq/debug-ranges/1"


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class RangesLayer:
    """One op output's SQNR (dB) under each ranges method."""

    name: str
    op: str
    layer: str
    position: int
    sqnr_db: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "layer": self.layer, "position": self.position,
                "sqnr_db": {k: _num(v) for k, v in self.sqnr_db.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangesLayer:
        return cls(str(data["name"]), str(data["op"]), str(data["layer"]), int(data["position"]),
                   {str(k): (math.inf if v is None else float(v)) for k, v in data["sqnr_db"].items()})


@dataclass(frozen=True)
class RangesDebugReport:
    """Per-layer SQNR for each ranges method, layers in model order, and the output SQNR per method.

    Attributes:
        model: the model's name.
        samples: samples calibrated and measured on.
        percentile: the percentile ``percentile`` used.
        methods: the methods compared, in column order.
        output_sqnr_db: the model output's SQNR against the float model, per method.
        layers: one :class:`RangesLayer` per quantized op output, in model order.
    """

    model: str
    samples: int
    percentile: float
    methods: tuple[str, ...]
    output_sqnr_db: dict[str, float]
    layers: tuple[RangesLayer, ...]

    @property
    def best(self) -> str:
        """The method with the highest output SQNR (minmax on a tie)."""
        return max(self.methods, key=lambda m: (self.output_sqnr_db[m], m == "minmax"))

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON-ready form, versioned by ``schema``."""
        return {"schema": RANGES_DEBUG_SCHEMA, "model": self.model, "samples": self.samples,
                "percentile": self.percentile, "methods": list(self.methods),
                "output_sqnr_db": {k: _num(v) for k, v in self.output_sqnr_db.items()},
                "layers": [r.to_dict() for r in self.layers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangesDebugReport:
        """Read :meth:`to_dict`'s form back.

        Raises:
            InvalidArgumentError: not an ``edgeq/debug-ranges/1`` dict.
        """
        if not isinstance(data, dict) or data.get("schema") != RANGES_DEBUG_SCHEMA:
            raise InvalidArgumentError("not a ranges debug report", argument="data",
                                       received=data.get("schema") if isinstance(data, dict) else type(data).__name__,
                                       fix=f"give the dict RangesDebugReport.to_dict() wrote "
                                           f"(schema {RANGES_DEBUG_SCHEMA!r})")
        return cls(str(data["model"]), int(data["samples"]), float(data["percentile"]), tuple(data["methods"]),
                   {str(k): (math.inf if v is None else float(v)) for k, v in data["output_sqnr_db"].items()},
                   tuple(RangesLayer.from_dict(r) for r in data["layers"]))

    def table(self, limit: int | None = None) -> str:
        """The per-layer table (model order; the first ``limit`` layers) and the output SQNR per method."""
        from rich.console import Console
        from rich.table import Table

        rows = self.layers if limit is None else self.layers[:limit]
        t = Table(title=f"SQNR dB per layer and ranges method: {self.model} ({self.samples} samples)",
                  title_justify="left")
        for col in ("#", "op", "layer", *self.methods, "tensor"):
            t.add_column(col, justify="left" if col in ("op", "layer", "tensor") else "right", overflow="fold")
        for r in rows:
            t.add_row(str(r.position), r.op, r.layer, *(f"{r.sqnr_db[m]:.1f}" for m in self.methods),
                      r.name.split(";")[0])
        t.add_row("", "output", "", *(f"{self.output_sqnr_db[m]:.1f}" for m in self.methods), "vs float model")
        buf = io.StringIO()
        Console(file=buf, width=160, color_system=None, force_jupyter=False, force_terminal=False).print(t)
        if limit is not None and len(self.layers) > limit:
            buf.write(f"... {len(self.layers) - limit} more layer(s)\n")
        buf.write(f"best output SQNR: {self.best}\n")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(self.table()) + "</pre>"


def debug_ranges(model: Any, calibration: Any, *, methods: Sequence[str] = METHODS, percentile: float = 99.99,
                 samples: int = 100, seed: int = 0, preprocess: Preprocess | None = None,
                 batch_size: int | None = None, progress: bool | None = None) -> RangesDebugReport:
    """Per-layer and output SQNR of ``model`` in int8 under each ranges method in ``methods``.

    Args:
        methods: any of ``minmax``, ``percentile``, ``mse``, ``entropy``, ``cautious`` (``auto`` is not a range
            of its own: it picks the best of these).
        percentile, model, calibration, samples, seed, preprocess, batch_size, progress: as for
            :func:`edgeq.convert` and :func:`edgeq.debug`.

    Raises:
        InvalidArgumentError: an unknown method or percentile; and what :func:`edgeq.debug` raises.
    """
    wanted = tuple(dict.fromkeys(check_ranges(m, percentile, Mode.INT8) for m in methods))
    if not wanted or "auto" in wanted:
        raise InvalidArgumentError("debug compares ranges methods", argument="methods", received=list(methods),
                                   fix=f"give some of: {', '.join(METHODS)}")
    session = QuantDebugSession(model, calibration, samples=samples, seed=seed, preprocess=preprocess,
                                batch_size=batch_size, progress=progress)
    calibrated = session.calibrated_model
    items = session._items
    names = [s.name for s in session.loaded.inputs]
    hists, _ = collect_histograms(calibrated, items, names, tensor_ranges(calibrated))
    runner = LiteRunner(calibrated, names, preserve=False)
    reference = [[o.copy() for o in runner.run(item)] for item in items]
    per_layer: dict[str, dict[str, float]] = {}
    order: dict[str, tuple[str, str, int]] = {}
    outputs: dict[str, float] = {}
    try:
        for m in wanted:
            rewrite, _ = choose_ranges(calibrated, hists, m, percentile)
            session.debugger.calibrated_model = rewrite_ranges(calibrated, rewrite)
            for row in session.report().layers:
                per_layer.setdefault(row.name, {})[m] = row.sqnr_db
                order.setdefault(row.name, (row.op, row.layer, row.position))
            outputs[m] = output_sqnr(reference, session.quantized_model(), items, names)
    finally:
        session.debugger.calibrated_model = calibrated
    layers = tuple(RangesLayer(n, *order[n], sqnr_db={m: per_layer[n].get(m, math.nan) for m in wanted})
                   for n in sorted(order, key=lambda k: order[k][2]))
    return RangesDebugReport(session.loaded.name, session.samples, float(percentile), wanted, outputs, layers)

