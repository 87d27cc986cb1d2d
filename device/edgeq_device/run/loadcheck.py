"""Load a model first in a child process: a runtime crash there is an error here.

:func:`check_loads_in_child` creates the interpreter, allocates its tensors and runs it
once on zero inputs in a child process before this process does, the first time it sees a
model (by SHA-256, runtime and XNNPACK setting). A child killed by a signal becomes
:class:`~edgeq_device.errors.RuntimeCrashError`. Kernels' own checks (``Prepare``) are too
many to mirror in Python (:mod:`edgeq_device.model.validate` checks what it can), so this is what
guarantees no signal for a model that passes validation.

The child is a ``fork`` of this process where that is safe (Linux, this process has a
single thread, TensorFlow not imported): about 10 ms plus the model's load and one
inference. Elsewhere (threads running, TensorFlow loaded: a notebook, the host toolkit) a
helper process (:mod:`edgeq_device.run._load_helper`, run by path with ``sys.executable`` so only
the runtime is imported, about 0.15 s for LiteRT) is started once and each model loads in a
fork of the helper; where there is no ``fork`` at all (Windows) the helper loads one model
and exits.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import signal as _signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RuntimeCrashError

if TYPE_CHECKING:
    from .runtimes import Runtime

__all__ = ["PROBE_TIMEOUT_S", "check_loads_in_child"]

# A model that takes longer than this to load and run once on zeros counts as hung.
PROBE_TIMEOUT_S = 300.0

_HELPER = str(Path(__file__).with_name("_load_helper.py"))

_LOADED: set[tuple[str, str, bool]] = set()
_LOADED_LOCK = threading.Lock()
_PROBE_LOCK = threading.Lock()



def _single_threaded() -> bool:
    """True where forking this process is safe: one thread in it, TensorFlow not loaded (Linux)."""
    if not hasattr(os, "fork") or "tensorflow" in sys.modules:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _child_load(runtime: Runtime, model_bytes: bytes, xnnpack: bool) -> None:
    """In a forked child: load, allocate, run once; exit 0, or 1 on a Python-level error.

    The child's crash is the expected outcome the parent reports: faulthandler, when the parent
    enabled it (pytest, ``python -X faulthandler``), would print a fault dump of the child to the
    parent's stderr, so it is turned off here.
    """
    try:
        faulthandler.disable()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        kwargs: dict[str, Any] = {"model_content": model_bytes, "num_threads": 1}
        if not xnnpack:
            resolver = getattr(runtime.module, "OpResolverType", None)
            if resolver is not None:
                kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        os.write(1, b"L")
        interp = runtime.Interpreter(**kwargs)
        interp.allocate_tensors()
        os.write(1, b"R")
        import numpy as np

        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
    except BaseException:
        os._exit(1)
    os._exit(0)


def _fork_probe(runtime: Runtime, model_bytes: bytes, xnnpack: bool,
                timeout: float) -> tuple[int | None, str]:
    """(signal or None, last stage reached: L, R or T for timed out) of a fork of this process."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        os.dup2(write_fd, 1)
        _child_load(runtime, model_bytes, xnnpack)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    delay = 0.0005
    status = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, _signal.SIGKILL)
            os.waitpid(pid, 0)
            status = None
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    stages = b""
    while chunk := os.read(read_fd, 64):
        stages += chunk
    os.close(read_fd)
    if status is None:
        return None, "T"
    return (os.WTERMSIG(status) if os.WIFSIGNALED(status) else None), stages.decode("ascii")[-1:] or "L"


_helpers: dict[str, subprocess.Popen[bytes]] = {}


def _helper(runtime: Runtime, persistent: bool) -> subprocess.Popen[bytes]:
    """A helper process for this runtime (kept for the next model where it can fork)."""
    proc = _helpers.get(runtime.name)
    if proc is not None and proc.poll() is None:
        return proc
    target, attr = runtime.import_path
    proc = subprocess.Popen([sys.executable, _HELPER, target, attr], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=hasattr(os, "setsid"))
    if persistent:
        _helpers[runtime.name] = proc
    return proc


def _helper_probe(runtime: Runtime, model_bytes: bytes, xnnpack: bool,
                  timeout: float) -> tuple[int | None, str]:
    """(signal or None, last stage reached: L, R or T for timed out) through a helper process."""
    persistent = hasattr(os, "fork")
    proc = _helper(runtime, persistent)
    assert proc.stdin is not None and proc.stdout is not None
    result: list[bytes] = []

    def talk() -> None:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("<QB", len(model_bytes), 1 if xnnpack else 0) + model_bytes)
            proc.stdin.flush()
            if not persistent:
                proc.stdin.close()
            result.append(proc.stdout.read(5 if persistent else 4))
            if not persistent:
                result.append(proc.stdout.read())
        except (OSError, ValueError):
            pass

    worker = threading.Thread(target=talk, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive() or not result or len(result[0]) < 4:
        stage = "T" if worker.is_alive() else "L"
        _stop_helper(runtime.name, proc)
        if stage == "L" and not persistent:  # the one-shot helper itself died: read its end
            code = proc.wait()
            return (-code if code < 0 else None), "L"
        return None, stage
    if not persistent:
        code = proc.wait()
        return (-code if code < 0 else None), (result[1].decode("ascii")[-1:] or "L")
    sig = int(struct.unpack("<i", result[0][:4])[0])
    return (sig or None), result[0][4:].decode("ascii") or "L"


def _stop_helper(name: str, proc: subprocess.Popen[bytes]) -> None:
    _helpers.pop(name, None)
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, _signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass
    proc.wait()


def check_loads_in_child(model_bytes: bytes, runtime: Runtime, *, xnnpack: bool = True,
                         argument: str = "model", where: str | None = None,
                         timeout: float = PROBE_TIMEOUT_S) -> None:
    """Load ``model_bytes`` with ``runtime`` in a child process and run it once on zeros.

    Done once per model, runtime and XNNPACK setting in this process (later calls return at
    once). A child that ends with a Python-level error passes: this process then meets the
    same error and reports it in its own words.

    Raises:
        RuntimeCrashError: the child was killed by a signal, or did not finish in ``timeout``
            seconds.
    """
    key = (hashlib.sha256(model_bytes).hexdigest(), runtime.name, bool(xnnpack))
    with _LOADED_LOCK:
        if key in _LOADED:
            return
    with _PROBE_LOCK:  # one model at a time through the helper's pipes
        probe = _fork_probe if _single_threaded() else _helper_probe
        sig, stage = probe(runtime, model_bytes, xnnpack, timeout)
    doing = "running" if stage == "R" else "loading"
    if stage == "T":
        raise RuntimeCrashError(f"the runtime did not finish {doing} this model in {timeout:g} s",
                                argument=argument, received=where,
                                fix="check the model (edgeq-device info) or convert it again")
    if sig is not None:
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = "unknown"
        raise RuntimeCrashError(f"the runtime crashed {doing} this model (signal {sig}, {name})",
                                signal=sig, argument=argument, received=where,
                                fix="the model is corrupt or uses an operator in a way this runtime "
                                    "cannot run; convert it again")
    with _LOADED_LOCK:
        _LOADED.add(key)
