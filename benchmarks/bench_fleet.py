"""``edgeq deploy`` over many boards: wall time with ``--forks 20`` against ``--forks 1``.

Twenty boards from an Ansible inventory on a loopback OpenSSH server (two ``sshd`` on
127.0.0.1, a generated key); each board's Python answers edgeq's probe 2.5 s late (a
wrapper that sleeps, as a board busy with its own work would: the time is the board's,
not the host's cores). The boards' venv is made once before the timed runs (two shared
workdirs), so each timed deploy is connect, probe, venv check and an unchanged model: the
SSH round trips a fleet deploy is made of.

Figures: ``forks1_s`` and ``forks20_s`` (wall seconds of the whole deploy), and ``ratio``
(forks 1 over forks 20; goal >= 5). Needs ``sshd`` (Debian: openssh-server); without it the
figures are None with the reason. Run: ``python benchmarks/bench_fleet.py``.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOALS = {"ratio": (">=", 5.0)}
REPO = Path(__file__).resolve().parents[1]
BOARDS = 20
DELAY_S = 2.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sshd(root: Path, port: int, user: str) -> subprocess.Popen[bytes]:
    conf = root / f"sshd_{port}.conf"
    conf.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_ed25519'}",
        f"PidFile {root / f'sshd_{port}.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "UsePAM no", "StrictModes no", "MaxStartups 64:30:128", "MaxSessions 64", "LogLevel ERROR",
        f"AllowUsers {user}", ""]))
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"sshd did not answer on port {port}")


def _model(folder: Path) -> Path:
    """The few-ms CNN of ``bench_device`` (random weights: only what travels matters here)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_device import build_model

    return Path(build_model(folder / "cnn96.tflite"))


def _run(model: Path, inventory: Path, forks: int) -> float:
    from edgeq.deployment.orchestrate import deploy

    t0 = time.perf_counter()
    report = deploy(model, inventory=inventory, forks=forks, store=False, progress=False)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError("a board failed: " + "; ".join(f"{b.label}: {b.error}" for b in report.failed))
    return seconds


def run() -> dict[str, Any]:
    if shutil.which("ssh") is None or not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        return {"forks1_s": None, "forks20_s": None, "ratio": None, "skipped": "OpenSSH server not installed"}
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    user = getpass.getuser()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-fleet-") as tmp:
        root = Path(tmp)
        for name in ("host_ed25519", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        shutil.copy(root / "id_ed25519.pub", root / "authorized_keys")
        host_pub = " ".join((root / "host_ed25519.pub").read_text().split()[:2])
        try:
            ports = [_free_port(), _free_port()]
            procs = [_sshd(root, p, user) for p in ports]
            (root / "known_hosts").write_text("".join(f"[127.0.0.1]:{p} {host_pub}\n" for p in ports))
            slow = root / "python-slow-board"
            slow.write_text(f'#!/bin/sh\nif [ "$3" = probe ]; then sleep {DELAY_S}; fi\nexec {sys.executable} "$@"\n')
            slow.chmod(0o755)
            lines = ["[all:vars]", "ansible_host=127.0.0.1", f"ansible_user={user}",
                     f"ansible_ssh_private_key_file={root / 'id_ed25519'}",
                     f"ansible_ssh_common_args='-o UserKnownHostsFile={root / 'known_hosts'}'",
                     f"ansible_python_interpreter={slow}", "", "[boards]"]
            lines += [f"pi{i:02d} ansible_port={ports[i % 2]} edgeq_workdir={root / f'wd{i % 2}'}"
                      for i in range(BOARDS)]
            inventory = root / "hosts"
            inventory.write_text("\n".join(lines) + "\n")
            model = _model(root)
            _run(model, inventory, forks=BOARDS)  # not timed: makes the two venvs and copies the model
            forks20 = _run(model, inventory, forks=20)
            forks1 = _run(model, inventory, forks=1)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    ratio = forks1 / forks20
    return {"boards": BOARDS, "board_delay_s": DELAY_S, "forks1_s": round(forks1, 2), "forks20_s": round(forks20, 2),
            "ratio": round(ratio, 2), "goals": GOALS, "ok": ratio >= GOALS["ratio"][1]}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
