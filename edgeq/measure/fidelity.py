"""How closely a converted model's outputs follow the reference (Keras) model's, on the same inputs.

Four figures, all from two arrays of outputs (one row per sample):

- SQNR in dB: ``10 log10(sum(ref^2) / sum((ref - out)^2))`` over every output value;
  identical outputs give +inf, a zero reference with any error gives -inf;
- max abs error: the largest ``|ref - out|``;
- cosine: the mean over samples of the cosine similarity of the two output vectors
  (1 where either vector is all zeros);
- arg-max agreement: the share of samples whose top-1 class is the same.
"""

from __future__ import annotations

import numpy as np

__all__ = ["argmax_agreement", "fidelity"]


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
    return {"sqnr_db": float(sqnr), "max_abs_error": float(np.max(np.abs(ref - out))), "cosine": float(np.mean(cos))}


def argmax_agreement(reference: np.ndarray, output: np.ndarray) -> float:
    """The share of samples (rows) whose arg-max class in ``output`` equals that in ``reference``."""
    ref = np.asarray(reference).reshape(len(reference), -1)
    out = np.asarray(output).reshape(len(output), -1)
    return float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1)))
