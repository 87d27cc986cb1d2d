"""The sweep's grid as data: models × modes × options, one :class:`Cell` per job, each with its key.

A model is a file (``.keras``, ``.h5``, a SavedModel folder) or a builder, an importable
``module:function`` with its keyword arguments, named in a ``models.toml``::

    pythonpath = ["."]                 # folders (relative to this file) the builders import from

    [[model]]
    name = "cnn16"
    builder = "sweep_models:digits_cnn"
    args = { width = 16 }

    [[model]]
    name = "mine"
    file = "models/mine.keras"

A cell's key is the sha256 of what decides its figures: the model's hash (a file's bytes; a
builder's spec and its module's source), the data's hash (the files of a folder, the bytes of
arrays) and the settings (mode, options, samples, seed, timing). The same key in the results
store means the cell was run already (see :mod:`edgeq.sweeps.run`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq._toml import toml
from edgeq.errors import InvalidArgumentError
from edgeq.store.records import canonical_json

__all__ = ["CONVERT_MODES", "OPTION_NAMES", "TRAIN_MODES", "Cell", "ModelSpec", "build_grid", "data_hash",
           "load_models_toml", "model_specs"]

#: The modes a sweep converts directly (as :func:`edgeq.convert`).
CONVERT_MODES = ("float32", "dynamic", "float16", "int8", "int16x8", "int4")
#: The modes that fine-tune the model first (need ``train=`` data), then convert to int8.
TRAIN_MODES = ("qat", "clustered", "pruned")
#: The options a sweep varies, and the modes each applies to (other modes ignore it).
OPTION_NAMES: Mapping[str, tuple[str, ...]] = {
    "ranges": ("int8",),
    "a16": ("int8",),
    "io": ("int8", *TRAIN_MODES),
}
_DEFAULTS: Mapping[str, Any] = {"ranges": "minmax", "a16": 0, "io": "float"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the sweep: a file, or a builder (``module:function`` and its ``args``).

    ``pythonpath``: folders a worker puts first on ``sys.path`` before importing the builder.
    """

    name: str
    file: str | None = None
    builder: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    pythonpath: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise InvalidArgumentError("a model name must be letters, digits, '_', '.' or '-'", argument="models",
                                       received=self.name, fix="give e.g. name = \"cnn16\"")
        if (self.file is None) == (self.builder is None):
            raise InvalidArgumentError("a model needs exactly one of file or builder", argument="models",
                                       received=self.name, fix="give file = \"m.keras\" or builder = \"module:function\"")
        if self.builder is not None and not re.match(r"^[\w.]+:[\w]+$", self.builder):
            raise InvalidArgumentError("a builder is an importable 'module:function'", argument="models",
                                       received=self.builder, fix="give e.g. builder = \"my_models:small_cnn\"")
        if self.file is not None and not Path(self.file).exists():
            raise InvalidArgumentError("no model at this path", argument="models", received=self.file,
                                       fix="give the path of a .keras/.h5 file or a SavedModel folder")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what a job receives and ``results.json`` keeps)."""
        return {"name": self.name, "file": self.file, "builder": self.builder, "args": dict(self.args),
                "pythonpath": list(self.pythonpath)}

    def content_hash(self) -> str:
        """sha256 of what the model is: a file's (or folder's) bytes; a builder's spec and its module's source."""
        if self.file is not None:
            return _path_hash(Path(self.file))
        h = hashlib.sha256(canonical_json({"builder": self.builder, "args": dict(self.args)}).encode())
        module = str(self.builder).split(":")[0]
        source = _module_file(module, self.pythonpath)
        if source is None:
            raise InvalidArgumentError("cannot find the builder's module", argument="models", received=module,
                                       fix="put its folder in the models.toml's pythonpath or on PYTHONPATH")
        h.update(source.read_bytes())
        return h.hexdigest()


def _module_file(module: str, pythonpath: Sequence[str]) -> Path | None:
    """The source file of ``module`` without importing it (its folders searched first)."""
    import sys

    saved = list(sys.path)
    try:
        sys.path[:0] = [str(p) for p in pythonpath]
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    finally:
        sys.path[:] = saved
    return Path(spec.origin) if spec is not None and spec.origin and Path(spec.origin).is_file() else None


def _path_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path) if p != path else p.name).encode() + b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def data_hash(data: Any, argument: str = "data") -> str | None:
    """sha256 of a data argument: a path's files, arrays' bytes (with shape and dtype); None for None.

    Raises:
        InvalidArgumentError: the data is neither a path nor arrays (a sweep sends its data to workers).
    """
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if not p.exists():
            raise InvalidArgumentError("no data at this path", argument=argument, received=str(p),
                                       fix="give an image folder, a .npy/.npz file, or arrays")
        return _path_hash(p)
    parts = data if isinstance(data, (tuple, list)) else (data,)
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"none")
            continue
        if not isinstance(part, np.ndarray):
            raise InvalidArgumentError("a sweep takes data as a path or arrays", argument=argument,
                                       received=type(part).__name__,
                                       fix="give an image folder, a .npz file, or (x, y) NumPy arrays")
        a = np.ascontiguousarray(part)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_models_toml(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """The models named in a ``models.toml`` (see the module docs).

    Raises:
        InvalidArgumentError: the file is missing, not TOML, or a model entry is wrong.
    """
    p = Path(path)
    try:
        doc = toml.loads(p.read_text())
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the file: {exc.strerror or exc}", argument="models",
                                   received=str(p), fix="give the path of a models.toml") from exc
    except toml.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"not valid TOML ({exc})", argument="models", received=str(p),
                                   fix="see the models.toml format in edgeq.sweeps.grid") from exc
    entries = doc.get("model")
    if not isinstance(entries, list) or not entries:
        raise InvalidArgumentError("no [[model]] entries", argument="models", received=str(p),
                                   fix="add [[model]] tables with name and file or builder")
    base = p.resolve().parent
    search = tuple(str((base / q).resolve()) for q in doc.get("pythonpath", []))
    specs = []
    for e in entries:
        if not isinstance(e, dict) or "name" not in e:
            raise InvalidArgumentError("a [[model]] entry needs a name", argument="models", received=e,
                                       fix="add name = \"...\"")
        unknown = set(e) - {"name", "file", "builder", "args"}
        if unknown:
            raise InvalidArgumentError("unknown keys in a [[model]] entry", argument="models",
                                       received=sorted(unknown), fix="use name, file, builder and args")
        file = str((base / e["file"]).resolve()) if "file" in e else None
        specs.append(ModelSpec(name=str(e["name"]), file=file, builder=e.get("builder"),
                               args=dict(e.get("args", {})), pythonpath=search))
    return specs


def model_specs(models: Any) -> list[ModelSpec]:
    """``models`` as specs: a ``models.toml`` path, model file paths, ``ModelSpec`` values, or a mix.

    Raises:
        InvalidArgumentError: no model, a name given twice, or an entry that is none of those.
    """
    items = [models] if isinstance(models, (str, os.PathLike, ModelSpec)) else list(models or [])
    specs: list[ModelSpec] = []
    for m in items:
        if isinstance(m, ModelSpec):
            specs.append(m)
        elif isinstance(m, (str, os.PathLike)) and str(m).endswith(".toml"):
            specs.extend(load_models_toml(m))
        elif isinstance(m, (str, os.PathLike)):
            p = Path(m)
            specs.append(ModelSpec(name=p.stem if p.is_file() else p.name, file=str(p.resolve())))
        else:
            raise InvalidArgumentError("a sweep's models are files, a models.toml or ModelSpec values",
                                       argument="models", received=type(m).__name__,
                                       fix="save the Keras model (model.save('m.keras')) or name a builder in a models.toml")
    if not specs:
        raise InvalidArgumentError("no models to sweep", argument="models", received=models,
                                   fix="give model files or a models.toml")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidArgumentError("two models have the same name", argument="models", received=dup,
                                   fix="give each [[model]] its own name (or rename the files)")
    return specs


@dataclass(frozen=True)
class Cell:
    """One job of the sweep: a model in one mode with its options, and the key that names its result."""

    model: ModelSpec
    mode: str
    options: Mapping[str, Any]
    key: str

    @property
    def name(self) -> str:
        """``model/mode`` and the options that differ from their defaults (``cnn16/int8 ranges=mse``)."""
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()) if v != _DEFAULTS[k])
        return f"{self.model.name}/{self.mode}" + (f" {opts}" if opts else "")

    @property
    def folder(self) -> str:
        """The cell's folder name under ``cells/``: its name made file-safe."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.name.replace("/", "__"))


def _option_values(options: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for k, v in (options or {}).items():
        if k not in OPTION_NAMES:
            raise InvalidArgumentError("unknown sweep option", argument="options", received=k,
                                       fix=f"use {', '.join(OPTION_NAMES)}")
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        if not vals:
            raise InvalidArgumentError("an option needs at least one value", argument="options", received=k,
                                       fix=f"give e.g. {k}=[{_DEFAULTS[k]!r}]")
        out[k] = vals
    return out


_CALIBRATED = ("int8", "int16x8", "int4", *TRAIN_MODES)
_TRAIN_SETTINGS = ("train_epochs", "clusters", "sparsity")


def _relevant(mode: str, hashes: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data and settings a mode's figures depend on: a float16 cell's key has no calibration in it, so
    changing the calibration data reruns only the calibrated cells."""
    data = {k: v for k, v in hashes.items() if (k != "calibration" or mode in _CALIBRATED)
            and (k != "train" or mode in TRAIN_MODES)}
    sets = {k: v for k, v in settings.items() if (k != "samples" or mode in _CALIBRATED)
            and (k not in _TRAIN_SETTINGS or mode in TRAIN_MODES)}
    return data, sets


def build_grid(specs: Sequence[ModelSpec], modes: Sequence[str], options: Mapping[str, Any] | None,
               hashes: Mapping[str, Any], settings: Mapping[str, Any]) -> list[Cell]:
    """Every cell: each model × mode × the options that apply to that mode (others left out, so a
    float16 cell is not run once per ``ranges`` value).

    ``hashes``: the data's hashes; ``settings``: what else decides the figures; both go in each key.
    """
    opts = _option_values(options)
    model_hash = {s.name: s.content_hash() for s in specs}
    cells: list[Cell] = []
    for spec, mode in itertools.product(specs, modes):
        names = [k for k in opts if mode in OPTION_NAMES[k]]
        seen = set()
        for combo in itertools.product(*(opts[k] for k in names)):
            chosen = {k: _DEFAULTS[k] for k, ms in OPTION_NAMES.items() if mode in ms}
            chosen.update(dict(zip(names, combo)))
            marker = canonical_json(chosen)
            if marker in seen:
                continue
            seen.add(marker)
            data, sets = _relevant(mode, hashes, settings)
            key = hashlib.sha256(canonical_json({"model": model_hash[spec.name], "data": data, "mode": mode,
                                                 "options": chosen, "settings": sets}).encode()).hexdigest()
            cells.append(Cell(spec, mode, chosen, key))
    return cells
