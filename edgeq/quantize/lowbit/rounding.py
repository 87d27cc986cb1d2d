"""4-bit weight rounding chosen on a layer's real inputs (plain NumPy).

A layer computes ``y = W x``; with 4-bit per-channel symmetric weights it computes
``ŷ = Ŵ x`` where ``Ŵ = s · q``, ``q`` integers in ``[-7, 7]`` (the narrow range
litert-quantizer and LiteRT use). Rounding each weight to the nearest grid point
minimises ``|W − Ŵ|`` element by element, which is not what matters: the layer's output
error over its inputs is

    E = Σ_x |(W − Ŵ) x|²  =  Σ_c (w_c − ŵ_c)ᵀ H (w_c − ŵ_c),     H = Σ_x x xᵀ,

one quadratic form per output channel ``c`` with the same ``H`` (the inputs' second
moment; for a convolution ``x`` is a patch the filter sees). :func:`optimize_int4`
minimises it in three steps:

1. scale: per channel, the clipping of ``max |w_c|`` (a grid of ratios) whose nearest
   rounding gives the smallest ``E`` (MSE-optimal clipping weighted by the inputs);
2. GPTQ-style sequential rounding: weights are rounded one input column at a time, and
   each column's rounding error is pushed onto the columns not yet rounded through
   ``H⁻¹`` (Optimal Brain Surgeon's update), so later choices compensate earlier ones;
3. greedy up/down sweeps: each integer is moved by ±1 when that lowers ``E`` exactly
   (the change is ``2δ(HΔ)_j + δ²H_jj``), until a sweep changes nothing.

Each step only lowers ``E`` from where nearest rounding with max scaling starts: the
result is never worse than nearest on the calibration inputs (:class:`RoundingReport`
holds both errors). :func:`nearest_int4` is the plain rounding for ``--rounding nearest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = ["QMAX", "Rounding", "RoundingReport", "nearest_int4", "optimize_int4", "output_error"]

QMAX = 7
"""Largest 4-bit magnitude of the narrow symmetric range ``[-7, 7]``."""

_RATIOS = np.linspace(0.5, 1.0, 26)
_MAX_SWEEPS = 8


class Rounding(str, Enum):
    """How 4-bit weights are rounded: ``nearest`` grid point, or ``optimized`` on the calibration inputs."""

    NEAREST = "nearest"
    OPTIMIZED = "optimized"


@dataclass(frozen=True)
class RoundingReport:
    """One layer's rounding: its output error ``E`` (relative to ``Σ|W x|²``) with nearest and chosen rounding.

    The errors are None when no calibration inputs measured them (``nearest`` without data).
    """

    name: str
    weights: int
    nearest_error: float | None = None
    error: float | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return {"name": self.name, "weights": self.weights, "nearest_error": self.nearest_error, "error": self.error}

    def __str__(self) -> str:
        if self.error is None or self.nearest_error is None:
            return f"{self.name}: {self.weights} weights"
        return (f"{self.name}: {self.weights} weights, relative output error "
                f"{self.nearest_error:.4g} (nearest) -> {self.error:.4g}")


def _max_scales(w: np.ndarray) -> np.ndarray:
    amax = np.abs(w).max(axis=1)
    return np.where(amax > 0, amax / QMAX, 1.0).astype(np.float64)


def nearest_int4(w: np.ndarray, scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest 4-bit integers of ``w`` ``[channels, inputs]`` and the per-channel scales used (max / 7 if none)."""
    s = _max_scales(w) if scales is None else np.asarray(scales, np.float64)
    return np.clip(np.rint(w / s[:, None]), -QMAX, QMAX).astype(np.int8), s


def output_error(w: np.ndarray, q: np.ndarray, scales: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per channel ``(w − s·q)ᵀ H (w − s·q)``: the layer's squared output error over the inputs ``H`` summarises."""
    d = w - scales[:, None] * q
    return np.sum((d @ h) * d, axis=1)


def _search_scales(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    base = _max_scales(w)
    best_err = np.full(len(w), np.inf)
    best = base.copy()
    for ratio in _RATIOS:
        s = base * ratio
        q, _ = nearest_int4(w, s)
        err = output_error(w, q, s, h)
        better = err < best_err
        best[better], best_err[better] = s[better], err[better]
    return best


def _gptq(w: np.ndarray, h: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Sequential rounding with the error of each column spread over the later ones through ``H⁻¹``."""
    n = h.shape[0]
    damp = 0.01 * float(np.mean(np.diag(h))) + 1e-12
    hd = h + damp * np.eye(n)
    try:
        hinv = np.linalg.inv(hd)
        u = np.linalg.cholesky(hinv).T  # H⁻¹ = Uᵀ U
    except np.linalg.LinAlgError:
        return nearest_int4(w, scales)[0]
    work = w.astype(np.float64).copy()
    q = np.zeros(w.shape, np.int8)
    for j in range(n):
        col = work[:, j]
        qj = np.clip(np.rint(col / scales), -QMAX, QMAX)
        q[:, j] = qj
        err = (col - qj * scales) / u[j, j]
        work[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    return q


def _greedy(w: np.ndarray, h: np.ndarray, scales: np.ndarray, q: np.ndarray) -> np.ndarray:
    """±1 moves on each integer while one lowers the quadratic error (exact, all channels at once)."""
    q = q.astype(np.int64)
    delta = scales[:, None] * q - w  # Ŵ − W
    g = delta @ h  # (HΔ) per channel
    diag = np.diag(h)
    for _ in range(_MAX_SWEEPS):
        moved = False
        for j in range(h.shape[0]):
            for step in (1, -1):
                ok = (q[:, j] + step <= QMAX) & (q[:, j] + step >= -QMAX)
                d = step * scales
                gain = 2 * d * g[:, j] + d * d * diag[j]
                take = ok & (gain < -1e-12 * (np.abs(g[:, j]) * np.abs(d) + 1e-30))
                if take.any():
                    moved = True
                    dd = np.where(take, d, 0.0)
                    q[:, j] += np.where(take, step, 0)
                    g += np.outer(dd, h[j])
        if not moved:
            break
    return q.astype(np.int8)


def optimize_int4(w: np.ndarray, h: np.ndarray, name: str = "layer",
                  rounding: Rounding = Rounding.OPTIMIZED) -> tuple[np.ndarray, np.ndarray, RoundingReport]:
    """4-bit integers and per-channel scales for ``w`` ``[channels, inputs]`` given ``H = Σ x xᵀ`` ``[inputs, inputs]``.

    Returns ``(q, scales, report)``; with :attr:`Rounding.NEAREST` the nearest rounding at max / 7 scales.
    """
    w = np.asarray(w, np.float64)
    h = np.asarray(h, np.float64)
    q0, s0 = nearest_int4(w)
    total = float(np.sum((w @ h) * w)) or 1.0
    e0 = output_error(w, q0, s0, h)
    if rounding is Rounding.NEAREST:
        err = float(e0.sum()) / total
        return q0, s0, RoundingReport(name, int(w.size), err, err)
    s = _search_scales(w, h)
    q = _greedy(w, h, s, _gptq(w, h, s))
    e = output_error(w, q, s, h)
    worse = e > e0  # never worse than nearest, channel by channel
    q[worse], s[worse], e[worse] = q0[worse], s0[worse], e0[worse]
    return q, s, RoundingReport(name, int(w.size), float(e0.sum()) / total, float(e.sum()) / total)
