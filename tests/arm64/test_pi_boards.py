"""The Raspberry Pis people run, each emulated: Raspberry Pi OS bookworm and trixie on a Pi 4 and a Pi 5 CPU.

bookworm-pi4 runs the full set (the other modules here, ids ``[bookworm-pi4]``). On each of the
other three (``bookworm-pi5``, ``trixie-pi4``, ``trixie-pi5``): ``edgeq-device info`` and
``profile``, and ``edgeq deploy`` over SSH into the root, which runs ``edgeq-device bench`` and
``eval`` there (its accuracy equal to x86's, int8 being bit-identical); on bookworm the same bench
and eval under tflite-runtime. The board itself says which CPU, OS and Python it is (qemu's
/proc/cpuinfo gives the emulated core's part number). trixie has Python 3.13, for which
tflite-runtime has no wheels: asking for it gives one line that says so. A 32-bit Raspberry Pi
OS (armv7l, bookworm armhf): no TFLite runtime on PyPI, and ``edgeq-device`` says what to do in
one line.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest

from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy

pytestmark = pytest.mark.arm64

CPU_NAMES = {"pi4": "Cortex-A72", "pi5": "Cortex-A76"}
PYTHONS = {"bookworm": "3.11.", "trixie": "3.13."}


@pytest.fixture(scope="module")
def files(pi_board, tiny_models_dir, eval_folder) -> dict[str, str]:
    return {"int8": pi_board.put(tiny_models_dir["int8"]), "data": pi_board.put(eval_folder)}


def _json(pi, argv: list[str], timeout: float = 600) -> dict[str, Any]:
    res = pi.run(argv, timeout=timeout)
    assert res.returncode == 0, f"{pi.id}: {res.stderr[-2000:]}"
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _is_the_board(pi, board: dict[str, Any]) -> None:
    """The measurement's board record names the emulated CPU, the OS release and its Python."""
    assert board["architecture"] == "aarch64"
    assert CPU_NAMES[pi.board] in (board["cpu_model"] or ""), board
    assert pi.os_name in (board["os"] or "").lower(), board
    assert board["python"].startswith(PYTHONS[pi.os_name]), board


def test_info_on_each_pi(pi_board, files, tiny_models_dir):
    doc = _json(pi_board, [pi_board.cli("litert"), "info", files["int8"], "--json", "-"])
    from edgeq_device.model.info import model_info

    here = model_info(tiny_models_dir["int8"]).to_dict()
    assert doc["schema"] == here["schema"] and doc["model_sha256"] == here["model_sha256"]
    assert doc["inputs"] == here["inputs"] and doc["outputs"] == here["outputs"]
    assert doc["op_counts"] == here["op_counts"] and doc["num_ops"] > 0 and doc["macs"] == here["macs"]
    assert doc["metadata"] == here["metadata"] and doc["metadata"]


def test_tflite_runtime_on_each_pi(pi_board, files, tiny_models_dir, eval_folder):
    """bookworm: tflite-runtime benches and evaluates as litert does (accuracy equal to x86's). trixie has
    Python 3.13, for which tflite-runtime has no wheels: asking for it gives one line that says so.
    (litert's bench and eval on each board run in test_deploy_to_each_pi, through edgeq deploy.)"""
    if pi_board.os_name == "trixie":
        assert pi_board.runtimes == ("litert",) and not (pi_board.root / "opt/edgeq/tflite-runtime").exists()
        res = pi_board.run([pi_board.cli("litert"), "bench", files["int8"], "--runtime", "tflite-runtime", "--runs",
                            "1", "--min-secs", "0"])
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode != 0 and len(lines) == 1, res.stderr
        assert "tflite-runtime has no wheels for Python 3.13" in lines[0] and "--runtime litert" in lines[0]
        return
    from edgeq_device.tasks.evaluation import evaluate

    assert "tflite-runtime" in pi_board.runtimes
    doc = _json(pi_board, [pi_board.cli("tflite-runtime"), "bench", files["int8"], "--json", "-", "--runs", "5",
                           "--min-secs", "0", "--warmup", "1", "--threads", "1"])
    assert doc["schema"] == "edgeq-device/bench/1" and doc["runtime"] == "tflite-runtime"
    assert doc["latency"]["count"] >= 5 and doc["latency"]["p50_us"] > 0
    _is_the_board(pi_board, doc["board"])
    x86 = evaluate(tiny_models_dir["int8"], eval_folder, workers=1, runtime="litert").to_dict()
    pi = _json(pi_board, [pi_board.cli("tflite-runtime"), "eval", files["int8"], files["data"], "--json", "-",
                          "--workers", "1", "--quiet", "--runtime", "tflite-runtime"])
    assert pi["schema"] == "edgeq-device/eval/1" and pi["runtime"] == "tflite-runtime"
    assert pi["images"] == x86["images"] == 50
    assert (pi["top1"], pi["top5"], pi["per_class"]) == (x86["top1"], x86["top5"], x86["per_class"])


def test_profile_on_each_pi(pi_board, files, tiny_models_dir):
    from edgeq_device.model.flatbuffer import read_flat_model

    doc = _json(pi_board, [pi_board.cli("litert"), "profile", files["int8"], "--json", "-", "--runs", "3",
                           "--min-secs", "0", "--threads", "1", "-q"], timeout=900)
    assert doc["schema"] == "edgeq-device/profile/1" and doc["runtime"] == "litert" and doc["whole_p50_us"] > 0
    _is_the_board(pi_board, doc["board"])
    ops = read_flat_model(tiny_models_dir["int8"]).main.operators
    assert [o["index"] for o in doc["operators"]] == [op.index for op in ops]
    assert sum(o["p50_us"] is not None for o in doc["operators"]) >= 0.95 * len(ops)


def test_deploy_to_each_pi(pi_board, sshd_in, tiny_models_dir, eval_folder, tmp_path):
    with sshd_in(pi_board) as sshd:
        board = Board("root@127.0.0.1", port=sshd["port"], label=pi_board.id, identity=str(sshd["identity"]),
                      ssh_options=(f"UserKnownHostsFile={sshd['known_hosts']}", "StrictHostKeyChecking=yes"),
                      python="/opt/edgeq/litert/bin/python", threads=1, timeout=900,
                      workdir=f"{pi_board.share_in}/home/.edgeq-device")
        t0 = time.perf_counter()
        res = deploy(tiny_models_dir["int8"], to=board, bench=True, evaluation=eval_folder, store=tmp_path / "r.db",
                     bench_args=["--runs", "5", "--min-secs", "0", "--warmup", "1"], progress=False)[pi_board.id]
        print(f"deploy + bench + eval into {pi_board.id}: {time.perf_counter() - t0:.1f} s; steps {res.timings}")
    assert res.ok, res.error
    assert res.board["machine"] == "aarch64"
    _is_the_board(pi_board, res.bench["board"])  # the sessions sshd started kept the board's CPU
    assert res.bench["schema"] == "edgeq-device/bench/1" and res.bench["runtime"] == "litert"
    assert res.bench["latency"]["count"] >= 5 and res.bench["latency"]["p50_us"] > 0
    from edgeq_device.tasks.evaluation import evaluate

    x86 = evaluate(tiny_models_dir["int8"], eval_folder, workers=1, runtime="litert").to_dict()
    assert res.eval["schema"] == "edgeq-device/eval/1" and res.eval["runtime"] == "litert"
    assert res.eval["images"] == x86["images"] == 50  # int8 is bit-identical: the same accuracy as x86
    assert (res.eval["top1"], res.eval["top5"], res.eval["per_class"]) == (x86["top1"], x86["top5"], x86["per_class"])
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert sorted(conn.execute("select device, kind from measurements")) == [(pi_board.id, "bench"),
                                                                                 (pi_board.id, "eval")]


# --- the 32-bit Raspberry Pi OS ------------------------------------------------------------------

def test_armv7l_says_what_is_missing_and_what_to_do(armv7l, tiny_models_dir):
    pi, site = armv7l
    model = pi.put(tiny_models_dir["int8"])
    env = ["env", f"PYTHONPATH={site}"]
    info = pi.run([*env, "python3", "-m", "edgeq_device.cli", "info", model, "--json", "-"])
    assert info.returncode == 0, info.stderr[-2000:]  # reading a model needs no runtime
    from edgeq_device.model.info import model_info

    here = model_info(tiny_models_dir["int8"]).to_dict()
    doc = json.loads(info.stdout)
    assert (doc["model_sha256"], doc["op_counts"], doc["inputs"]) == (here["model_sha256"], here["op_counts"],
                                                                    here["inputs"])
    machine = pi.run(["python3", "-c", "import platform, struct; print(platform.machine(), struct.calcsize('P'))"])
    assert machine.stdout.split() == ["armv7l", "4"]
    res = pi.run([*env, "python3", "-m", "edgeq_device.cli", "bench", model, "--runs", "1", "--min-secs", "0"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert "no ai-edge-litert or tflite-runtime wheels for 32-bit ARM (armv7l" in lines[0]
    assert "64-bit Raspberry Pi OS" in lines[0]

