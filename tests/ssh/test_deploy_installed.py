"""Deploy from a non-editable edgeq-device install: the board runs the installed bytes, nothing fetched."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parents[2]

_DEPLOY = """
import json, sys
import edgeq_device
from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy
target, python, workdir, ssh_config, model = sys.argv[1:6]
board = Board(target, label="pi", python=python, workdir=workdir, ssh_config=ssh_config)
res = deploy(model, to=board, bench=True, bench_args=["--runs", "5", "--min-secs", "0", "--warmup", "1"],
             store=False, progress=False)["pi"]
print(json.dumps({"ok": res.ok, "error": res.error, "host_device": edgeq_device.__file__,
                  "setup": res.actions.get("setup"), "bench": res.bench}))
"""

_HASHES = ("import hashlib, importlib.util as u, pathlib\n"
           "root = pathlib.Path(u.find_spec('edgeq_device').origin).parent\n"
           "for p in sorted(root.glob('*.py')):\n"
           "    print(p.name, hashlib.sha256(p.read_bytes()).hexdigest())\n")


def _hashes(folder: Path) -> str:
    return "".join(f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in sorted(folder.glob("*.py")))


def _deploy(loopback_ssh, board_python, installed_device: Path, workdir: Path, cache: Path, model: Path) -> dict:
    # The host imports edgeq_device from the non-editable install (first on the path), edgeq from this tree.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed_device), str(REPO)]), EDGEQ_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-c", _DEPLOY, loopback_ssh.target("board-a"), board_python,
                           str(workdir), str(loopback_ssh.ssh_config), str(model)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def installed_deploy(loopback_ssh, tiny_models_dir, board_python, installed_device, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("installed-deploy")
    workdir, cache = tmp / "board" / ".edgeq-device", tmp / "cache"
    out = _deploy(loopback_ssh, board_python, installed_device, workdir, cache, tiny_models_dir["int8"])
    return {"out": out, "workdir": workdir, "cache": cache}


def test_deploy_from_an_installed_distribution_ships_its_exact_bytes(loopback_ssh, installed_device,
                                                                     installed_deploy):
    host = _hashes(installed_device / "edgeq_device")
    assert host != _hashes(REPO / "device" / "edgeq_device")  # the installed copy differs from the source tree
    out, workdir = installed_deploy["out"], installed_deploy["workdir"]
    assert Path(out["host_device"]).parent == installed_device / "edgeq_device"
    assert out["ok"], out["error"]
    assert out["bench"]["latency"]["count"] >= 5  # the shipped code ran on the board
    # the wheel was packed from the installed distribution (not built from ./device)
    wheels = list((installed_deploy["cache"] / "wheels").glob("*/*.whl"))
    assert [p.parent.name.split("-")[1] for p in wheels] == ["installed"]
    # what the board's venv imports is byte for byte what the host has installed
    board = subprocess.run(["ssh", "-F", str(loopback_ssh.ssh_config), "-o", "BatchMode=yes",
                            loopback_ssh.target("board-a"),
                            shlex.join([str(workdir / "venv" / "bin" / "python"), "-c", _HASHES])],
                           capture_output=True, text=True, timeout=60)
    assert board.returncode == 0, board.stderr
    assert board.stdout == host


def test_a_changed_file_in_the_boards_venv_stops_the_deploy(loopback_ssh, tiny_models_dir, board_python,
                                                            installed_device, installed_deploy):
    workdir = installed_deploy["workdir"]
    assert installed_deploy["out"]["ok"]
    site = next((workdir / "venv" / "lib").glob("python3*/site-packages"))
    cli = site / "edgeq_device" / "cli" / "commands.py"
    cli.write_text(cli.read_text() + "\n# changed on the board\n")
    out = _deploy(loopback_ssh, board_python, installed_device, workdir, installed_deploy["cache"],
                  tiny_models_dir["int8"])
    assert not out["ok"] and out["bench"] is None
    assert "not the shipped wheel" in out["error"] and "edgeq_device/cli/commands.py" in out["error"]
    assert str(workdir / "venv") in out["error"]  # the fix names the venv to remove
