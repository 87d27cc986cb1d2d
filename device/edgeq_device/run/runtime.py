"""Run models with a TFLite runtime (found by :mod:`edgeq_device.run.runtimes`, re-exported here).

:class:`ModelRunner` is the one place that feeds a model: it quantizes float
inputs with the input tensor's own scale and zero point, invokes, and
dequantizes outputs with the output tensor's parameters.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from ..errors import DataError, DelegateError, InferenceError, InvalidArgumentError
from ..model.flatbuffer import FlatModel, ModelSource, load_model_bytes, read_flat_model
from ..model.int4 import check_int4
from .loadcheck import check_loads_in_child
from .nativelog import filter_native_lines
from .runtimes import RUNTIME_NAMES, Runtime, edgetpu_library_name, one_line, resolve_runtime

__all__ = [
    "RUNTIME_NAMES",
    "ModelRunner",
    "Runtime",
    "dequantize",
    "edgetpu_library_name",
    "quantize",
    "resolve_runtime",
]

_banner_seen = False


def _drop_banner(line: str) -> bool:
    """The runtime's one-time ``INFO: Created TensorFlow Lite XNNPACK delegate`` line (noted as seen)."""
    global _banner_seen
    if line.startswith("INFO: Created TensorFlow Lite"):
        _banner_seen = True
        return True
    return False


@contextlib.contextmanager
def _quiet_runtime_banner() -> Iterator[None]:
    """Drop the runtime's one-time XNNPACK banner, printed to fd 2 on the first ``allocate_tensors``.

    It would break the CLI's one-line errors; other native output is passed through. fd 2 is
    swapped by :mod:`edgeq_device.run.nativelog` only (one lock and a depth count for the process):
    runners built at once in several threads share one redirection.
    """
    if _banner_seen:
        yield
        return
    with filter_native_lines(_drop_banner):
        yield


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
            :func:`edgeq_device.run.loadcheck.check_loads_in_child`); False when the caller has.
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
