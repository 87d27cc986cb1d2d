"""Per-tensor histograms of activations and the int8 ranges chosen from them.

:class:`TensorHistogram` counts one tensor's values in ``bins`` equal bins over a range fixed in
advance (the min/max the converter's calibration found, widened to hold 0, so memory stays
flat in the number of samples). :func:`choose_range` turns a histogram into a clipping range:

- ``minmax``: the range itself (what the converter uses);
- ``percentile``: the ``percentile``-th percentile of each side that holds values (a tensor
  that is all >= 0 keeps 0 as its low end);
- ``mse``: the range that minimises the mean square error of int8 quantization (rounding
  inside, clipping outside) of the histogram, searched one end at a time over the bin edges;
- ``entropy``: the range minimising the KL divergence between the histogram clipped to it and
  its quantized form, per side, as TensorRT's entropy calibrator does on ``|x|`` (each side
  gets the share of the 255 int8 steps its width takes), among the ends that clip no more of
  the values than ``percentile`` does (KL alone clipped a sixth of a spiky tensor's values);
- ``cautious``: per tensor, of the ranges minmax, the 99.9th, 99.99th and 99.999th percentiles and
  mse choose, the one of least quantization error when an error from clipping counts
  :data:`CLIP_COST` times one from rounding. A clipped value is an outlier cut short, and the
  layers after it (a residual add, the logits) carry that error on; rounding noise averages out.
  Plain mse trades them one for one and on a ResNet-8 narrowed tensors the model needed
  (-0.8 dB output SQNR); with clipping costed this way the same tensors keep their min/max and a
  tensor of rare big values is still narrowed.

TFLite's int8 activations are asymmetric (a zero point per tensor), so each end is chosen
on its own; with ``symmetric=True`` (int16 activations) one magnitude is chosen for both.
A chosen range never grows past the histogram's and always holds 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CLIP_COST", "DEFAULT_BINS", "METHODS", "TensorHistogram", "choose_range", "quantization_error"]

DEFAULT_BINS = 2048
METHODS = ("minmax", "percentile", "mse", "entropy", "cautious")
CLIP_COST = 64.0
"""``cautious``: how many times an error from clipping counts against one from rounding."""
_CAUTIOUS_PERCENTILES = (99.9, 99.99, 99.999)
_LEVELS = 255  # int8 steps between the ends of a range
_CANDIDATES = 128  # ends tried per search in mse


@dataclass
class TensorHistogram:
    """The counts of one tensor's values over ``[low, high]`` (which holds 0), ``bins`` equal bins.

    Values outside the range (a sample the range was not calibrated on) count in the end bins.
    """

    low: float
    high: float
    bins: int = DEFAULT_BINS
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.low, self.high = min(float(self.low), 0.0), max(float(self.high), 0.0)
        self.counts = np.zeros(self.bins, np.int64)

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.bins

    @property
    def constant(self) -> bool:
        """True when the range is a single value (an all-zero tensor)."""
        return not self.high > self.low

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (any shape)."""
        if self.constant:
            return
        flat = np.asarray(values, np.float32).ravel()
        index = ((flat - self.low) * (self.bins / (self.high - self.low))).astype(np.int64)
        np.clip(index, 0, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)


def choose_range(hist: TensorHistogram, method: str, percentile: float = 99.99,
                 symmetric: bool = False) -> tuple[float, float]:
    """The ``(low, high)`` range ``method`` chooses for ``hist``; within its range, holding 0."""
    if method == "minmax" or hist.constant or hist.counts.sum() == 0:
        return hist.low, hist.high
    if symmetric:
        return _symmetric(hist, method, percentile)
    if method == "percentile":
        low, high = _percentile(hist, percentile)
    elif method == "mse":
        low, high = _mse(hist)
    elif method == "entropy":
        low, high = _entropy(hist, percentile)
    elif method == "cautious":
        low, high = _cautious(hist)
    else:
        raise ValueError(f"unknown ranges method {method!r}")
    return min(low, 0.0), max(high, 0.0)


def _percentile(hist: TensorHistogram, percentile: float) -> tuple[float, float]:
    counts, edges = hist.counts, hist.edges()
    total = counts.sum()
    tail = total * (100.0 - percentile) / 100.0
    cum = np.cumsum(counts)
    low, high = hist.low, hist.high
    if hist.low < 0:  # a side below zero: clip its tail too
        low = float(edges[int(np.searchsorted(cum, tail, side="right"))])
    if hist.high > 0:
        high = float(edges[int(np.searchsorted(cum, total - tail, side="left")) + 1])
    return max(low, hist.low), min(high, hist.high)


def _mse_of(centers: np.ndarray, counts: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Quantization MSE of the histogram for each candidate range (rows)."""
    step = np.maximum(highs - lows, 1e-30) / _LEVELS
    zero = np.round(-lows / step)
    q = (np.clip(np.round(centers[None, :] / step[:, None]) + zero[:, None], 0, _LEVELS) - zero[:, None])
    err = q * step[:, None] - centers[None, :]
    return (np.square(err) * counts[None, :]).sum(axis=1)


def _mse(hist: TensorHistogram) -> tuple[float, float]:
    edges = hist.edges()
    centers = (edges[:-1] + edges[1:]) / 2
    counts = hist.counts.astype(np.float64)
    low, high = hist.low, hist.high
    for _ in range(2):  # one end at a time, twice
        if high > 0:
            cand = np.linspace(high / _CANDIDATES, high, _CANDIDATES)
            high = float(cand[np.argmin(_mse_of(centers, counts, np.full_like(cand, low), cand))])
        if low < 0:
            cand = np.linspace(low / _CANDIDATES, low, _CANDIDATES)
            low = float(cand[np.argmin(_mse_of(centers, counts, cand, np.full_like(cand, high)))])
    return low, high


def quantization_error(hist: TensorHistogram, low: float, high: float) -> tuple[float, float]:
    """The histogram's int8 quantization error over ``[low, high]``: (rounding, clipping), each a
    sum of squares over the values, clipping the part from values outside the range."""
    edges = hist.edges()
    centers = (edges[:-1] + edges[1:]) / 2
    counts = hist.counts.astype(np.float64)
    step = max(high - low, 1e-30) / _LEVELS
    zero = round(-low / step)
    q = (np.clip(np.round(centers / step) + zero, 0, _LEVELS) - zero) * step
    err = np.square(q - centers) * counts
    inside = (centers >= low) & (centers <= high)
    return float(err[inside].sum()), float(err[~inside].sum())


def _cautious(hist: TensorHistogram) -> tuple[float, float]:
    candidates = [(hist.low, hist.high), _mse(hist), *(_percentile(hist, p) for p in _CAUTIOUS_PERCENTILES)]
    costs = []
    for low, high in candidates:
        low, high = min(low, 0.0), max(high, 0.0)
        rounding, clipping = quantization_error(hist, low, high)
        costs.append(rounding + CLIP_COST * clipping)
    return candidates[int(np.argmin(costs))]


def _kl(side: np.ndarray, levels: int, keep: np.ndarray) -> np.ndarray:
    """TensorRT's entropy calibration on a one-sided histogram: for each number of bins kept in
    ``keep``, the KL divergence between the histogram clipped there and its ``levels``-step
    quantized form (each step's mass spread over the bins of it that held values)."""
    n = len(side)
    kls = np.full(len(keep), math.inf)
    tails = np.cumsum(side[::-1])[::-1].astype(np.float64)  # tails[i] = side[i:].sum()
    step = np.arange(levels)
    for k, i in enumerate(keep):
        ref = side[:i].astype(np.float64)
        p = ref.copy()
        if i < n:
            p[-1] += tails[i]
        starts = step * (i // levels) + np.minimum(step, i % levels)  # np.array_split's chunks
        nonzero = (ref > 0).astype(np.float64)
        sums = np.add.reduceat(ref, starts)
        used = np.add.reduceat(nonzero, starts)
        per = np.divide(sums, used, out=np.zeros_like(sums), where=used > 0)
        q = np.repeat(per, np.diff(np.r_[starts, i])) * nonzero
        if p.sum() == 0 or q.sum() == 0:
            continue
        p /= p.sum()
        q /= q.sum()
        mask = p > 0
        kls[k] = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
    return kls


def _kl_end(side: np.ndarray, levels: int, end: Callable[[np.ndarray], np.ndarray], clipped: np.ndarray,
            tail: float, stride: int = 8) -> float | None:
    """The end (``end(bins kept)``) of least KL among those clipping at most ``tail`` values
    (``clipped[i]``: the values past the first ``i`` bins)."""
    n = len(side)
    if n <= levels or side.sum() == 0:
        return None
    keep = np.unique(np.r_[np.arange(levels, n + 1, stride), n])
    ends = end(keep)
    allowed = clipped[keep] <= tail
    if not allowed.any():
        return None
    kls = _kl(side, levels, keep[allowed])
    return float(ends[allowed][int(np.argmin(kls))])


def _entropy(hist: TensorHistogram, percentile: float) -> tuple[float, float]:
    """KL per side, among the ends that clip no more values than ``percentile`` gives up.

    KL compares bin masses and is blind to how far a value moves. On a histogram of a few
    distinct values (a constant background through a ReLU, a small calibration set) spreading a
    spike over its neighbours costs it more than clipping a sixth of the tensor to an eighth of
    its range, and on a smooth ReLU tail it clips a few percent of the values; either ruins a
    model. TensorRT's calibrator is meant to shed rare outliers, so an end is only a candidate
    if it clips at most ``100 - percentile`` percent of the values; of those, the least KL wins.
    """
    counts = hist.counts.astype(np.float64)
    zero = round(-hist.low / hist.width)
    positive, negative = hist.counts[zero:], hist.counts[:zero][::-1]
    total = len(hist.counts)
    low, high = hist.low, hist.high
    tail = counts.sum() * (100.0 - percentile) / 100.0
    if len(positive) and hist.high > 0:
        above = np.r_[np.cumsum(positive[::-1])[::-1], 0]  # above[i]: values past the first i bins
        found = _kl_end(positive, max(16, round(_LEVELS * len(positive) / total)),
                        lambda keep: np.minimum((keep + zero) * hist.width + hist.low, hist.high),
                        above, tail)
        high = hist.high if found is None else found
    if len(negative) and hist.low < 0:
        below = np.r_[np.cumsum(negative[::-1])[::-1], 0]
        found = _kl_end(negative, max(16, round(_LEVELS * len(negative) / total)),
                        lambda keep: np.maximum(hist.low + (zero - keep) * hist.width, hist.low),
                        below, tail)
        low = hist.low if found is None else found
    return max(low, hist.low), min(high, hist.high)


def _symmetric(hist: TensorHistogram, method: str, percentile: float) -> tuple[float, float]:
    """One magnitude for both ends: the method run on ``|x|``'s histogram."""
    magnitude = max(-hist.low, hist.high)
    folded = TensorHistogram(0.0, magnitude, hist.bins)
    centers = (hist.edges()[:-1] + hist.edges()[1:]) / 2
    index = np.clip((np.abs(centers) / magnitude * hist.bins).astype(np.int64), 0, hist.bins - 1)
    folded.counts = np.bincount(index, weights=hist.counts, minlength=hist.bins).astype(np.int64)
    _, high = choose_range(folded, method, percentile)
    return -high, high
