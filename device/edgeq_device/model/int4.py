"""Models with 4-bit (INT4) weight tensors, and the runtimes that run them.

LiteRT (``ai_edge_litert``, measured with 2.3) and TensorFlow Lite in TensorFlow 2.21 run a
model whose convolution and fully-connected weights are INT4 (edgeq's ``int4`` mode, float
activations). tflite-runtime 2.14 (its last release) has no such kernels and does not say
so: measured on x86 and on an emulated Pi, it loads the model and answers NaN with XNNPACK,
wrong classes without it. :func:`check_int4` refuses that pairing before a single
inference, and ``edgeq-device info`` says it up front.

int4 is also slower: LiteRT's hybrid kernels unpack the weights and quantize the float
activations at every call. With ``edgeq-device bench`` (x86 AMD EPYC, AVX-512, LiteRT 2.3,
XNNPACK, 1 thread, median of 3 interleaved runs each): fer's emotion CNN 125-132 µs int8,
207-213 µs float32, 609-636 µs int4; MobileNetV2 alpha 0.35 at 96 px 107-109 µs int8,
165-168 µs float32, 491-528 µs int4. :data:`INT4_SPEED_NOTE` says so wherever
:data:`INT4_NOTE` is shown (``edgeq compare``'s notes, ``edgeq-device info``).
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError
from .flatbuffer import FlatModel

__all__ = ["INT4_NOTE", "INT4_RUNTIME_NOTE", "INT4_SPEED_NOTE", "check_int4", "int4_tensors", "runs_int4"]

INT4_RUNTIME_NOTE = "needs LiteRT (ai-edge-litert); tflite-runtime 2.14 has no int4 kernels and gives wrong outputs"
"""Which runtimes run a model with 4-bit weights."""

INT4_SPEED_NOTE = ("slower than int8 and float32: its hybrid kernels unpack the 4-bit weights and quantize "
                   "the activations at every call (median latency 4.6-4.9x int8's and 2.9-3.2x float32's on "
                   "x86, LiteRT 2.3, 1 thread, a residual CNN and MobileNetV2; time yours with edgeq-device bench) "
                   "- int4 buys size, not speed")
"""What 4-bit weights cost in speed, as measured with ``edgeq-device bench``."""

INT4_NOTE = f"{INT4_RUNTIME_NOTE}; {INT4_SPEED_NOTE}"
"""What a reader of a model with 4-bit weights needs to know: runtimes and speed."""

_NO_INT4 = frozenset({"tflite-runtime"})


def int4_tensors(flat: FlatModel) -> int:
    """How many INT4 tensors (4-bit weights) the model holds."""
    return sum(t.dtype == "INT4" for sg in flat.subgraphs for t in sg.tensors)


def runs_int4(runtime: Any) -> bool:
    """Whether a runtime (an :class:`~edgeq_device.run.runtime.Runtime`) has int4 weight kernels."""
    return str(getattr(runtime, "name", runtime)) not in _NO_INT4


def check_int4(flat: FlatModel, runtime: Any) -> None:
    """Refuse a model with INT4 weights on a runtime without int4 kernels.

    Raises:
        InvalidArgumentError: the model has INT4 tensors and the runtime is tflite-runtime.
    """
    count = int4_tensors(flat)
    if count and not runs_int4(runtime):
        name = getattr(runtime, "name", runtime)
        version = getattr(runtime, "version", "")
        raise InvalidArgumentError(
            f"the model has {count} INT4 (4-bit) weight tensor(s) and {name} {version} has no int4 kernels "
            "(it would give wrong outputs)".replace("  ", " "), argument="runtime", received=f"{name} {version}".strip(),
            fix="install LiteRT (pip install ai-edge-litert; --runtime litert), or convert the model in another "
                "mode (int8, dynamic, float16)")
