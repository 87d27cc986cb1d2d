"""The TFLite runtimes and how one is found: import, version, delegates.

Resolution order, first found wins (override with ``runtime=``/``--runtime``):

1. ``litert``: ``ai_edge_litert.interpreter`` (maintained, numpy 2, aarch64 wheels)
2. ``tflite-runtime``: ``tflite_runtime.interpreter`` (last release 2.14, needs ``numpy<2``)
3. ``tensorflow``: ``tensorflow.lite`` (host only)
"""

from __future__ import annotations

import ctypes
import importlib
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import DelegateError, InvalidArgumentError, RuntimeNotFoundError

__all__ = ["RUNTIME_NAMES", "Runtime", "edgetpu_library_name", "one_line", "resolve_runtime"]

RUNTIME_NAMES = ("litert", "tflite-runtime", "tensorflow")
_MODULES = {
    "litert": ("ai_edge_litert.interpreter", "ai_edge_litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite_runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}
_INSTALL_HINT = "pip install ai-edge-litert (or tflite-runtime on numpy<2)"
_TFLITE_RUNTIME_LAST_PYTHON = (3, 11)  # tflite-runtime 2.14, its last release, has wheels up to cp311


def _is_32bit_arm() -> bool:
    """A 32-bit ARM Python (Raspberry Pi OS armhf; ``aarch64`` from a 64-bit kernel under a 32-bit userland)."""
    machine = platform.machine().lower()
    return machine.startswith("armv") or (machine in ("aarch64", "arm64") and sys.maxsize <= 2**32)


def _install_hint(name: str | None) -> str:
    """What to do when ``name`` (None: any runtime) cannot be imported here, for this board and Python."""
    if _is_32bit_arm():
        return ("PyPI has no ai-edge-litert or tflite-runtime wheels for 32-bit ARM "
                f"({platform.machine()}, Python {platform.python_version()}): install the 64-bit Raspberry Pi OS "
                "(aarch64) and pip install ai-edge-litert")
    if name == "tflite-runtime" and sys.version_info[:2] > _TFLITE_RUNTIME_LAST_PYTHON:
        return (f"tflite-runtime has no wheels for Python {sys.version_info[0]}.{sys.version_info[1]} "
                "(its last release, 2.14, stops at 3.11): use --runtime litert (pip install ai-edge-litert)")
    return _INSTALL_HINT


@dataclass(frozen=True)
class Runtime:
    """A TFLite interpreter implementation that could be imported."""

    name: str
    version: str
    module: Any

    @property
    def import_path(self) -> tuple[str, str]:
        """(module to import, attribute path in it) that gives this runtime's interpreter API."""
        module, top = _MODULES[self.name]
        return (top, "lite") if self.name == "tensorflow" else (module, "")

    @property
    def Interpreter(self) -> Any:  # noqa: N802 - mirrors the runtime's own class name
        return self.module.Interpreter

    def load_delegate(self, library: str, options: Mapping[str, str] | None = None) -> Any:
        """Load an external delegate (``libedgetpu.so.1``, a path, ...) or raise DelegateError."""
        loader = getattr(self.module, "load_delegate", None)
        if loader is None and self.name == "tensorflow":
            loader = self.module.experimental.load_delegate
        if loader is None:
            raise DelegateError("this runtime cannot load external delegates", argument="runtime",
                                received=self.name, fix="use the litert runtime")
        _check_delegate_library(library)
        try:
            return loader(library, dict(options or {}))
        except (ValueError, OSError, RuntimeError) as exc:
            fix = ("plug in the Edge TPU (check the device option, e.g. device=usb:0)"
                   if "edgetpu" in library else "check the delegate's options")
            raise DelegateError(f"cannot load delegate: {exc}", argument="delegate",
                                received=library, fix=fix) from exc


def _delegate_fix(library: str) -> str:
    if "edgetpu" in library:
        return ("install the Edge TPU runtime (Debian package libedgetpu1-std from Coral's apt "
                "repository) and plug in the accelerator")
    return "give the path of a TFLite external delegate library (.so)"


def _check_delegate_library(library: str) -> None:
    """Open the library with ctypes first: a missing file or a library that is not a TFLite
    external delegate gives a clear error instead of the runtime's AttributeError/traceback."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise DelegateError(f"cannot load delegate library: {exc}", argument="delegate",
                            received=library, fix=_delegate_fix(library)) from exc
    if not hasattr(lib, "tflite_plugin_create_delegate"):
        raise DelegateError("the library is not a TFLite external delegate (it has no "
                            "tflite_plugin_create_delegate)", argument="delegate", received=library,
                            fix=_delegate_fix(library))


def _import_runtime(name: str) -> Runtime:
    mod_name, top_name = _MODULES[name]
    mod = importlib.import_module(mod_name)
    top = importlib.import_module(top_name)
    version = str(getattr(top, "__version__", "") or getattr(mod, "__version__", "") or "unknown")
    if name == "tensorflow":
        # ``import tensorflow.lite`` is the source package; the API (Interpreter, experimental.*)
        # is the ``tf.lite`` attribute.
        return Runtime(name, version, top.lite)
    return Runtime(name, version, mod)


def resolve_runtime(name: str | None = None) -> Runtime:
    """Import the requested runtime, or the first available one.

    Args:
        name: ``"litert"``, ``"tflite-runtime"``, ``"tensorflow"`` or None (first found,
            also settable with the ``EDGEQ_RUNTIME`` environment variable).

    Raises:
        InvalidArgumentError: ``name`` is not a known runtime.
        RuntimeNotFoundError: the runtime (or none at all) can be imported.
    """
    name = name or os.environ.get("EDGEQ_RUNTIME") or None
    if name is not None:
        name = name.lower().replace("_", "-")
        if name == "tflite":
            name = "tflite-runtime"
        if name not in _MODULES:
            raise InvalidArgumentError("unknown runtime", argument="runtime", received=name,
                                       fix=f"use one of: {', '.join(RUNTIME_NAMES)}")
        try:
            return _import_runtime(name)
        except ImportError as exc:
            raise RuntimeNotFoundError(f"runtime cannot be imported: {exc}", argument="runtime",
                                       received=name, fix=_install_hint(name)) from exc
    errors = []
    for candidate in RUNTIME_NAMES:
        try:
            return _import_runtime(candidate)
        except ImportError as exc:
            errors.append(f"{candidate}: {exc}")
    raise RuntimeNotFoundError("no TFLite runtime found (" + "; ".join(errors) + ")",
                               fix=_install_hint(None))


def edgetpu_library_name() -> str:
    """The Edge TPU runtime library's name on this platform."""
    return {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
            "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")


def one_line(exc: BaseException) -> str:
    """A runtime's error message on one line (TFLite joins its messages with newlines or nothing)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."
