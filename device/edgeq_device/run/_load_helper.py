"""The child that loads a model before the calling process does (see :mod:`edgeq_device.run.loadcheck`).

Run as a script by path (``python _load_helper.py MODULE ATTR``), so only the runtime is
imported: not edgeq_device, not TensorFlow. Reads requests (8-byte length, 1-byte XNNPACK
flag, model bytes) from standard input and answers each with a 4-byte signal number (0: none)
and a 1-byte stage (L: loading, R: running). Where it can fork, each model loads in a fork of
this process (a clean, single-threaded process with the runtime imported), so a crash ends that
fork only; elsewhere it loads one model itself and exits.
"""

import faulthandler
import importlib
import os
import struct
import sys

# Run by path, this file's folder is sys.path[0]: drop it so that edgeq_device's module names
# (errors, info, runtime, ...) cannot hide the packages the runtime imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402


def _resolve(module: str, attr: str):  # type: ignore[no-untyped-def]
    mod = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        mod = getattr(mod, part)
    return mod


def load(mod, data: bytes, xnnpack: bool, out_fd: int) -> int:  # type: ignore[no-untyped-def]
    """Load, allocate and run ``data`` once on zeros, writing the stage reached to ``out_fd``."""
    kwargs = {"model_content": data, "num_threads": 1}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        os.write(out_fd, b"L")
        interp = mod.Interpreter(**kwargs)
        interp.allocate_tensors()
        os.write(out_fd, b"R")
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
    except BaseException:
        return 1
    return 0


def serve(mod) -> None:  # type: ignore[no-untyped-def]
    """Answer load requests on stdin/stdout until stdin closes."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(9)
        if len(head) < 9:
            break
        size, xnnpack = struct.unpack("<QB", head)
        data = inp.read(size)
        if not hasattr(os, "fork"):
            out.write(struct.pack("<i", 0))
            out.flush()
            load(mod, data, bool(xnnpack), out.fileno())
            break
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            faulthandler.disable()  # a crash here is the answer, not a fault to dump (PYTHONFAULTHANDLER)
            os._exit(load(mod, data, bool(xnnpack), w))
        os.close(w)
        stages = b""
        while True:
            chunk = os.read(r, 64)
            if not chunk:
                break
            stages += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        out.write(struct.pack("<i", sig) + (stages[-1:] or b"L"))
        out.flush()


if __name__ == "__main__":
    serve(_resolve(sys.argv[1], sys.argv[2]))
