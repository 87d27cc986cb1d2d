"""One meaning of ``cosine``: the host's comparison tables and the board's fidelity agree on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from edgeq_device.tasks.fidelity import output_fidelity

from edgeq.measure.fidelity import fidelity


def test_cosine_is_one_cosine_over_all_values_not_a_mean_of_samples() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 10.0]])
    out = np.array([[1.0, 0.0], [10.0, 0.0]])
    # By hand: the dot product of the flattened arrays is 1, both norms are sqrt(101).
    # The per-sample cosines are 1 and 0, whose mean (0.5) is not what "cosine" means.
    host = fidelity(ref, out)
    board = output_fidelity("y", ref, out)
    assert host["cosine"] == pytest.approx(1 / 101, rel=1e-12)
    assert board.cosine == pytest.approx(1 / 101, rel=1e-12)
    # SQNR by hand: signal 101, noise 200.
    assert host["sqnr_db"] == pytest.approx(10 * math.log10(101 / 200), rel=1e-12)
    assert host["max_abs_error"] == 10.0


@pytest.mark.parametrize("shape", [(32, 10), (8, 4, 4, 3), (5, 1)])
def test_host_and_board_give_the_same_figures_on_the_same_arrays(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(size=shape).astype(np.float32)
    # an int8-like rounding of the reference: the kind of error a quantized model makes
    out = (np.round(ref * 20) / 20).astype(np.float32)
    host = fidelity(ref, out)
    board = output_fidelity("y", ref, out)
    assert host["cosine"] == board.cosine
    assert host["sqnr_db"] == board.sqnr_db
    assert host["max_abs_error"] == board.max_abs_error
    flat_r, flat_o = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    expected = float(flat_r @ flat_o / (np.linalg.norm(flat_r) * np.linalg.norm(flat_o)))
    assert host["cosine"] == pytest.approx(expected, rel=1e-12)


def test_zero_outputs() -> None:
    zeros = np.zeros((3, 4))
    assert fidelity(zeros, zeros)["cosine"] == 1.0
    assert fidelity(zeros, np.ones((3, 4)))["cosine"] == 0.0
    assert fidelity(zeros, np.ones((3, 4)))["sqnr_db"] == -math.inf
