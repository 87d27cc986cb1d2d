"""The board agent and the watcher run here as the board runs them: subprocesses of their own files."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from edgeq.deployment import agent, watch
from edgeq.deployment.payload import agent_program, file_sha256, tar_folder, tree_sha256, watch_program
from edgeq.errors import DEPLOY_ERROR_KINDS

AGENT = Path(agent.__file__)
WATCH = Path(watch.__file__)
# The agent is stdlib-only: run it without the host's PYTHONPATH, as a board would.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_agent(*args: str, stdin: bytes = b"", python: str = sys.executable) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([python, str(AGENT), *args], input=stdin, capture_output=True, env=ENV,
                          timeout=300)
    lines = proc.stdout.decode().strip().splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_programs_sent_are_the_module_files():
    assert agent_program() == AGENT.read_text(encoding="utf-8")
    assert watch_program() == WATCH.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", [AGENT, WATCH], ids=["agent", "watch"])
def test_the_board_programs_parse_as_python_3_7_and_import_only_the_standard_library(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 7))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_every_kind_the_agent_fails_with_is_a_documented_deploy_error_kind():
    tree = ast.parse(AGENT.read_text(encoding="utf-8"))
    kinds = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "fail":
            arg = node.args[1]
            if isinstance(arg, ast.Constant):
                kinds.add(arg.value)
            else:  # "no-runtime" if ... else "setup"
                assert isinstance(arg, ast.IfExp)
                kinds |= {arg.body.value, arg.orelse.value}  # type: ignore[attr-defined]
    assert kinds >= {"transfer", "setup", "no-venv", "no-runtime", "missing-deps", "remote"}
    assert kinds <= set(DEPLOY_ERROR_KINDS)


def test_probe_of_a_new_workdir(tmp_path):
    code, info = run_agent("probe", str(tmp_path / "work"))
    assert code == 0
    assert info["workdir"] == str(tmp_path / "work")
    assert info["python_version"].count(".") == 2 and info["machine"]
    assert info["manifest"] == {} and info["install"] is None
    assert set(info["modules"]) >= {"numpy", "ai_edge_litert", "tflite_runtime"}


def test_probe_runs_as_python_dash_c_with_the_text_too(tmp_path):
    proc = subprocess.run([sys.executable, "-c", agent_program(), "probe", str(tmp_path)], capture_output=True,
                          env=ENV, check=True)
    assert json.loads(proc.stdout)["workdir"] == str(tmp_path)


def test_recv_a_file_checks_its_hash_and_records_it(tmp_path):
    work = tmp_path / "work"
    data = b"TFL3 model bytes" * 1000
    code, out = run_agent("recv", str(work), "models/m.tflite", sha(data), "file", stdin=data)
    assert code == 0 and out == {"path": str(work / "models" / "m.tflite"), "sha256": sha(data)}
    assert (work / "models" / "m.tflite").read_bytes() == data
    assert file_sha256(work / "models" / "m.tflite") == sha(data)
    assert json.loads((work / "manifest.json").read_text()) == {"models/m.tflite": sha(data)}
    # a new version replaces the old one; the probe then reports it
    new = b"another model"
    assert run_agent("recv", str(work), "models/m.tflite", sha(new), "file", stdin=new)[0] == 0
    assert (work / "models" / "m.tflite").read_bytes() == new
    assert run_agent("probe", str(work))[1]["manifest"] == {"models/m.tflite": sha(new)}
    assert sorted(p.name for p in (work / "models").iterdir()) == ["m.tflite"]  # no temporary left behind


def test_recv_refuses_bytes_with_another_hash(tmp_path):
    work = tmp_path / "work"
    good = b"the model"
    run_agent("recv", str(work), "models/m.tflite", sha(good), "file", stdin=good)
    code, out = run_agent("recv", str(work), "models/m.tflite", sha(good), "file", stdin=b"the mod")
    assert code == agent.EXIT_FAILED == 3
    assert set(out) == {"error", "kind", "fix"} and out["kind"] == "transfer"
    assert "models/m.tflite arrived with sha256" in out["error"] and "run again" in out["fix"]
    assert (work / "models" / "m.tflite").read_bytes() == good  # the old copy stays
    assert json.loads((work / "manifest.json").read_text()) == {"models/m.tflite": sha(good)}


def test_recv_a_folder_as_tar_gives_the_same_tree_hash_as_the_host(tmp_path):
    src = tmp_path / "data"
    (src / "cat").mkdir(parents=True)
    (src / "dog").mkdir()
    (src / "empty").mkdir()  # an empty class folder travels too
    (src / "cat" / "a.png").write_bytes(b"a")
    (src / "dog" / "b.png").write_bytes(b"bb")
    work = tmp_path / "work"
    code, out = run_agent("recv", str(work), "data/data", tree_sha256(src), "tar", stdin=tar_folder(src))
    assert code == 0 and out["sha256"] == tree_sha256(src)
    got = work / "data" / "data"
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*")) == [
        "cat", "cat/a.png", "dog", "dog/b.png", "empty"]
    assert tree_sha256(got) == tree_sha256(src)
    assert agent.tree_sha(str(got)) == tree_sha256(src)  # the board's function, the host's function


def test_recv_refuses_an_archive_entry_outside_the_folder(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    code, out = run_agent("recv", str(tmp_path / "work"), "data/d", "0" * 64, "tar", stdin=buf.getvalue())
    assert code == 3 and out["kind"] == "remote" and "unsafe entry" in out["error"]
    assert not (tmp_path / "work" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("args", [["bogus", "/tmp/w"], ["recv", "/tmp/w", "only-a-path"], []])
def test_a_wrong_operation_is_an_error_object(args):
    code, out = run_agent(*args)
    assert code == 3 and out["kind"] == "remote" and "probe WORKDIR" in out["fix"]


def test_watch_passes_the_exit_status_through():
    # stdin stays open (as the host holds it): the command ends by itself with its own status
    proc = subprocess.Popen([sys.executable, str(WATCH), sys.executable, "-c", "import sys; sys.exit(7)"],
                            stdin=subprocess.PIPE, env=ENV)
    try:
        assert proc.wait(timeout=60) == 7
    finally:
        assert proc.stdin is not None
        proc.stdin.close()


@pytest.mark.slow
def test_watch_stops_the_command_when_stdin_closes():
    proc = subprocess.Popen([sys.executable, str(WATCH), sys.executable, "-c", "import time; time.sleep(60)"],
                            stdin=subprocess.PIPE, env=ENV)
    time.sleep(1.0)
    assert proc.poll() is None  # stdin open: the command runs on
    t0 = time.monotonic()
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 10
    assert watch.exit_status(-signal.SIGKILL) == 128 + signal.SIGKILL and watch.exit_status(2) == 2


@pytest.mark.slow
def test_setup_makes_a_venv_with_the_wheel_then_reuses_it(tmp_path):
    """setup with this machine's Python (it has numpy, pillow, click, flatbuffers and LiteRT): no index."""
    from edgeq.deployment.wheel import build_device_wheel

    wheel = build_device_wheel()
    work = tmp_path / "work"
    rel = f"wheels/{wheel.name}"
    wheel_sha = file_sha256(wheel)
    assert run_agent("recv", str(work), rel, wheel_sha, "file", stdin=wheel.read_bytes())[0] == 0
    code, out = run_agent("setup", str(work), rel, wheel_sha, "litert", "1", "")
    assert code == 0, out
    assert out["action"] == "created" and out["install"] == "no-deps" and out["runtime"]["name"]
    assert Path(out["python"]) == work / "venv" / "bin" / "python"
    # this python's pip (>= 22.3) installed into the venv: the venv was made without a pip of its own
    assert not list((work / "venv").glob("lib/python*/site-packages/pip"))
    marker = json.loads((work / "venv" / "edgeq-install.json").read_text())
    assert marker["wheel_sha"] == wheel_sha and marker["install"] == "no-deps"
    code, again = run_agent("setup", str(work), rel, wheel_sha, "litert", "1", "")
    assert code == 0 and again["action"] == "reused" and again["install"] == "none"
    # a changed file in the venv's edgeq_device is found against the wheel's RECORD
    purelib = subprocess.run([out["python"], "-c", "import edgeq_device, os; print(os.path.dirname("
                              "os.path.dirname(edgeq_device.__file__)))"], capture_output=True, text=True,
                             env=ENV, check=True).stdout.strip()
    assert agent.record_mismatches(purelib, str(work / rel)) == []
    (Path(purelib) / "edgeq_device" / "measure" / "bench.py").write_text("# changed\n")
    assert agent.record_mismatches(purelib, str(work / rel)) == ["edgeq_device/measure/bench.py"]
    code, bad = run_agent("setup", str(work), rel, wheel_sha, "litert", "1", "")
    assert code == 3 and bad["kind"] == "setup" and "edgeq_device/measure/bench.py" in bad["error"]


def test_a_board_python_without_pip_makes_the_venv_with_ensurepip(tmp_path):
    """A board's python with no pip of its own: the venv gets pip from ensurepip and pip runs from it."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    wheel = tmp_path / "edgeq_device-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("edgeq_device/__init__.py", "")
    work = tmp_path / "work"
    assert run_agent("recv", str(work), "wheels/w.whl", sha(wheel.read_bytes()), "file",
                     stdin=wheel.read_bytes(), python=python)[0] == 0
    code, out = run_agent("setup", str(work), "wheels/w.whl", sha(wheel.read_bytes()), "litert", "1", "",
                          python=python)
    # offline, without a TFLite runtime & co: refused in one JSON line, after the venv was made with its own pip
    assert code == 3 and out["kind"] == "no-runtime" and "lacks" in out["error"], out
    assert list((work / "venv").glob("lib/python*/site-packages/pip"))
