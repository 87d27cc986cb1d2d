"""What a ``.tflite`` file's weights hold: distinct values, zeros, and the size a download takes.

Clustering and pruning pay only after compression: a clustered kernel has few distinct
values and a pruned one many zeros, which gzip (what an over-the-air update downloads)
squeezes and the raw file does not. :func:`weight_stats` reads each convolution's and
fully-connected layer's weights from the flatbuffer (no TFLite runtime), and
:func:`gzip_size` is the compressed size at level 9.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import read_flat_model

__all__ = ["WeightStats", "gzip_size", "weight_stats"]

#: Operators whose input 1 is a weight tensor (output channels first, except depthwise: last).
_WEIGHTED_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1, "CONV_3D": -1,
                 "TRANSPOSE_CONV": 0}
_NUMPY = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "FLOAT32": np.float32, "FLOAT16": np.float16}


@dataclass(frozen=True)
class WeightStats:
    """The stored weights of one operator.

    Attributes:
        op: the operator (``CONV_2D``...).
        tensor: the weight tensor's name.
        dtype: its stored type (``INT8``, ``FLOAT32``...).
        shape: its shape.
        distinct: distinct stored values in the whole tensor.
        distinct_per_channel: the most distinct stored values in any one output channel.
        zero_fraction: the fraction of stored values that are exactly zero.
    """

    op: str
    tensor: str
    dtype: str
    shape: tuple[int, ...]
    distinct: int
    distinct_per_channel: int
    zero_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"op": self.op, "tensor": self.tensor, "dtype": self.dtype, "shape": list(self.shape),
                "distinct": self.distinct, "distinct_per_channel": self.distinct_per_channel,
                "zero_fraction": self.zero_fraction}


def gzip_size(model_bytes: bytes) -> int:
    """The size of ``model_bytes`` compressed with gzip at level 9 (what a fleet update downloads)."""
    return len(gzip.compress(bytes(model_bytes), compresslevel=9, mtime=0))


def weight_stats(model: Any) -> tuple[WeightStats, ...]:
    """The weights of every convolution and fully-connected operator of a ``.tflite`` (bytes or path).

    Raises:
        ModelLoadError: not a ``.tflite`` file.
    """
    flat = read_flat_model(model)
    sub = flat.main
    found: list[WeightStats] = []
    for op in sub.operators:
        axis = _WEIGHTED_OPS.get(op.opcode)
        if axis is None or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        t = sub.tensors[op.inputs[1]]
        data = flat.tensor_data(t)
        if data is None or t.dtype not in _NUMPY:
            continue
        a = np.frombuffer(data, dtype=_NUMPY[t.dtype])[:t.num_elements].reshape(t.shape)
        channels = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
        found.append(WeightStats(
            op=op.opcode, tensor=t.name, dtype=t.dtype, shape=tuple(int(d) for d in t.shape),
            distinct=int(np.unique(a).size), distinct_per_channel=max(int(np.unique(c).size) for c in channels),
            zero_fraction=float(np.mean(a == 0))))
    return tuple(found)
