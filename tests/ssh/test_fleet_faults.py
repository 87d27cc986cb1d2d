"""A hundred boards from an Ansible inventory, with real faults, and --resume finishing the rest.

The boards are inventory hosts on the loopback sshd (two servers, fifty hosts each) plus
faults that really happen on a board: closed ports (unreachable), a Python that hangs past
the board's timeout, an ssh session killed in the middle of the model's upload (retried),
a workdir on a 64 KiB tmpfs (the disk fills), and a Python whose machine is i686
(``setarch linux32``). Every board must end in its own state, the counts must say so, every
state must be in the store, and ``edgeq deploy --resume RUN_ID`` (after the faults are
fixed) must run exactly the boards that did not finish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _wait_port, free_port

from edgeq.deployment.orchestrate import deploy
from edgeq.store.db import ResultsStore

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

N = 100
UNREACHABLE = ("b010", "b011", "b012", "b060", "b061")
HANGING = ("b020", "b070")
KILLED_MID_UPLOAD = "b030"
OUT_OF_DISK = "b040"
WRONG_ARCH = "b080"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _hanging_python(path: Path, real: str) -> Path:
    # the agent is run as PYTHON -c PROGRAM OP WORKDIR ...: the probe never answers
    return _script(path, f'if [ "$3" = probe ]; then exec sleep 30; fi\nexec {real} "$@"\n')


def _killing_python(path: Path, real: str, mark: Path) -> Path:
    # The first upload of the model: read a little of it, then kill this ssh connection's sshd
    # process (the first sshd above this one): the board drops off mid-upload.
    return _script(path, f"""if [ "$3" = recv ] && [ ! -e {mark} ]; then
  case "$5" in models/*)
    touch {mark}; head -c 1000 >/dev/null
    p=$$
    while [ "$p" -gt 1 ]; do
      p=$(awk '{{print $4}}' /proc/$p/stat)
      if [ "$(cat /proc/$p/comm)" = sshd ]; then kill -9 "$p"; break; fi
    done
    sleep 5; exit 1;;
  esac
fi
exec {real} "$@"
""")


def _start_sshd(loopback_ssh, port: int) -> subprocess.Popen[bytes]:
    """One more sshd like the fixture's, on ``port`` (the board that was unreachable comes back)."""
    conf = loopback_ssh.root / f"sshd_{port}.conf"
    text = (loopback_ssh.root / "sshd_board-a.conf").read_text()
    lines = [f"Port {port}" if ln.startswith("Port ") else
             f"PidFile {loopback_ssh.root / f'sshd_{port}.pid'}" if ln.startswith("PidFile ") else ln
             for ln in text.splitlines()]
    conf.write_text("\n".join(lines) + "\n")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_port(port, proc, time.monotonic() + 15)
    return proc


def test_a_hundred_boards_with_faults_end_each_in_its_state_and_resume_finishes_them(
        loopback_ssh, tiny_models_dir, board_python, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the out-of-disk board needs a tmpfs mount (root)")
    closed = {label: free_port() for label in UNREACHABLE}  # nothing listens there (yet)
    host_pub = (loopback_ssh.root / "host_ed25519.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    ports = [*loopback_ssh.ports.values(), *closed.values()]
    known.write_text("".join(f"[127.0.0.1]:{p} {host_pub[0]} {host_pub[1]}\n" for p in ports))
    bins = tmp_path / "bin"
    bins.mkdir()
    hang_py = _hanging_python(bins / "python-hangs", board_python)
    kill_py = _killing_python(bins / "python-drops", board_python, tmp_path / "dropped-once")
    arch_py = _script(bins / "python-i686", f'exec setarch linux32 {board_python} "$@"\n')
    disk = tmp_path / "tiny-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        port_a, port_b = loopback_ssh.ports["board-a"], loopback_ssh.ports["board-b"]
        lines = ["[all:vars]", "ansible_host=127.0.0.1", f"ansible_user={loopback_ssh.user}",
                 f"ansible_ssh_private_key_file={loopback_ssh.identity}",
                 f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'",
                 f"ansible_python_interpreter={board_python}", "edgeq_timeout=120", "", "[rack_a]"]
        for i in range(N):
            name = f"b{i:03d}"
            if i == N // 2:
                lines += ["", "[rack_b]"]
            host = [name, f"ansible_port={closed.get(name, port_a if i < N // 2 else port_b)}",
                    f"edgeq_workdir={tmp_path / f'wd{i % 2}'}"]
            if name in HANGING:
                host += [f"ansible_python_interpreter={hang_py}", "edgeq_timeout=5"]
            elif name == KILLED_MID_UPLOAD:
                host += [f"ansible_python_interpreter={kill_py}", f"edgeq_workdir={tmp_path / 'wd-drop'}"]
            elif name == OUT_OF_DISK:
                host.append(f"edgeq_workdir={disk}")
            elif name == WRONG_ARCH:
                host.append(f"ansible_python_interpreter={arch_py}")
            lines.append(" ".join(host))
        inventory = tmp_path / "hosts"
        inventory.write_text("\n".join([*lines, "", "[fleet:children]", "rack_a", "rack_b", ""]))
        db = tmp_path / "fleet.db"
        said: list[tuple[str, str]] = []
        t0 = time.perf_counter()
        report = deploy(tiny_models_dir["int8"], inventory=inventory, forks=20, store=db,
                        progress=lambda label, text: said.append((label, text)))
        first_run_s = time.perf_counter() - t0
        print(f"\n{N} boards, forks 20: first run {first_run_s:.1f} s; {report.counts_line()}")
        steps = ("connect", "probe", "setup", "upload_model", "total")
        oks = [b for b in report if b.ok]
        print("  mean seconds per ok board: " + ", ".join(
            f"{s} {sum(b.timings.get(s, 0.0) for b in oks) / len(oks):.2f}" for s in steps))
        assert len(report) == N
        state = {b.label: b for b in report}
        for label in UNREACHABLE:
            assert state[label].state == "unreachable" and "connection refused" in state[label].error
        for label in HANGING:
            b = state[label]
            assert b.state == "timed-out" and b.step == "probe", (b.state, b.step, b.error)
            assert b.timings["total"] < 5 + 15  # cut at its timeout, not left to hang
        drop = state[KILLED_MID_UPLOAD]
        assert drop.ok and drop.attempts == 2, (drop.error, drop.attempts)
        assert any(label == KILLED_MID_UPLOAD and text.startswith("retrying") for label, text in said)
        full = state[OUT_OF_DISK]
        assert full.state == "failed" and full.error_kind == "no-space" and full.step == "setup", full.error
        assert "no space left" in full.error
        arch = state[WRONG_ARCH]
        assert arch.state == "failed" and arch.error_kind == "arch" and arch.step == "probe"
        assert "i686" in arch.error
        assert report.counts == {"ok": N - 9, "failed": 2, "unreachable": 5, "timed-out": 2, "interrupted": 0}
        assert report.summary().splitlines()[-1].startswith(
            f"{N} boards: {N - 9} ok, 2 failed, 5 unreachable, 2 timed-out, 0 interrupted in ")
        # many boards: counts, not a line per step and board
        assert len(said) < 60 and any(label == "fleet" and text.startswith(f"{N}/{N} finished") for label, text in said)
        assert {b.groups for b in report} == {("fleet", "rack_a"), ("fleet", "rack_b")}
        # every board's state is in the store under the run id
        with ResultsStore(db) as store:
            run = store.deploy_run(report.run_id)
        assert run is not None and len(run["boards"]) == N
        assert {label: row["state"] for label, row in run["boards"].items()} == {b.label: b.state for b in report}
        assert run["boards"][OUT_OF_DISK]["step"] == "setup" and run["boards"]["b099"]["groups"] == ["fleet", "rack_b"]

        # fix the faults: the closed ports get their sshd, the pythons are real, the disk is real
        for port in closed.values():
            servers.append(_start_sshd(loopback_ssh, port))
        for wrapper in (hang_py, arch_py):
            _script(wrapper, f'exec {board_python} "$@"\n')
        subprocess.run(["umount", str(disk)], check=True)
        disk.rmdir()
        disk.symlink_to(tmp_path / "wd0")  # the venv there is made already
        proc = subprocess.run([sys.executable, "-m", "edgeq.cli", "deploy", str(tiny_models_dir["int8"]),
                               "--resume", report.run_id, "--db", str(db), "--forks", "20", "--report",
                               str(tmp_path / "resumed.json")],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "EDGEQ_PROGRESS": "0"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{N} boards: {N} ok, 0 failed, 0 unreachable, 0 timed-out, 0 interrupted" in proc.stdout
        assert f"(run {report.run_id})" in proc.stdout
        with ResultsStore(db) as store:
            run = store.deploy_run(report.run_id)
        assert {row["state"] for row in run["boards"].values()} == {"ok"}
        # only the nine that had not finished ran again; the others are reported from the first run
        resumed = json.loads((tmp_path / "resumed.json").read_text())
        rerun = {b["label"] for b in resumed["boards"] if "resume" not in b["actions"]}
        assert rerun == set(UNREACHABLE) | set(HANGING) | {OUT_OF_DISK, WRONG_ARCH}
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)
        if disk.is_mount():
            subprocess.run(["umount", "-l", str(disk)], check=False)

