"""An emulated Raspberry Pi: the Debian bookworm arm64 root built by scripts/arm64_rootfs.sh.

The root filesystem is cached as a tarball under ~/.cache/edgeq/. Building it
takes minutes, so the default test run uses it only when the cache exists;
``make test-arm64`` (EDGEQ_ARM64_BUILD=1) builds it first. Tests skip with the
reason when this host cannot run it (not root, no qemu >= 10, no binfmt_misc).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "arm64_rootfs.sh"
VENVS = {"litert": "/opt/edgeq/litert", "tflite-runtime": "/opt/edgeq/tflite-runtime"}


def _load_tiny_models():  # shared with the ssh tests
    spec = importlib.util.spec_from_file_location("edgeq_test_tiny_models", REPO / "tests" / "ssh" / "tiny_models.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def script(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class EmulatedPi:
    """The unpacked arm64 root and a way to run commands in it."""

    root: Path
    share: Path          # a folder inside the root (host path) for the test's files
    share_in: str        # the same folder as seen inside the root

    def run(self, argv: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run argv inside the root (chroot, qemu-aarch64, QEMU_CPU=cortex-a72)."""
        return script("run", *argv, timeout=timeout)

    def python(self, runtime: str) -> str:
        return f"{VENVS[runtime]}/bin/python"

    def put(self, path: Path) -> str:
        """Copy a file or folder into the share; return its path inside the root."""
        dest = self.share / path.name
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            shutil.copy(path, dest)
        return f"{self.share_in}/{path.name}"


@pytest.fixture(scope="session")
def emulated_pi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedPi]:
    """The arm64 root with the current edgeq-device wheel installed into both venvs."""
    check = script("check", timeout=60)
    if check.returncode != 0:
        pytest.skip(f"cannot run the arm64 root here: {(check.stdout + check.stderr).strip()}")
    if script("cached", timeout=30).returncode != 0 and os.environ.get("EDGEQ_ARM64_BUILD") != "1":
        pytest.skip(f"no cached arm64 root ({script('path').stdout.strip()}); `make test-arm64` builds it "
                    "(about 8 minutes)")
    built = script("extract", timeout=3600)
    if built.returncode != 0:
        pytest.fail(f"building/unpacking the arm64 root failed: {built.stderr[-2000:]}")
    root = Path(built.stdout.strip().splitlines()[-1])
    from edgeq.deployment.wheel import build_device_wheel

    wheel = build_device_wheel()
    share_in = f"/tmp/edgeq-test-{uuid.uuid4().hex[:8]}"
    share = root / share_in.lstrip("/")
    share.mkdir(parents=True)
    try:
        shutil.copy(wheel, share / wheel.name)
        pi = EmulatedPi(root, share, share_in)
        for venv in VENVS.values():
            res = pi.run([f"{venv}/bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--force-reinstall", f"{share_in}/{wheel.name}"], timeout=900)
            assert res.returncode == 0, res.stderr[-2000:]
        yield pi
    finally:
        shutil.rmtree(share, ignore_errors=True)


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
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0", "numpy<2", "pillow",
                              "flatbuffers", "click"], capture_output=True, text=True, timeout=900)
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
