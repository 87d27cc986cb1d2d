"""End to end: an sshd inside the emulated Raspberry Pi, and ``edgeq deploy`` into it over SSH."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pytest

from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy

pytestmark = [pytest.mark.arm64, pytest.mark.ssh]


@pytest.fixture(scope="module")
def pi_sshd(emulated_pi, sshd_in) -> Iterator[dict]:
    """sshd (aarch64, emulated) of the bookworm-pi4 root, key-only root login on a loopback port."""
    with sshd_in(emulated_pi) as sshd:
        yield sshd


def test_deploy_bench_and_eval_on_the_emulated_pi(emulated_pi, pi_sshd, tiny_models_dir, eval_folder, tmp_path):
    board = Board("root@127.0.0.1", port=pi_sshd["port"], label="pi4-emulated", identity=str(pi_sshd["identity"]),
                  ssh_options=(f"UserKnownHostsFile={pi_sshd['known_hosts']}", "StrictHostKeyChecking=yes"),
                  python="/opt/edgeq/litert/bin/python", threads=1, timeout=900,
                  workdir=f"{emulated_pi.share_in}/home/.edgeq-device")
    db = tmp_path / "results.db"
    t0 = time.perf_counter()
    report = deploy(tiny_models_dir["int8"], to=board, bench=True, evaluation=eval_folder, store=db,
                    bench_args=["--runs", "10", "--min-secs", "0", "--warmup", "1"], progress=False)
    seconds = time.perf_counter() - t0
    res = report["pi4-emulated"]
    assert res.ok, res.error
    print(f"\ndeploy + bench + eval into the emulated Pi: {seconds:.1f} s; steps {res.timings}")
    assert res.board["machine"] == "aarch64"
    assert res.bench["schema"] == "edgeq-device/bench/1" and res.bench["board"]["architecture"] == "aarch64"
    assert res.bench["runtime"] == "litert" and res.bench["threads"] == 1
    assert res.eval["schema"] == "edgeq-device/eval/1" and res.eval["images"] == 50
    # the same int8 model on the same images on x86: the same accuracy
    from edgeq_device.tasks.evaluation import evaluate

    host = evaluate(tiny_models_dir["int8"], eval_folder, workers=1, runtime="litert")
    assert res.eval["top1"] == host.to_dict()["top1"]
    # the model landed inside the arm64 root, byte for byte
    on_pi = emulated_pi.share / "home" / ".edgeq-device" / "models" / tiny_models_dir["int8"].name
    assert on_pi.read_bytes() == Path(tiny_models_dir["int8"]).read_bytes()
    with sqlite3.connect(db) as conn:
        rows = sorted(conn.execute("select device, kind from measurements").fetchall())
    assert rows == [("pi4-emulated", "bench"), ("pi4-emulated", "eval")]
    # a second deploy reuses the venv and copies nothing; it profiles every operator on the Pi
    again = deploy(tiny_models_dir["int8"], to=board, evaluation=eval_folder, profile=True, store=False,
                   progress=False)["pi4-emulated"]
    assert again.ok and again.actions["upload_model"] == "unchanged" and "venv reused" in again.actions["setup"]
    prof = again.profile_result
    assert prof is not None and prof.board.architecture == "aarch64" and prof.threads == 1
    assert prof.operators and prof.coverage == 1.0 and prof.whole_p50_us and prof.whole_p50_us > 0
    print(f"profile on the emulated Pi (qemu: not a Pi's speed): {again.timings['profile']:.1f} s\n{prof}")


def test_deploy_reference_measures_fidelity_on_the_emulated_pi(emulated_pi, pi_sshd, tiny_models_dir, tmp_path):
    """The board's fidelity to the float model, from the inputs and reference compare leaves, measured on aarch64."""
    import numpy as np
    from edgeq_device.model.flatbuffer import read_flat_model
    from edgeq_device.run.inference_pool import predict_arrays
    from edgeq_device.tasks.fidelity import evaluate_fidelity
    from edgeq_device.tasks.task_loop import input_keys, output_keys

    folder = tmp_path / "compare_out"
    folder.mkdir()
    flat = read_flat_model(tiny_models_dir["float32"].read_bytes())
    shape = tuple(int(d) for d in flat.main.tensors[flat.main.inputs[0]].shape[1:])
    x = np.random.default_rng(4).uniform(0, 1, (20, *shape)).astype(np.float32)
    np.savez(folder / "inputs.npz", **{input_keys(flat)[0]: x})
    np.savez(folder / "reference.npz",
             **{output_keys(flat)[0]: predict_arrays(tiny_models_dir["float32"].read_bytes(), x, workers=1)})
    board = Board("root@127.0.0.1", port=pi_sshd["port"], label="pi4-emulated", identity=str(pi_sshd["identity"]),
                  ssh_options=(f"UserKnownHostsFile={pi_sshd['known_hosts']}", "StrictHostKeyChecking=yes"),
                  python="/opt/edgeq/litert/bin/python", threads=1, timeout=900,
                  workdir=f"{emulated_pi.share_in}/home/.edgeq-device")
    db = tmp_path / "results.db"
    res = deploy(tiny_models_dir["int8"], to=board, reference=folder, store=db, progress=False)["pi4-emulated"]
    assert res.ok, res.error
    assert res.fidelity["schema"] == "edgeq-device/fidelity/1" and res.fidelity["board"]["architecture"] == "aarch64"
    here = evaluate_fidelity(tiny_models_dir["int8"], folder / "inputs.npz", folder / "reference.npz")
    (out,) = res.fidelity["outputs"]
    print(f"\nfidelity of int8 to float32 on the emulated Pi: {out['sqnr_db']:.2f} dB (x86: "
          f"{here.outputs[0].sqnr_db:.2f} dB), {res.timings['fidelity']:.1f} s")
    assert out["sqnr_db"] == pytest.approx(here.outputs[0].sqnr_db, rel=0.02)
    assert out["argmax_agreement"] == pytest.approx(here.outputs[0].argmax_agreement, abs=0.05)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select kind, task from measurements").fetchall() == [("eval", "fidelity")]
