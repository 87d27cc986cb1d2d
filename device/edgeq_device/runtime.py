"""Find a TFLite interpreter and run models with it.

Resolution order, first found wins (override with ``runtime=``/``--runtime``):

1. ``litert``: ``ai_edge_litert.interpreter`` (maintained, numpy 2, aarch64 wheels)
2. ``tflite-runtime``: ``tflite_runtime.interpreter`` (last release 2.14, needs ``numpy<2``)
3. ``tensorflow``: ``tensorflow.lite`` (host only)

:class:`ModelRunner` is the one place that feeds a model: it quantizes float
inputs with the input tensor's own scale and zero point, invokes, and
dequantizes outputs with the output tensor's parameters.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from .errors import DataError, DelegateError, InferenceError, InvalidArgumentError, RuntimeNotFoundError
from .flatbuffer import FlatModel, ModelSource, load_model_bytes, read_flat_model
from .int4 import check_int4
from .loadcheck import check_loads_in_child

__all__ = [
    "RUNTIME_NAMES",
    "ModelRunner",
    "Runtime",
    "dequantize",
    "edgetpu_library_name",
    "quantize",
    "resolve_runtime",
]

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


_banner_seen = False


@contextlib.contextmanager
def _quiet_runtime_banner() -> Iterator[None]:
    """Drop the runtime's one-time ``INFO: Created TensorFlow Lite XNNPACK delegate`` line.

    The native library prints it to file descriptor 2 on the first ``allocate_tensors``;
    it would break the CLI's one-line errors. Other native output is passed through.
    """
    global _banner_seen
    if _banner_seen:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            kept = []
            for line in text.splitlines():
                if line.startswith("INFO: Created TensorFlow Lite"):
                    _banner_seen = True
                elif line.strip():
                    kept.append(line)
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


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


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float to integer with the tensor's affine parameters, rounded and clipped."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer to float32 with the tensor's affine parameters."""
    return ((q.astype(np.float64) - zero_point) * scale).astype(np.float32)


InputsLike = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]


class ModelRunner:
    """Runs one ``.tflite`` model: float in, float out, whatever the model's I/O types.

    Args:
        model: path or bytes of a ``.tflite`` file.
        runtime: a :class:`Runtime`, a runtime name, or None for the first found.
        threads: interpreter threads (None: the runtime's default).
        xnnpack: False disables the default delegates (XNNPACK) where the runtime allows it.
        delegate: ``"edgetpu"``, a delegate library path, or None.
        delegate_options: options passed to the delegate (e.g. ``{"device": "usb:0"}``).
        probe: load the model in a child process first, once per model and process (see
            :func:`edgeq_device.validate.check_loads_in_child`); False when the caller has.
        flat: the model's parsed flatbuffer when the caller has it (parsing takes a while).
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        runtime: Runtime | str | None = None,
        threads: int | None = None,
        xnnpack: bool = True,
        delegate: str | None = None,
        delegate_options: Mapping[str, str] | None = None,
        probe: bool = True,
        flat: FlatModel | None = None,
    ) -> None:
        self.model_bytes = load_model_bytes(model)
        self.flat = flat if flat is not None else read_flat_model(self.model_bytes)
        self.runtime = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
        check_int4(self.flat, self.runtime)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError("must be a positive integer", argument="threads",
                                       received=threads, fix="give e.g. 1 or 4")
        self.threads = threads
        self.xnnpack = xnnpack
        self.delegate_name = delegate
        uses_edgetpu_op = any(op.custom_code == "edgetpu-custom-op" for sg in self.flat.subgraphs
                              for op in sg.operators)
        delegates = []
        if delegate:
            lib = edgetpu_library_name() if delegate == "edgetpu" else delegate
            if delegate == "edgetpu" or "edgetpu" in lib:
                dynamic = [t.name for i in self.flat.main.inputs
                           for t in [self.flat.main.tensors[i]] if t.is_dynamic]
                if dynamic:
                    raise DelegateError(
                        f"the Edge TPU needs static shapes; inputs {dynamic} are dynamic",
                        argument="model", fix="convert with --batch-size 1 (edgeq convert --target edgetpu)")
            delegates.append(self.runtime.load_delegate(lib, delegate_options))
        elif uses_edgetpu_op:
            raise DelegateError(
                "model is compiled for the Edge TPU (it holds edgetpu-custom-op) but no Edge TPU "
                "delegate was given", argument="delegate",
                fix="run with --delegate edgetpu on a machine with a Coral Edge TPU, or use the "
                    "model from before edgetpu_compiler")
        kwargs: dict[str, Any] = {"model_content": self.model_bytes}
        if threads is not None:
            kwargs["num_threads"] = threads
        if delegates:
            kwargs["experimental_delegates"] = delegates
        if not xnnpack:
            resolver = getattr(self.runtime.module, "OpResolverType", None)
            if resolver is None and self.runtime.name == "tensorflow":
                resolver = self.runtime.module.experimental.OpResolverType
            if resolver is not None:
                kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if probe and not delegates:
            # A model's first load happens in a child process: a runtime crash there is an error
            # here, not the end of this process (external delegates hold their device: not probed).
            check_loads_in_child(self.model_bytes, self.runtime, xnnpack=xnnpack)
        start = time.perf_counter()
        try:
            with _quiet_runtime_banner():
                self.interpreter = self.runtime.Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DelegateError(f"the interpreter could not prepare the model: {one_line(exc)}",
                                argument="model", fix="check the runtime supports every op "
                                "(edgeq-device info lists them)") from exc
        #: seconds spent creating the interpreter and allocating its tensors
        self.init_seconds = time.perf_counter() - start
        self._batch = 1
        self._refresh_details()

    def _runtime_error(self, exc: Exception, doing: str) -> InferenceError:
        return InferenceError(f"the model failed {doing}: {one_line(exc)}", argument="model",
                              fix="check the model with edgeq-device info, or convert it again")

    def _refresh_details(self) -> None:
        self.input_details = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        # Order outputs as the model declared them (edgeq writes signature outputs output_0..N).
        order = self.flat.io_order("outputs")
        if all(d["index"] in order for d in outputs):
            outputs = sorted(outputs, key=lambda d: order.index(d["index"]))
        in_names = self.flat.signature_names("inputs")
        self.input_keys = [in_names.get(d["index"], d["name"]) for d in self.input_details]
        self.output_details = outputs

    @property
    def input_names(self) -> list[str]:
        return [d["name"] for d in self.input_details]

    @property
    def output_names(self) -> list[str]:
        return [d["name"] for d in self.output_details]

    def _ordered(self, inputs: InputsLike) -> list[np.ndarray]:
        if isinstance(inputs, np.ndarray):
            arrays = [inputs]
        elif isinstance(inputs, Mapping):
            arrays = []
            for d, key in zip(self.input_details, self.input_keys):
                if key not in inputs:
                    key = d["name"]
                if key not in inputs:
                    raise DataError(f"no input named {key!r}", argument="inputs",
                                    received=sorted(inputs), fix=f"use keys {self.input_keys}")
                arrays.append(np.asarray(inputs[key]))
        else:
            arrays = [np.asarray(a) for a in inputs]
        if len(arrays) != len(self.input_details):
            raise DataError(f"model takes {len(self.input_details)} inputs, got {len(arrays)}",
                            argument="inputs", fix=f"give one array per input: {self.input_names}")
        return arrays

    def set_inputs(self, inputs: InputsLike) -> None:
        """Set float (or already integer) inputs; batch dimension included."""
        arrays = self._ordered(inputs)
        batch = int(arrays[0].shape[0]) if arrays[0].ndim else 1
        if batch != self._batch:
            try:
                for d, a in zip(self.input_details, arrays):
                    self.interpreter.resize_tensor_input(d["index"], list(a.shape), strict=True)
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise self._runtime_error(exc, f"resizing its inputs to batch {batch}") from exc
            self._refresh_details()
            self._batch = batch
        for d, a in zip(self.input_details, arrays):
            want = tuple(int(x) for x in d["shape"])
            if tuple(a.shape) != want:
                raise DataError(f"input {d['name']!r} has shape {tuple(a.shape)}, the model takes {want}",
                                argument="inputs", fix="preprocess to the model's input size and channels")
            dtype = np.dtype(d["dtype"])
            scale, zp = d["quantization"]
            if dtype.kind in "iu" and a.dtype.kind == "f":
                if not scale:
                    raise DataError(f"integer input {d['name']!r} has no quantization parameters",
                                    argument="inputs", fix="give integer arrays")
                a = quantize(a, dtype, scale, zp)
            self.interpreter.set_tensor(d["index"], a.astype(dtype, copy=False))

    def invoke(self) -> None:
        """Run the model once on the inputs set last.

        Raises:
            InferenceError: an operator reported an error.
        """
        try:
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise self._runtime_error(exc, "running") from exc

    def get_outputs(self, dequantize_outputs: bool = True) -> list[np.ndarray]:
        """Outputs in the model's order, dequantized to float32 unless asked otherwise."""
        outs = []
        for d in self.output_details:
            try:
                o = self.interpreter.get_tensor(d["index"])
            except ValueError as exc:
                raise self._runtime_error(exc, f"giving output {d['name']!r}") from exc
            scale, zp = d["quantization"]
            if dequantize_outputs and o.dtype.kind in "iu" and scale:
                o = dequantize(o, scale, zp)
            outs.append(np.array(o, copy=True))
        return outs

    def run(self, inputs: InputsLike, dequantize_outputs: bool = True) -> list[np.ndarray]:
        """Set inputs, invoke, return outputs."""
        self.set_inputs(inputs)
        self.invoke()
        return self.get_outputs(dequantize_outputs)
