"""How closely a converted model's outputs follow the reference (Keras) model's, on the same inputs.

Four figures, all from two arrays of outputs (one row per sample), defined once in
:func:`edgeq_device.tasks.fidelity.output_fidelity` so that the host's tables and a board's
``edgeq-device eval --reference`` give the same numbers on the same arrays:

- SQNR in dB: ``10 log10(sum(ref^2) / sum((ref - out)^2))`` over every output value;
  identical outputs give +inf, a zero reference with any error gives -inf;
- max abs error: the largest ``|ref - out|``;
- cosine: one cosine similarity over all values (both arrays flattened), not a mean of
  per-sample cosines; 1 where both are all zeros, 0 where only one is;
- arg-max agreement: the share of samples whose top-1 class is the same.
"""

from __future__ import annotations

import numpy as np
from edgeq_device.tasks.fidelity import output_fidelity

__all__ = ["argmax_agreement", "fidelity"]


def fidelity(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """SQNR (dB), max abs error and cosine (over all values) of ``output`` against ``reference``.

    The figures of :func:`edgeq_device.tasks.fidelity.output_fidelity`, one row per sample.
    """
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(output, np.float64).reshape(len(output), -1)
    f = output_fidelity("output", ref, out)
    return {"sqnr_db": f.sqnr_db, "max_abs_error": f.max_abs_error, "cosine": f.cosine}


def argmax_agreement(reference: np.ndarray, output: np.ndarray) -> float:
    """The share of samples (rows) whose arg-max class in ``output`` equals that in ``reference``."""
    ref = np.asarray(reference).reshape(len(reference), -1)
    out = np.asarray(output).reshape(len(output), -1)
    return float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1)))
