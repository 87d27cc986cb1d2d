"""A ``.tflite`` as the schema's object tree, and back: the one place edgeq edits flatbuffers.

Reading goes through ``ai_edge_litert.tools.flatbuffer_utils.read_model_from_bytearray``, which
also reads the buffers a file stores after the flatbuffer (``Buffer.offset``/``.size``:
litert-quantizer writes models with more than 256 KiB of weights that way) into ``.data``, so
that :func:`write_model` writes one self-contained flatbuffer. Re-packing the tree without that
step drops those buffers and leaves a file LiteRT refuses.

Files packed into a model (the standard TFLite metadata's labels) are a zip archive appended
after the flatbuffer, as TFLite Support's metadata populator writes them; :func:`write_model`
appends them, and :func:`packed_files` (the board package's reader, re-exported) reads them back.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from edgeq_device.model.tflite_metadata import packed_files

__all__ = ["packed_files", "read_model", "write_model"]


def read_model(model_bytes: bytes) -> Any:
    """``model_bytes`` as a ``ModelT``, every buffer's bytes inline (as a ``uint8`` array).

    Files packed after the flatbuffer are not part of the tree (see :func:`packed_files`).
    """
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    for buf in model.buffers or ():
        if buf.data is not None and not isinstance(buf.data, np.ndarray):
            buf.data = np.frombuffer(bytes(buf.data), np.uint8)  # packs as one vector, not byte by byte
    return model


def write_model(model: Any, files: Mapping[str, bytes] | None = None) -> bytes:
    """The ``.tflite`` bytes of a ``ModelT`` (as :func:`read_model` gives), ``files`` packed after it.

    The files go into a zip archive appended to the flatbuffer (stored, not compressed; offsets
    counted from the start of the file), which the TFLite metadata readers (MediaPipe, TFLite
    Support) find there; the runtime ignores it.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    data = bytes(fbu.convert_object_to_bytearray(model))
    if not files:
        return data
    out = io.BytesIO(data)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, content)
    return out.getvalue()
