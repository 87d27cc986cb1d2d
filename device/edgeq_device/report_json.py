"""The versioned JSON form of every result ``edgeq_device`` returns.

Each result is a frozen dataclass deriving from :class:`JsonResult`. Its
``to_dict()`` starts with ``"schema": "edgeq-device/<kind>/1"``, so a reader
(the host toolkit, a results store, a script on the laptop) knows what it holds
and which version of the layout; ``from_dict()`` rebuilds the object, nested
dataclasses included. The version changes only when a field changes meaning or
disappears; new fields may be added within a version.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, ClassVar, TypeVar

from .errors import InvalidArgumentError
from .fileio import atomic_write_text

__all__ = ["SCHEMA_PREFIX", "SCHEMA_VERSION", "JsonResult", "schema_id", "to_plain", "write_json"]

SCHEMA_PREFIX = "edgeq-device"
SCHEMA_VERSION = 1

R = TypeVar("R", bound="JsonResult")
_UNION_TYPE = getattr(types, "UnionType", None)  # ``X | Y`` annotations (Python >= 3.10)


def schema_id(kind: str, version: int = SCHEMA_VERSION) -> str:
    """The schema string of a result kind, e.g. ``"edgeq-device/bench/1"``."""
    return f"{SCHEMA_PREFIX}/{kind}/{version}"


def to_plain(value: Any) -> Any:
    """Turn dataclasses, enums, paths, tuples and NumPy values into JSON-ready Python values.

    Non-finite floats become None (JSON has no NaN).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy arrays and scalars
        return to_plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _build(tp: Any, value: Any) -> Any:
    """Rebuild a value of annotated type ``tp`` from its plain JSON form."""
    if value is None or tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (_UNION_TYPE is not None and origin is _UNION_TYPE):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value)
            except (TypeError, ValueError, KeyError):
                continue
        return value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        if args:
            return tuple(_build(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin is dict:
        vt = args[1] if len(args) == 2 else Any
        return {k: _build(vt, v) for k, v in value.items()}
    if origin is list:
        return [_build(args[0] if args else Any, v) for v in value]
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise TypeError(f"expected an object for {tp.__name__}")
            hints = typing.get_type_hints(tp)
            kwargs = {f.name: _build(hints.get(f.name, Any), value[f.name])
                      for f in dataclasses.fields(tp) if f.name in value and f.init}
            return tp(**kwargs)
        if issubclass(tp, Enum):
            return tp(value)
        if issubclass(tp, PurePath):
            return Path(value)
        if tp is float and isinstance(value, int):
            return float(value)
        if tp in (int, float, str, bool) and not isinstance(value, tp):
            raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
    return value


class JsonResult:
    """Mixin of the frozen result dataclasses: ``to_dict``/``to_json``/``save`` and back."""

    KIND: ClassVar[str] = "result"

    @classmethod
    def schema(cls) -> str:
        """This result's schema string, ``"edgeq-device/<kind>/1"``."""
        return schema_id(cls.KIND)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``"schema"`` first."""
        body = to_plain(self)
        return {"schema": self.schema(), **body}

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the JSON form atomically; refuse to replace an existing file unless ``overwrite``."""
        return atomic_write_text(path, self.to_json(), overwrite=overwrite, argument="json")

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Rebuild the result from :meth:`to_dict`'s output (checks the schema string).

        Raises:
            InvalidArgumentError: the dict holds another kind or a newer schema version.
        """
        schema = data.get("schema")
        if schema is not None and schema != cls.schema():
            raise InvalidArgumentError("JSON holds another kind of result or schema version",
                                       argument="data", received=schema,
                                       fix=f"give a {cls.schema()} document (upgrade edgeq-device "
                                           "if the version is newer)")
        body = {k: v for k, v in data.items() if k != "schema"}
        return typing.cast(R, _build(cls, body))

    @classmethod
    def from_json(cls: type[R], text: str | bytes) -> R:
        """Rebuild the result from its JSON text."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result saved with :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def write_json(result: JsonResult, dest: str | Path, overwrite: bool = False) -> Path | None:
    """Write ``result`` as JSON to a file (atomically) or, for ``"-"``, to standard output.

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        OutputError: the path cannot be written (see ``edgeq_device.fileio``).
    """
    if str(dest) == "-":
        sys.stdout.write(result.to_json())
        sys.stdout.flush()
        return None
    return result.save(dest, overwrite=overwrite)
