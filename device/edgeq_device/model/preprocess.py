"""The one image preprocessing implementation of edgeq (Pillow + NumPy).

The same :class:`Preprocess` turns an image file into model input when the host
calibrates a model, when the host evaluates it and when a board evaluates it,
so what calibrated the model is what the board feeds it. A converted model
carries its ``Preprocess`` in its edgeq metadata.

Float input is ``(pixel - mean) / std`` per channel, pixels in 0..255.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ..errors import DataError, InvalidArgumentError

__all__ = ["ColorMode", "CropMode", "Layout", "Preprocess", "ResizeMethod", "load_image", "parse_channels",
           "parse_size"]

Number = Union[float, int]


class ColorMode(str, Enum):
    """How many channels the model takes: ``rgb`` (3) or ``l`` (1, grayscale)."""

    RGB = "rgb"
    L = "l"


class ResizeMethod(str, Enum):
    """Pillow resampling filter used to resize."""

    BILINEAR = "bilinear"
    NEAREST = "nearest"
    BICUBIC = "bicubic"
    AREA = "area"


class CropMode(str, Enum):
    """``none`` resizes the whole image; ``center`` resizes the short side then crops the center."""

    NONE = "none"
    CENTER = "center"


class Layout(str, Enum):
    """Channel layout of one sample: ``nhwc`` (TFLite's default) or ``nchw``."""

    NHWC = "nhwc"
    NCHW = "nchw"


_PIL_FILTERS = {"bilinear": 2, "nearest": 0, "bicubic": 3, "area": 4}  # Image.Resampling values


def _enum(cls: type[Enum], value: Any, argument: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise InvalidArgumentError(
            "unknown value", argument=argument, received=value, fix=f"use one of: {choices}"
        ) from None


def _per_channel(value: Number | Sequence[Number], argument: str) -> tuple[float, ...]:
    vals = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)  # type: ignore[arg-type]
    if not vals or len(vals) not in (1, 3):
        raise InvalidArgumentError(
            "expected one number or one per channel", argument=argument, received=value,
            fix="give a number such as 127.5 or three numbers for R, G, B",
        )
    return vals


def parse_size(text: str, argument: str = "--size") -> tuple[int, int]:
    """``"224x224"`` (also ``224×224``) as ``(width, height)``, both positive: a command line's ``--size``.

    Raises:
        InvalidArgumentError: ``text`` is not two positive integers joined by ``x``.
    """
    try:
        width, height = (int(p) for p in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:
        raise InvalidArgumentError("expected WIDTHxHEIGHT", argument=argument, received=text,
                                   fix=f"give two positive integers, e.g. {argument} 224x224")
    return width, height


def parse_channels(text: str, argument: str) -> float | tuple[float, float, float]:
    """``"127.5"`` as one number, ``"123.7,116.3,103.5"`` as three (R, G, B): a command line's ``--mean``/``--std``.

    Raises:
        InvalidArgumentError: ``text`` is not one finite number or three separated by commas.
    """
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise InvalidArgumentError("expected one number or three (R,G,B)", argument=argument, received=text,
                                   fix=f"give e.g. {argument} 127.5 or {argument} 123.7,116.3,103.5")
    return values[0] if len(values) == 1 else (values[0], values[1], values[2])


@dataclass(frozen=True, init=False)
class Preprocess:
    """How an image file becomes one model input sample.

    Args:
        size: ``(width, height)`` to resize to, or ``None`` to keep the image's size.
        color: ``"rgb"`` or ``"l"`` (grayscale).
        resize: ``"bilinear"``, ``"nearest"``, ``"bicubic"`` or ``"area"``.
        crop: ``"none"`` or ``"center"`` (resize the short side to ``size / crop_fraction``,
            then crop the center ``size``).
        crop_fraction: the fraction of the short side the center crop keeps.
        mean: subtracted from pixels (0..255); one number or one per channel.
        std: pixels are divided by it after subtracting ``mean``.
        layout: ``"nhwc"`` or ``"nchw"`` for one sample.

    The defaults give float pixels in ``[0, 1]`` (``mean=0, std=255``).
    """

    size: tuple[int, int] | None
    color: ColorMode
    resize: ResizeMethod
    crop: CropMode
    crop_fraction: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: Layout

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        color: ColorMode | str = ColorMode.RGB,
        resize: ResizeMethod | str = ResizeMethod.BILINEAR,
        crop: CropMode | str = CropMode.NONE,
        crop_fraction: float = 0.875,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 255.0,
        layout: Layout | str = Layout.NHWC,
    ) -> None:
        # Strings and single numbers are accepted and normalized to the enums and tuples.
        set_ = object.__setattr__
        for name, value in (("size", size), ("color", color), ("resize", resize), ("crop", crop),
                            ("crop_fraction", crop_fraction), ("mean", mean), ("std", std), ("layout", layout)):
            set_(self, name, value)
        if self.size is not None:
            try:
                w, h = (int(v) for v in self.size)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    "expected (width, height)", argument="size", received=self.size,
                    fix="give two positive integers, e.g. (224, 224) or --size 224x224",
                ) from None
            if w <= 0 or h <= 0:
                raise InvalidArgumentError(
                    "width and height must be positive", argument="size", received=self.size,
                    fix="give two positive integers, e.g. (224, 224)",
                )
            set_(self, "size", (w, h))
        set_(self, "color", _enum(ColorMode, self.color, "color"))
        set_(self, "resize", _enum(ResizeMethod, self.resize, "resize"))
        set_(self, "crop", _enum(CropMode, self.crop, "crop"))
        set_(self, "layout", _enum(Layout, self.layout, "layout"))
        set_(self, "mean", _per_channel(self.mean, "mean"))
        set_(self, "std", _per_channel(self.std, "std"))
        if any(s == 0 for s in self.std):
            raise InvalidArgumentError("std must not be zero", argument="std", received=self.std,
                                       fix="give a non-zero number such as 255 or 127.5")
        if not 0 < float(self.crop_fraction) <= 1:
            raise InvalidArgumentError("must be in (0, 1]", argument="crop_fraction",
                                       received=self.crop_fraction, fix="use e.g. 0.875")
        channels = self.channels
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if len(vals) == 3 and channels == 1:
                raise InvalidArgumentError(
                    "three values given for a one-channel (grayscale) input", argument=name,
                    received=vals, fix="give one number, or use color='rgb'",
                )

    @classmethod
    def from_scale_offset(cls, scale: float, offset: float, **kwargs: Any) -> Preprocess:
        """Build from ``float = pixel * scale + offset`` (e.g. Keras' ``Rescaling``)."""
        if scale == 0:
            raise InvalidArgumentError("scale must not be zero", argument="scale", received=scale,
                                       fix="give e.g. 1/255")
        return cls(mean=-offset / scale, std=1.0 / scale, **kwargs)

    @property
    def channels(self) -> int:
        """Number of channels of one sample (3 for rgb, 1 for grayscale)."""
        return 3 if self.color is ColorMode.RGB else 1

    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one preprocessed sample without batch, if ``size`` is set."""
        if self.size is None:
            return None
        w, h = self.size
        c = self.channels
        return (c, h, w) if self.layout is Layout.NCHW else (h, w, c)

    def apply(self, image: Any) -> np.ndarray:
        """Turn a Pillow image into a float32 array of one sample (no batch dimension)."""
        from PIL import Image

        mode = "RGB" if self.color is ColorMode.RGB else "L"
        if image.mode != mode:
            image = image.convert(mode)
        if self.size is not None:
            w, h = self.size
            flt = Image.Resampling(_PIL_FILTERS[self.resize.value])
            if self.crop is CropMode.CENTER:
                iw, ih = image.size
                short = min(iw, ih)
                target_short = max(w, h) / self.crop_fraction
                k = target_short / short
                image = image.resize((max(w, round(iw * k)), max(h, round(ih * k))), flt)
                iw, ih = image.size
                left, top = (iw - w) // 2, (ih - h) // 2
                image = image.crop((left, top, left + w, top + h))
            elif image.size != (w, h):
                image = image.resize((w, h), flt)
        arr: np.ndarray = np.asarray(image, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout is Layout.NCHW:
            arr = np.transpose(arr, (2, 0, 1))
        return np.ascontiguousarray(arr, dtype=np.float32)

    def load(self, path: str | Path) -> np.ndarray:
        """Read an image file and apply this preprocessing."""
        return load_image(path, self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as strings)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Enum):
                d[k] = v.value
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("size") is not None:
            kw["size"] = tuple(kw["size"])
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k]) if isinstance(kw[k], list) else kw[k]
        return cls(**kw)


def load_image(path: str | Path, preprocess: Preprocess) -> np.ndarray:
    """Open an image file with Pillow and preprocess it.

    Raises:
        DataError: the file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess.apply(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError("cannot read image", argument="image", received=str(path),
                        fix="remove or replace the file") from exc
