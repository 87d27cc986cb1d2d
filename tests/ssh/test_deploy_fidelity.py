"""deploy(reference=...): a board's fidelity to the float model, measured there without TensorFlow, stored."""

from __future__ import annotations

import numpy as np
import pytest
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.run.inference_pool import predict_arrays
from edgeq_device.tasks.fidelity import evaluate_fidelity
from edgeq_device.tasks.task_loop import input_keys, output_keys

from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy
from edgeq.errors import DataError, InvalidArgumentError
from edgeq.store.db import ResultsStore, file_sha256

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def compare_folder(tiny_models_dir, tmp_path_factory):
    """What edgeq compare leaves beside its results: inputs.npz and the float model's outputs on them."""
    folder = tmp_path_factory.mktemp("compare_out")
    flat = read_flat_model(tiny_models_dir["float32"].read_bytes())
    shape = tuple(int(d) for d in flat.main.tensors[flat.main.inputs[0]].shape[1:])
    x = np.random.default_rng(3).uniform(0, 1, (40, *shape)).astype(np.float32)
    ref = predict_arrays(tiny_models_dir["float32"].read_bytes(), x, workers=1)
    np.savez(folder / "inputs.npz", **{input_keys(flat)[0]: x})
    np.savez(folder / "reference.npz", **{output_keys(flat)[0]: ref})
    return folder


def test_the_board_measures_fidelity_to_the_reference_and_it_is_stored(loopback_ssh, tiny_models_dir, board_python,
                                                                         compare_folder, tmp_path):
    db = tmp_path / "results.db"
    board = Board(loopback_ssh.target("board-a"), label="pi-fidelity", python=board_python,
                  workdir=str(tmp_path / "board" / ".edgeq-device"), ssh_config=str(loopback_ssh.ssh_config))
    report = deploy(tiny_models_dir["int8"], to=board, reference=compare_folder, store=db, progress=False)
    res = report["pi-fidelity"]
    assert res.ok, res.error
    assert res.fidelity is not None and res.fidelity["schema"] == "edgeq-device/fidelity/1"
    here = evaluate_fidelity(tiny_models_dir["int8"], compare_folder / "inputs.npz", compare_folder / "reference.npz")
    (board_out,) = res.fidelity["outputs"]
    assert res.fidelity["samples"] == 40
    assert board_out["sqnr_db"] == pytest.approx(here.outputs[0].sqnr_db, abs=1e-6)
    assert board_out["argmax_agreement"] == pytest.approx(here.outputs[0].argmax_agreement)
    assert 5 < board_out["sqnr_db"] < 80  # int8 against float: close, not identical
    assert "SQNR" in str(res) and res.timings["fidelity"] > 0
    with ResultsStore(db) as st:
        (m,) = st.runs(device="pi-fidelity")
    assert m.kind == "eval" and m.task == "fidelity" and m.source == "deploy" and list(res.stored_ids) == [m.id]
    assert m.sqnr_db == pytest.approx(board_out["sqnr_db"]) and m.model_sha256 == file_sha256(tiny_models_dir["int8"])
    again = deploy(tiny_models_dir["int8"], to=board, inputs=compare_folder / "inputs.npz",
                   reference=compare_folder / "reference.npz", store=False, progress=False)["pi-fidelity"]
    assert again.ok and again.actions.get("fidelity") and again.fidelity["outputs"][0]["sqnr_db"] == pytest.approx(
        board_out["sqnr_db"], abs=1e-6)


def test_a_reference_that_does_not_fit_the_model_fails_before_connecting(tiny_models_dir, compare_folder, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, nope=np.zeros((40, 10), np.float32))
    with pytest.raises(DataError, match=r"no array for the model.s output"):
        deploy(tiny_models_dir["int8"], to="pi@192.0.2.1", inputs=compare_folder / "inputs.npz", reference=bad,
               store=False, progress=False)
    with pytest.raises(InvalidArgumentError, match="inputs"):
        deploy(tiny_models_dir["int8"], to="pi@192.0.2.1", reference=compare_folder / "reference.npz",
               store=False, progress=False)
