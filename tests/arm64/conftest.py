"""Emulated Raspberry Pis: the Debian roots built by scripts/arm64_rootfs.sh, under qemu user mode.

Four boards people run: Raspberry Pi OS bookworm (Python 3.11, LiteRT and tflite-runtime venvs)
and trixie (Python 3.13, LiteRT only), each on a Pi 4 CPU (``QEMU_CPU=cortex-a72``) and a Pi 5 CPU
(``cortex-a76``); ids ``bookworm-pi4`` ... ``trixie-pi5``. :func:`emulated_pi` is bookworm-pi4,
which runs the full set; :func:`pi_board` is parametrized over the other three, which run a
smaller one (test_pi_boards.py). The roots are built on
the host when missing (about a minute each) and cached as folders under ~/.cache/edgeq/ (keyed on
the recipe). A host that cannot run them (not root, no qemu >= 10) skips with the reason, which
fails under CI=true (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "arm64_rootfs.sh"
VENVS = {"litert": "/opt/edgeq/litert", "tflite-runtime": "/opt/edgeq/tflite-runtime"}
CPUS = {"pi4": "cortex-a72", "pi5": "cortex-a76"}
BOARDS = ["bookworm-pi4", "bookworm-pi5", "trixie-pi4", "trixie-pi5"]
OS_RUNTIMES = {"bookworm": ("litert", "tflite-runtime"), "trixie": ("litert",), "bookworm-armhf": ()}
OS_PYTHON = {"bookworm": "3.11", "trixie": "3.13", "bookworm-armhf": "3.11"}


def _load_tiny_models():  # shared with the ssh tests
    spec = importlib.util.spec_from_file_location("edgeq_test_tiny_models", REPO / "tests" / "ssh" / "tiny_models.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def script(*args: str, timeout: float = 3600, pi_os: str = "bookworm", cpu: str | None = None,
           extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """scripts/arm64_rootfs.sh ARGS for one OS (and CPU); the host's pip is this Python's."""
    env = {**os.environ, "EDGEQ_PI_OS": pi_os, "HOST_PY": sys.executable, **(extra_env or {})}
    env.pop("QEMU_CPU", None)
    if cpu:
        env["QEMU_CPU"] = cpu
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


@dataclass
class EmulatedPi:
    """An unpacked root, the CPU to emulate, and a way to run commands in it."""

    root: Path
    share: Path          # a folder inside the root (host path) for the test's files
    share_in: str        # the same folder as seen inside the root
    os_name: str = "bookworm"
    board: str = "pi4"
    runtimes: tuple[str, ...] = field(default=("litert", "tflite-runtime"))

    @property
    def id(self) -> str:
        return f"{self.os_name}-{self.board}"

    @property
    def cpu(self) -> str:
        return CPUS.get(self.board, "max")

    def run(self, argv: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run argv inside the root (chroot, qemu user mode, QEMU_CPU of the board).

        The tests' own scripts that load numpy run its OpenBLAS on one thread, as the edgeq-device
        command does by itself (``edgeq_device._command``; its commands here get no such setting):
        under emulation a spare OpenBLAS thread spins ~1 CPU-second per second for seconds after
        numpy's import.
        """
        own = {} if Path(argv[0]).name == "edgeq-device" else {"OPENBLAS_NUM_THREADS": "1"}
        return script("run", *argv, timeout=timeout, pi_os=self.os_name, cpu=self.cpu, extra_env=own)

    def python(self, runtime: str) -> str:
        return f"{VENVS[runtime]}/bin/python"

    def cli(self, runtime: str) -> str:
        return f"{VENVS[runtime]}/bin/edgeq-device"

    def put(self, path: Path) -> str:
        """Copy a file or folder into the share; return its path inside the root."""
        dest = self.share / path.name
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            shutil.copy(path, dest)
        return f"{self.share_in}/{path.name}"


_ROOTS: dict[str, Path] = {}


def unpacked_root(pi_os: str) -> Path:
    """The OS's root, built if missing and unpacked, with the current edgeq-device wheel in its venvs
    (once per session and OS)."""
    if pi_os in _ROOTS:
        return _ROOTS[pi_os]
    check = script("check", timeout=60, pi_os=pi_os)
    if check.returncode != 0:
        pytest.skip(f"cannot run the emulated Pi ({pi_os}) here: {(check.stdout + check.stderr).strip()}")
    t0 = time.monotonic()
    built = script("build", timeout=1800, pi_os=pi_os)
    if built.returncode != 0:
        pytest.fail(f"building/unpacking the {pi_os} root failed: {built.stderr[-2000:]}")
    root = Path(built.stdout.strip().splitlines()[-1])
    print(f"\n{pi_os} root ready in {time.monotonic() - t0:.0f} s ({built.stderr.strip()[-300:]})")
    if OS_RUNTIMES[pi_os]:
        from edgeq.deployment.wheel import build_device_wheel

        wheel = build_device_wheel()
        (root / "tmp").mkdir(exist_ok=True)
        shutil.copy(wheel, root / "tmp" / wheel.name)
        for runtime in OS_RUNTIMES[pi_os]:
            res = script("run", f"{VENVS[runtime]}/bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                         "--force-reinstall", f"/tmp/{wheel.name}", timeout=900, pi_os=pi_os)
            assert res.returncode == 0, res.stderr[-2000:]
    _ROOTS[pi_os] = root
    return root


@contextlib.contextmanager
def board(pi_os: str, board_name: str) -> Iterator[EmulatedPi]:
    """An :class:`EmulatedPi` with a share folder of its own, removed afterwards."""
    root = unpacked_root(pi_os)
    share_in = f"/tmp/edgeq-test-{uuid.uuid4().hex[:8]}"
    share = root / share_in.lstrip("/")
    share.mkdir(parents=True)
    try:
        yield EmulatedPi(root, share, share_in, pi_os, board_name, OS_RUNTIMES[pi_os])
    finally:
        shutil.rmtree(share, ignore_errors=True)


@pytest.fixture(scope="session", params=BOARDS[:1])
def emulated_pi() -> Iterator[EmulatedPi]:
    """Raspberry Pi OS bookworm on a Pi 4 CPU (id ``bookworm-pi4``), with the current edgeq-device wheel
    in both venvs: the board the full set runs on."""
    with board("bookworm", "pi4") as pi:
        yield pi


@pytest.fixture(scope="session", params=BOARDS[1:])
def pi_board(request: pytest.FixtureRequest) -> Iterator[EmulatedPi]:
    """Each of the other boards: bookworm-pi5, trixie-pi4 and trixie-pi5 (the smaller set)."""
    pi_os, name = str(request.param).rsplit("-", 1)
    with board(pi_os, name) as pi:
        yield pi


@pytest.fixture(scope="module")
def armv7l() -> Iterator[tuple[EmulatedPi, str]]:
    """The 32-bit Raspberry Pi OS (bookworm armhf under qemu-arm) with Debian's numpy, pillow, click and
    flatbuffers, and the current edgeq-device wheel unpacked into a folder (no pip there): (pi, that folder)."""
    from edgeq.deployment.wheel import build_device_wheel

    with board("bookworm-armhf", "armv7l") as pi:
        with zipfile.ZipFile(build_device_wheel()) as z:
            z.extractall(pi.share / "site")
        yield pi, f"{pi.share_in}/site"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _sshd_in(pi: EmulatedPi) -> Iterator[dict]:
    """sshd (aarch64, emulated) of the Pi's root, key-only root login on a loopback port.

    The sessions it starts keep the board's CPU (``SetEnv QEMU_CPU``): sshd gives them a clean
    environment, and qemu's binfmt handler reads the CPU from there.
    """
    d = pi.share / "sshd"
    d.mkdir()
    d_in = f"{pi.share_in}/sshd"
    for name in ("host_ed25519", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
    (pi.root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d_in}/host_ed25519", f"PidFile {d_in}/sshd.pid",
        f"AuthorizedKeysFile {d_in}/authorized_keys", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", "LogLevel ERROR",
        f"SetEnv QEMU_CPU={pi.cpu}", ""]))
    host_pub = (d / "host_ed25519.pub").read_text().split()[:2]
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    env = {**os.environ, "EDGEQ_PI_OS": pi.os_name, "QEMU_CPU": pi.cpu, "HOST_PY": sys.executable}
    proc = subprocess.Popen(["bash", str(SCRIPT), "run", "/usr/sbin/sshd", "-D", "-e", "-f", f"{d_in}/sshd_config"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd in the {pi.id} root exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sshd in the {pi.id} root did not answer")
            time.sleep(0.5)
        yield {"port": port, "identity": d / "id_ed25519", "known_hosts": d / "known_hosts", "dir_in": d_in}
    finally:
        pid_file = d / "sshd.pid"
        if pid_file.exists():  # stop sshd itself; the script then unmounts and exits
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def sshd_in():  # type: ignore[no-untyped-def]
    """``with sshd_in(pi) as sshd:`` an sshd inside the Pi's root (port, identity, known_hosts)."""
    return _sshd_in


@pytest.fixture(scope="session")
def x86_pythons() -> dict[str, str]:
    """x86 Pythons with each runtime, to compare like with like: this venv (LiteRT) and a
    cached venv with tflite-runtime 2.14 and numpy<2 (made once with pip)."""
    from edgeq.deployment.wheel import build_device_wheel

    cache = Path(os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser() / "x86-tflite-runtime-venv"
    py = cache / "bin" / "python"
    if not (cache / ".ready").exists():
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(cache)], check=True)
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0", "numpy==1.26.4",
                              "pillow==13.0.0", "flatbuffers==25.12.19", "click==8.5.1"], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            pytest.skip(f"cannot install tflite-runtime on x86 to compare with: {res.stderr.strip()[-300:]}")
        (cache / ".ready").write_text("ok\n")
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                          str(build_device_wheel())], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return {"litert": sys.executable, "tflite-runtime": str(py)}


@pytest.fixture(scope="session")
def tiny_models_dir(digits_edgeq_tflite: dict[str, Path]) -> dict[str, Path]:
    """The session's digits CNN as float32, int8 and int8-io .tflite with edgeq metadata."""
    return digits_edgeq_tflite


@pytest.fixture(scope="session")
def eval_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _load_tiny_models().small_eval_folder(tmp_path_factory.mktemp("data"), per_class=5)
