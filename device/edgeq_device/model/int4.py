"""Models with 4-bit (INT4) weight tensors, and the runtimes that run them.

LiteRT (``ai_edge_litert``, measured with 2.3) and TensorFlow Lite in TensorFlow 2.21 run a
model whose convolution and fully-connected weights are INT4 (edgeq's ``int4`` mode, float
activations). tflite-runtime 2.14 (its last release) has no such kernels and does not say
so: measured on x86 and on an emulated Pi, it loads the model and answers NaN with XNNPACK,
wrong classes without it. :func:`check_int4` refuses that pairing before a single
inference, and ``edgeq-device info`` says it up front.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError
from .flatbuffer import FlatModel

__all__ = ["INT4_NOTE", "check_int4", "int4_tensors", "runs_int4"]

INT4_NOTE = "needs LiteRT (ai-edge-litert); tflite-runtime 2.14 has no int4 kernels and gives wrong outputs"
"""What a reader of a model with 4-bit weights needs to know about runtimes."""

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
