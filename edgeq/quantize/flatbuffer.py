"""A ``.tflite`` as the schema's object tree, and back: the one place edgeq edits flatbuffers.

Reading goes through ``ai_edge_litert.tools.flatbuffer_utils.read_model_from_bytearray``, which
also reads the buffers a file stores after the flatbuffer (``Buffer.offset``/``.size``:
litert-quantizer writes models with more than 256 KiB of weights that way) into ``.data``, so
that :func:`write_model` writes one self-contained flatbuffer. Re-packing the tree without that
step drops those buffers and leaves a file LiteRT refuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["read_model", "write_model"]


def read_model(model_bytes: bytes) -> Any:
    """``model_bytes`` as a ``ModelT``, every buffer's bytes inline (as a ``uint8`` array)."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    for buf in model.buffers or ():
        if buf.data is not None and not isinstance(buf.data, np.ndarray):
            buf.data = np.frombuffer(bytes(buf.data), np.uint8)  # packs as one vector, not byte by byte
    return model


def write_model(model: Any) -> bytes:
    """The ``.tflite`` bytes of a ``ModelT`` (as :func:`read_model` gives)."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    return bytes(fbu.convert_object_to_bytearray(model))
