"""Which preprocessing a model gets, and where each part of it came from.

:func:`choose_preprocess` takes each part (size, color, mean/std, resize) from the first
of, in order of authority:

1. the caller's arguments (the command line's ``--size``, ``--color``, ``--mean``/``--std``);
2. the model's edgeq metadata (what calibrated it);
3. the standard TFLite metadata (``TFLITE_METADATA``: normalization, color space) — for a
   float input; an integer input is fed raw pixels as the TFLite Task Library does, whatever
   the normalization says;
4. the model's input: its shape gives size and color; an integer input with no
   metadata is fed the raw pixels in its own type (uint8 as is, int8 as ``pixel - 128``),
   the way Coral's, TF Hub's and most ``*_quant`` models are fed: their input scale
   maps the pixels to what they were trained on. A float input with nothing to say
   gets pixels in ``[0, 1]``, a guess, and a warning says so.

Raw pixels are a :class:`~edgeq_device.model.preprocess.Preprocess` like any other:
``mean = zero_point (+128 for int8), std = 1 / scale``, so that quantizing the float
sample with the input's own scale and zero point gives back exactly the pixel (uint8) or
``pixel - 128`` (int8).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from ..errors import EdgeqWarning, InvalidArgumentError
from .flatbuffer import FlatModel, ModelSource, read_flat_model
from .metadata import METADATA_NAME, read_metadata
from .preprocess import ColorMode, Preprocess
from .tflite_metadata import read_tflite_metadata

__all__ = ["GuessedPreprocessWarning", "PreprocessChoice", "as_choice", "choose_preprocess"]

FLAG, EDGEQ, TFLITE, INPUT, DEFAULT, CALLER = (
    "flag", "edgeq metadata", "TFLite metadata", "input", "default", "given")


class GuessedPreprocessWarning(EdgeqWarning):
    """A float-input model with no metadata: pixels in [0, 1] is a guess."""


@dataclass(frozen=True)
class PreprocessChoice:
    """A :class:`Preprocess` with where each part came from and one line that says it all.

    ``sources`` maps ``size``, ``color``, ``normalization`` to ``"flag"``, ``"edgeq metadata"``,
    ``"TFLite metadata"``, ``"input"`` (its shape or type), ``"default"`` or ``"given"``
    (a :class:`Preprocess` passed to the API); ``summary`` is what results print after
    ``preprocessing``, e.g. ``raw uint8 pixels (model input is uint8, no metadata); 224x224 rgb
    (input shape)``; ``guessed`` is True where the normalization is a guess.
    """

    preprocess: Preprocess
    summary: str
    sources: dict[str, str] = field(default_factory=dict)
    guessed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the summary, the sources and the preprocessing itself."""
        return {"summary": self.summary, "sources": dict(self.sources), "preprocess": self.preprocess.to_dict()}


def _num(v: float) -> str:
    return f"{v:g}"


def _channels(values: tuple[float, ...]) -> str:
    return _num(values[0]) if len(set(values)) == 1 else ",".join(_num(v) for v in values)


def normalization_text(p: Preprocess) -> str:
    """``(pixel - 127.5) / 127.5`` for the preprocessing's mean and std."""
    return f"(pixel - {_channels(p.mean)}) / {_channels(p.std)}"


_WHERE = {INPUT: "input shape", FLAG: "--size/--color"}


def _size_text(p: Preprocess, size_from: str, color_from: str) -> str:
    size = f"{p.size[0]}x{p.size[1]}" if p.size else "image size"
    layout = ", nchw" if p.layout.value == "nchw" else ""
    where = _WHERE.get(size_from, size_from)
    if color_from != size_from:
        where += f"; color from {_WHERE.get(color_from, color_from)}"
    return f"{size} {p.color.value}{layout} ({where})"


def _shape_defaults(flat: FlatModel) -> dict[str, Any]:
    t = flat.main.tensors[flat.main.inputs[0]]
    sig = tuple(int(d) for d in t.shape_signature)
    if len(sig) == 4:
        _, a, b, c = sig
        if c in (1, 3) and a > 0 and b > 0:
            return {"size": (b, a), "color": "l" if c == 1 else "rgb"}
        if a in (1, 3) and b > 0 and c > 0:
            return {"size": (c, b), "color": "l" if a == 1 else "rgb", "layout": "nchw"}
    elif len(sig) == 3 and sig[1] > 0 and sig[2] > 0:  # [1, H, W] grayscale
        return {"size": (sig[2], sig[1]), "color": "l"}
    return {}


def _raw_pixels(flat: FlatModel) -> tuple[float, float, str] | None:
    """(mean, std, dtype) that feed an integer input its raw pixels, or None for other inputs."""
    t = flat.main.tensors[flat.main.inputs[0]]
    q = t.quantization
    if t.dtype not in ("UINT8", "INT8") or len(q.scale) != 1:
        return None
    zp = q.zero_point[0] if q.zero_point else 0
    shift = 128 if t.dtype == "INT8" else 0
    return float(zp + shift), 1.0 / q.scale[0], t.dtype.lower()


def choose_preprocess(
    model: ModelSource | FlatModel,
    *,
    size: tuple[int, int] | None = None,
    color: str | ColorMode | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    resize: str | None = None,
    warn: bool = True,
) -> PreprocessChoice:
    """The preprocessing of a model and where each part came from (see the module's docstring).

    Args:
        model: path, bytes or parsed flatbuffer of the ``.tflite``.
        size, color, mean, std, resize: the caller's choices; each given one wins.
        warn: give a :class:`GuessedPreprocessWarning` where a float input's normalization is
            a guess (no flag, no metadata).

    Raises:
        ModelFileError: the model cannot be read, or its metadata is corrupt.
        InvalidArgumentError: a given value is not valid preprocessing.
    """
    flat = model if isinstance(model, FlatModel) else read_flat_model(model)
    meta = read_metadata(flat.raw) if METADATA_NAME in flat.metadata else None
    std_meta = read_tflite_metadata(flat, strict=False)
    t_in = flat.main.tensors[flat.main.inputs[0]]
    sources: dict[str, str] = {}
    guessed = False
    if meta is not None and meta.preprocess is not None:
        base = meta.preprocess
        sources = {"size": EDGEQ, "color": EDGEQ, "normalization": EDGEQ}
        norm = f"{normalization_text(base)} (edgeq metadata)"
    else:
        shape = _shape_defaults(flat)
        sources["size"] = sources["color"] = INPUT if shape else DEFAULT
        first = std_meta.inputs[0] if std_meta is not None and std_meta.inputs else None
        meta_color = None if first is None or first.color is None else ("l" if first.color == "grayscale" else "rgb")
        if meta_color is not None and shape.get("color", meta_color) == meta_color:
            # The input shape's channel count wins where they disagree (writers default to RGB).
            shape["color"] = meta_color
            sources["color"] = TFLITE
        raw = _raw_pixels(flat)
        if raw is not None:
            m, s, dtype = raw
            shape.update(mean=m, std=s)
            sources["normalization"] = INPUT
            what = "raw uint8 pixels" if dtype == "uint8" else "raw pixels - 128 as int8"
            why = (f"model input is {dtype}; its TFLite metadata's normalization applies to float input"
                   if first is not None and first.mean else f"model input is {dtype}, no metadata")
            norm = f"{what} ({why})"
        elif first is not None and (normalization := _usable(first.mean, first.std, shape.get("color"))):
            shape.update(mean=normalization[0], std=normalization[1])
            sources["normalization"] = TFLITE
            norm = f"{normalization_text(Preprocess(mean=normalization[0], std=normalization[1]))} (TFLite metadata)"
        else:
            sources["normalization"] = DEFAULT
            guessed = mean is None and std is None
            what = "no normalization in its metadata" if std_meta is not None else "no metadata"
            norm = f"(pixel - 0) / 255, a guess (model input is {t_in.dtype.lower()}, {what}: give --mean/--std)"
        base = Preprocess(**shape)
    changes: dict[str, object] = {}
    for name, value in (("size", size), ("color", color), ("mean", mean), ("std", std), ("resize", resize)):
        if value is not None:
            changes[name] = value
    pre = replace(base, **changes) if changes else base  # type: ignore[arg-type]
    if size is not None:
        sources["size"] = FLAG
    if color is not None:
        sources["color"] = FLAG
    if mean is not None or std is not None:
        given = "--mean/--std" if mean is not None and std is not None else ("--mean" if mean is not None
                                                                              else "--std")
        sources["normalization"] = FLAG
        norm = f"{normalization_text(pre)} ({given})"
    summary = f"{norm}; {_size_text(pre, sources['size'], sources['color'])}"
    if guessed and warn:
        warnings.warn(f"model {_where(model)} has a {t_in.dtype.lower()} input and no metadata: feeding pixels "
                      "in [0, 1] ((pixel - 0) / 255), a guess; give --mean/--std (mean=, std=) as its authors "
                      "normalize", GuessedPreprocessWarning, stacklevel=2)
    return PreprocessChoice(pre, summary, sources, guessed)


def _usable(mean: tuple[float, ...], std: tuple[float, ...],
            color: object) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """A metadata's normalization as (mean, std) a :class:`Preprocess` takes, or None (a warning says why).

    Three equal values for a grayscale input are one (writers repeat the value per channel).
    """
    if not mean or not std:
        return None
    if color == "l":
        mean, std = (mean[:1] if len(set(mean)) == 1 else mean), (std[:1] if len(set(std)) == 1 else std)
    try:
        Preprocess(mean=mean, std=std, color=color if isinstance(color, str) else "rgb")
    except InvalidArgumentError as exc:
        warnings.warn(f"the model's TFLite metadata normalization (mean {list(mean)}, std {list(std)}) is unusable "
                      f"({exc.message}); it is left out", EdgeqWarning, stacklevel=3)
        return None
    return mean, std


def _where(model: object) -> str:
    return "<bytes>" if isinstance(model, (bytes, bytearray, memoryview, FlatModel)) else str(model)


def as_choice(model: ModelSource | FlatModel, preprocess: Preprocess | PreprocessChoice | None, *,
              warn: bool = True) -> PreprocessChoice:
    """What an evaluation was given as a :class:`PreprocessChoice`: chosen from the model where None."""
    if isinstance(preprocess, PreprocessChoice):
        return preprocess
    if preprocess is None:
        return choose_preprocess(model, warn=warn)
    return PreprocessChoice(preprocess, f"{normalization_text(preprocess)}; "
                                        f"{_size_text(preprocess, CALLER, CALLER)}",
                            {"size": CALLER, "color": CALLER, "normalization": CALLER})
