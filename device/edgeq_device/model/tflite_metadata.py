"""A reader for the standard TFLite model metadata (the ``TFLITE_METADATA`` entry), ``flatbuffers`` alone.

Public models (TF Hub, Kaggle, MediaPipe, anything written by the TFLite
Support or MediaPipe metadata writers) describe their inputs and outputs in a
``ModelMetadata`` flatbuffer (``metadata_schema.fbs`` of tflite-support,
file identifier ``M001``) stored as the model's ``TFLITE_METADATA`` entry, and
pack their label files as a zip appended to the model. :func:`read_tflite_metadata`
reads the parts a board needs to evaluate such a model with no flags:

- per input: image properties (color space, default size), normalization
  (mean/std per channel), value range and stats;
- per output: what it holds (feature, image, bounding boxes), its labels
  (``TENSOR_AXIS_LABELS``: one per class; ``TENSOR_VALUE_LABELS``: one per value of a
  class map, a segmenter's), bounding box properties, score thresholds and calibration;
- the packed files' names.

Field numbers follow ``metadata_schema.fbs`` (declaration order; a union takes two:
its type, then its value).
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from dataclasses import dataclass, replace
from typing import Union

import flatbuffers

from ..errors import EdgeqWarning, ModelFileError
from .flatbuffer import _T, FlatModel, ModelSource, read_flat_model

__all__ = [
    "TFLITE_METADATA_NAME",
    "BoundingBoxInfo",
    "TensorMeta",
    "TfliteMetadata",
    "UnreadableMetadataWarning",
    "packed_files",
    "read_tflite_metadata",
]

#: The name of the metadata entry the TFLite Support and MediaPipe writers use.
TFLITE_METADATA_NAME = "TFLITE_METADATA"

_U8 = flatbuffers.number_types.Uint8Flags
_I8 = flatbuffers.number_types.Int8Flags
_I32 = flatbuffers.number_types.Int32Flags
_U32 = flatbuffers.number_types.Uint32Flags
_F32 = flatbuffers.number_types.Float32Flags

_FILE_TYPES = {0: "unknown", 1: "descriptions", 2: "tensor_axis_labels", 3: "tensor_value_labels",
               4: "tensor_axis_score_calibration", 5: "vocabulary", 6: "scann_index_file"}
_CONTENT_KINDS = {1: "feature", 2: "image", 3: "bounding_box", 4: "audio"}
_COLOR_SPACES = {1: "rgb", 2: "grayscale"}
_BOX_TYPES = {0: "unknown", 1: "boundaries", 2: "upper_left", 3: "center"}
_COORDINATES = {0: "ratio", 1: "pixel"}
_SCORE_TRANSFORMS = {0: "identity", 1: "log", 2: "inverse_logistic"}
#: First labels that mean "no class": the class indices of the rest start at 1.
BACKGROUND_LABELS = ("background", "???", "__background__", "unlabeled", "none")


class UnreadableMetadataWarning(EdgeqWarning):
    """A model's ``TFLITE_METADATA`` entry cannot be read; it is left out."""


@dataclass(frozen=True)
class BoundingBoxInfo:
    """How a detector's box output is laid out: ``index`` gives where left/top/right/bottom are."""

    index: tuple[int, ...]
    type: str
    coordinates: str


@dataclass(frozen=True)
class TensorMeta:
    """What the metadata says of one input or output tensor (in the subgraph's order).

    ``kind`` is ``"image"``, ``"feature"``, ``"bounding_box"``, ``"audio"`` or None;
    ``color`` is ``"rgb"``/``"grayscale"`` for an image; ``mean``/``std`` are the
    normalization, ``float = (value - mean) / std`` per channel; ``labels`` one name per class
    (along the tensor's last axis); ``value_labels`` one name per value of a class map.
    """

    name: str = ""
    description: str = ""
    kind: str | None = None
    color: str | None = None
    default_size: tuple[int, int] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    value_range: tuple[int, int] | None = None
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()
    labels: tuple[str, ...] | None = None
    value_labels: tuple[str, ...] | None = None
    bounding_box: BoundingBoxInfo | None = None
    score_threshold: float | None = None
    score_transform: str | None = None
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class TfliteMetadata:
    """The standard TFLite metadata of a model, as :func:`read_tflite_metadata` returns it.

    Attributes:
        name, description, version, author, license: the model's.
        inputs: one :class:`TensorMeta` per input of the main subgraph, in order.
        outputs: one per output, in order.
        files: names of the files the metadata refers to (model, subgraph and tensors).
        packed: names of the files packed in the zip appended to the model.

    The properties give what an evaluation uses: :attr:`mean`, :attr:`std` and :attr:`color`
    of the first input, :attr:`labels` of the first output that has some (value labels of a
    segmenter otherwise), and :attr:`class_offset` (1 where the first label is ``background``
    or ``???``: the model's class 0 is no class).
    """

    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: tuple[TensorMeta, ...] = ()
    outputs: tuple[TensorMeta, ...] = ()
    files: tuple[str, ...] = ()
    packed: tuple[str, ...] = ()

    @property
    def mean(self) -> tuple[float, ...] | None:
        """The first input's normalization mean, or None where the metadata gives none."""
        return self.inputs[0].mean or None if self.inputs else None

    @property
    def std(self) -> tuple[float, ...] | None:
        """The first input's normalization std, or None where the metadata gives none."""
        return self.inputs[0].std or None if self.inputs else None

    @property
    def color(self) -> str | None:
        """``"rgb"`` or ``"grayscale"`` where the first input is an image that says so."""
        return self.inputs[0].color if self.inputs else None

    @property
    def labels(self) -> tuple[str, ...] | None:
        """Class names: the first output's axis labels, else the first value labels, else None."""
        for t in self.outputs:
            if t.labels:
                return t.labels
        for t in self.outputs:
            if t.value_labels:
                return t.value_labels
        return None

    @property
    def class_offset(self) -> int:
        """1 where the first label is a background (``background``, ``???``): model class k is label k; else 0."""
        labels = self.labels
        return 1 if labels and labels[0].strip().lower() in BACKGROUND_LABELS else 0

    def class_names(self, classes: int) -> tuple[str, ...] | None:
        """Names for a classifier's ``classes`` outputs: an output's labels, one per class.

        Labels with a first background one and one more name than ``classes`` name the
        outputs from their second line (the model has no output for the background).
        """
        for t in self.outputs:
            if t.labels and len(t.labels) == classes:
                return t.labels
        for t in self.outputs:
            if t.labels and len(t.labels) == classes + 1 and t.labels[0].strip().lower() in BACKGROUND_LABELS:
                return t.labels[1:]
        return None

    def output_roles(self) -> dict[str, int]:
        """A detector's outputs by role (``boxes``, ``classes``, ``scores``, ``count``) as output positions.

        From the outputs' metadata names as the TFLite Support detector writer names them
        (``location``, ``category``, ``score``, ``number of detections``); empty otherwise.
        """
        names = {"location": "boxes", "category": "classes", "score": "scores",
                 "number of detections": "count"}
        roles = {names[t.name.strip().lower()]: i for i, t in enumerate(self.outputs)
                 if t.name.strip().lower() in names}
        return roles if len(roles) == 4 else {}


def packed_files(data: bytes) -> dict[str, bytes]:
    """The files packed in the zip appended to a model (name -> bytes); empty where there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, NotImplementedError):
        return {}


def _floats(t: _T, field_no: int) -> tuple[float, ...]:
    return tuple(float(v) for v in t.vec_scalars(field_no, _F32))


def _union(t: _T, field_no: int) -> tuple[int, _T | None]:
    """(type, table) of the union whose type is field ``field_no`` and value the next field."""
    kind = int(t.scalar(field_no, _U8, 0))
    return kind, (t.table(field_no + 1) if kind else None)


def _label_lines(raw: bytes) -> tuple[str, ...]:
    lines = [line.strip() for line in raw.decode("utf-8", "replace").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)


def _files(t: _T, field_no: int) -> list[tuple[str, str, str]]:
    """(name, type, locale) of each AssociatedFile in a vector."""
    return [((f.string(0) or ""), _FILE_TYPES.get(int(f.scalar(2, _I8, 0)), "unknown"), (f.string(3) or ""))
            for f in t.vec_tables(field_no)]


def _pick_labels(files: list[tuple[str, str, str]], kind: str, packed: dict[str, bytes]) -> tuple[str, ...] | None:
    """The labels of the first file of ``kind`` packed in the model (one without a locale first)."""
    candidates = [f for f in files if f[1] == kind]
    candidates.sort(key=lambda f: bool(f[2]))
    for name, _, _ in candidates:
        if name in packed:
            return _label_lines(packed[name])
    return None


def _process_units(units: list[_T], meta: dict[str, object]) -> None:
    for unit in units:
        kind, opts = _union(unit, 0)
        if opts is None:
            continue
        if kind == 1:
            meta["mean"], meta["std"] = _floats(opts, 0), _floats(opts, 1)
        elif kind == 2:
            meta["score_transform"] = _SCORE_TRANSFORMS.get(int(opts.scalar(0, _I8, 0)), "identity")
        elif kind == 3:
            meta["score_threshold"] = float(opts.scalar(0, _F32, 0.0))


def _tensor(t: _T, packed: dict[str, bytes]) -> tuple[TensorMeta, list[str]]:
    meta: dict[str, object] = {"name": t.string(0) or "", "description": t.string(1) or ""}
    content = t.table(3)
    if content is not None:
        kind, props = _union(content, 0)
        meta["kind"] = _CONTENT_KINDS.get(kind)
        if kind == 2 and props is not None:
            meta["color"] = _COLOR_SPACES.get(int(props.scalar(0, _I8, 0)))
            size = props.table(1)
            if size is not None:
                w, h = int(size.scalar(0, _U32, 0)), int(size.scalar(1, _U32, 0))
                meta["default_size"] = (w, h) if w and h else None
        elif kind == 3 and props is not None:
            meta["bounding_box"] = BoundingBoxInfo(
                index=tuple(int(v) for v in props.vec_scalars(0, _U32)),
                type=_BOX_TYPES.get(int(props.scalar(1, _I8, 0)), "unknown"),
                coordinates=_COORDINATES.get(int(props.scalar(2, _I8, 0)), "ratio"))
        rng = content.table(2)
        if rng is not None:
            meta["value_range"] = (int(rng.scalar(0, _I32, 0)), int(rng.scalar(1, _I32, 0)))
    _process_units(t.vec_tables(4), meta)
    stats = t.table(5)
    if stats is not None:
        meta["stats_max"], meta["stats_min"] = _floats(stats, 0), _floats(stats, 1)
    files = _files(t, 6)
    meta["labels"] = _pick_labels(files, "tensor_axis_labels", packed)
    meta["value_labels"] = _pick_labels(files, "tensor_value_labels", packed)
    meta["files"] = tuple(f[0] for f in files)
    return TensorMeta(**meta), [f[0] for f in files]  # type: ignore[arg-type]


def parse_tflite_metadata(buffer: bytes, packed: dict[str, bytes] | None = None) -> TfliteMetadata:
    """Parse a ``TFLITE_METADATA`` buffer; ``packed`` are the model's packed files (for the labels).

    Raises:
        ValueError: the buffer is not a ``ModelMetadata`` flatbuffer.
    """
    buf = bytearray(buffer)
    if len(buf) < 8:
        raise ValueError("the metadata buffer is too short")
    packed = packed or {}
    root = _T(buf, int.from_bytes(buf[0:4], "little"))
    files = [f[0] for f in _files(root, 6)]
    inputs: list[TensorMeta] = []
    outputs: list[TensorMeta] = []
    subgraphs = root.vec_tables(3)
    if subgraphs:
        sg = subgraphs[0]
        files += [f[0] for f in _files(sg, 4)]
        for field_no, into in ((2, inputs), (3, outputs)):
            for t in sg.vec_tables(field_no):
                tm, names = _tensor(t, packed)
                into.append(tm)
                files += names
        # Subgraph-wide input process units (normalization) apply to the first input when it has none.
        shared: dict[str, object] = {}
        _process_units(sg.vec_tables(5), shared)
        if inputs and shared.get("mean") and not inputs[0].mean:
            inputs[0] = replace(inputs[0], mean=shared["mean"], std=shared["std"])  # type: ignore[arg-type]
    return TfliteMetadata(
        name=root.string(0) or "", description=root.string(1) or "", version=root.string(2) or "",
        author=root.string(4) or "", license=root.string(5) or "", inputs=tuple(inputs),
        outputs=tuple(outputs), files=tuple(dict.fromkeys(f for f in files if f)), packed=tuple(packed))


def read_tflite_metadata(model: Union[ModelSource, FlatModel], *, strict: bool = True) -> TfliteMetadata | None:
    """The standard TFLite metadata of a ``.tflite`` (path, bytes or parsed), or None where it has none.

    Label files are read from the zip the metadata writers append to the model. With
    ``strict=False`` an unreadable ``TFLITE_METADATA`` entry gives an
    :class:`UnreadableMetadataWarning` and None: the runtime runs such a model, so an
    evaluation goes on as for a model without metadata.

    Raises:
        ModelFileError: the file is not a readable TFLite model, or (``strict``) its
            ``TFLITE_METADATA`` entry is not a metadata flatbuffer.
    """
    flat = model if isinstance(model, FlatModel) else read_flat_model(model)
    raw = flat.metadata.get(TFLITE_METADATA_NAME)
    if raw is None:
        return None
    try:
        return parse_tflite_metadata(raw, packed_files(flat.raw))
    except (ValueError, IndexError, UnicodeDecodeError, TypeError, struct.error) as exc:
        if not strict:
            warnings.warn(f"the model's {TFLITE_METADATA_NAME} entry cannot be read ({exc}); going on without it",
                          UnreadableMetadataWarning, stacklevel=2)
            return None
        raise ModelFileError(f"the model's {TFLITE_METADATA_NAME} entry is not TFLite metadata ({exc})",
                             argument="model", fix="write the metadata again with a TFLite metadata writer, or "
                                                   "give --mean/--std and --labels") from exc
