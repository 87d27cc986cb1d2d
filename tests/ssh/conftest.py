"""A real OpenSSH server on 127.0.0.1 for the deploy tests.

Two ``sshd`` processes (two high free ports) with their own host keys and
config in a temporary folder, key-only login for the current user (root here:
``PermitRootLogin prohibit-password``), a generated ed25519 client key, and an
ssh_config with ``Host`` aliases (``board-a``, ``board-b``) and a known_hosts
holding the servers' keys, so the client checks host keys as it would for a user.
Started once per session; tests skip with the reason when sshd cannot run.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


@dataclass
class LoopbackSSH:
    """The running servers and what a client needs to reach them."""

    root: Path
    ports: dict[str, int]          # alias -> port
    user: str
    identity: Path                 # authorized client key
    wrong_identity: Path           # a key the servers do not accept
    ssh_config: Path               # Host board-a / board-b entries
    known_hosts: Path

    def target(self, alias: str = "board-a") -> str:
        return f"{self.user}@{alias}"


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on port {port}")


@pytest.fixture(scope="session")
def loopback_ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSSH]:
    """Two key-only sshd instances on 127.0.0.1 (aliases board-a and board-b)."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server/client not installed (run: bash tests/setup_system.sh)")
    root = tmp_path_factory.mktemp("sshd")
    user = getpass.getuser()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
    _keygen(root / "host_ed25519", "edgeq-test-host")
    _keygen(root / "id_ed25519", "edgeq-test-client")
    _keygen(root / "wrong_ed25519", "edgeq-test-wrong")
    shutil.copy(root / "id_ed25519.pub", root / "authorized_keys")
    host_pub = (root / "host_ed25519.pub").read_text().split()[:2]
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    known, cfg = [], []
    try:
        for alias in ("board-a", "board-b"):
            port = free_port()
            conf = root / f"sshd_{alias}.conf"
            conf.write_text("\n".join([
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {root / 'host_ed25519'}",
                f"PidFile {root / f'sshd_{alias}.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "MaxStartups 64:30:128",
                "MaxSessions 64",
                "LogLevel ERROR",
                f"AllowUsers {user}",
                # A board's session, not this machine's login: bash reads ~/.bashrc for a command
                # over ssh only at shell level 1, and the user running the suite may start pyenv,
                # conda or a prompt there (pyenv init: ~0.1 s of CPU per session, ~13% of the
                # 100-board fleet test's). The boards' pythons are given by absolute path.
                "SetEnv SHLVL=1",
                "",
            ]))
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(proc)
            try:
                _wait_port(port, proc, time.monotonic() + 15)
            except RuntimeError as exc:
                pytest.skip(f"cannot start sshd: {exc}")
            ports[alias] = port
            known.append(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}")
            cfg += [f"Host {alias}", "  HostName 127.0.0.1", f"  Port {port}", f"  User {user}",
                    f"  IdentityFile {root / 'id_ed25519'}", "  IdentitiesOnly yes",
                    f"  UserKnownHostsFile {root / 'known_hosts'}", "  StrictHostKeyChecking yes", ""]
        (root / "known_hosts").write_text("\n".join(known) + "\n")
        (root / "ssh_config").write_text("\n".join(cfg))
        info = LoopbackSSH(root, ports, user, root / "id_ed25519", root / "wrong_ed25519", root / "ssh_config",
                           root / "known_hosts")
        probe = subprocess.run(["ssh", "-F", str(info.ssh_config), "-o", "BatchMode=yes", info.target(), "true"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            pytest.skip(f"cannot log in to the loopback sshd: {probe.stderr.strip()}")
        yield info
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def tiny_models_dir(digits_edgeq_tflite: dict[str, Path]) -> dict[str, Path]:
    """The session's digits CNN as float32, int8 and int8-io .tflite with edgeq metadata (made once per session)."""
    return digits_edgeq_tflite


@pytest.fixture(scope="session")
def eval_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 real MNIST test digits in class folders."""
    return tiny_models.small_eval_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def board_python() -> str:
    """The loopback board's Python: this test run's venv python, which has ai_edge_litert.

    edgeq makes its venv from it with --system-site-packages and, because it is itself a
    venv, lets the new venv see its packages; so the board installs edgeq-device with
    --no-deps and needs no network.
    """
    return sys.executable
