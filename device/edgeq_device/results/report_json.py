"""The versioned, strict JSON form of every result ``edgeq_device`` returns.

Each result is a frozen dataclass deriving from :class:`JsonResult`. Its
``to_dict()`` starts with ``"schema": "<prefix>/<kind>/<version>"`` (e.g.
``"edgeq-device/bench/1"``), so a reader (the host toolkit, the results store,
a script on the laptop) knows what it holds and which layout; ``from_dict()``
rebuilds the object, nested dataclasses included, and also reads the JSON of
the previous versions of its kind (each class lists how to bring an older
document up to date in ``UPGRADES``). A version changes when a field changes
name or meaning or disappears; new fields may be added within a version.

Strict JSON
-----------
Every JSON document edgeq writes goes through :func:`dumps_json` (or
:func:`write_json`), which never writes ``NaN`` or ``Infinity`` (they are not
JSON, and strict parsers refuse them). A non-finite number is written as
``null`` and the reason is recorded beside it, in the object that holds it,
under the key ``"nonfinite"``, which maps the member's name to ``"nan"``,
``"inf"`` or ``"-inf"``; an element of a list is named with its index
(``"samples_us[3]"``, ``"confusion[1][2]"``)::

    {"p50_us": null, "p99_us": 812.5, "nonfinite": {"p50_us": "inf"}}

:func:`loads_json` (and every ``from_dict``) puts the non-finite values back.
A non-finite number with no enclosing object (a bare number, or one inside a
list at the top of the document) becomes ``null`` with no record.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, ClassVar, TypeVar

from ..errors import InvalidArgumentError
from .fileio import atomic_write_text
from .result_view import html_table, plain_text

__all__ = [
    "NONFINITE_KEY",
    "SCHEMA_PREFIX",
    "SCHEMA_VERSION",
    "JsonResult",
    "dumps_json",
    "loads_json",
    "parse_schema",
    "restore_nonfinite",
    "result_class",
    "schema_id",
    "strict_plain",
    "to_plain",
    "write_json",
]

SCHEMA_PREFIX = "edgeq-device"
SCHEMA_VERSION = 1
NONFINITE_KEY = "nonfinite"

R = TypeVar("R", bound="JsonResult")
_UNION_TYPE = getattr(types, "UnionType", None)  # ``X | Y`` annotations (Python >= 3.10)
_SCHEMA_RE = re.compile(r"^([a-z][a-z0-9_-]*)/([a-z][a-z0-9_-]*)/([0-9]+)$")
_INDEXED_RE = re.compile(r"^(.*?)((?:\[[0-9]+\])+)$")
_REGISTRY: dict[tuple[str, str], type[JsonResult]] = {}


def schema_id(kind: str, version: int = SCHEMA_VERSION, prefix: str = SCHEMA_PREFIX) -> str:
    """The schema string of a result kind, e.g. ``"edgeq-device/bench/1"``."""
    return f"{prefix}/{kind}/{version}"


def parse_schema(schema: object) -> tuple[str, str, int] | None:
    """``"edgeq-device/bench/1"`` -> ``("edgeq-device", "bench", 1)``; None for anything else."""
    if not isinstance(schema, str):
        return None
    m = _SCHEMA_RE.match(schema)
    return None if m is None else (m.group(1), m.group(2), int(m.group(3)))


def result_class(kind: str, prefix: str = SCHEMA_PREFIX) -> type[JsonResult] | None:
    """The :class:`JsonResult` class of a kind (``"bench"``, ``"eval"``, ``"info"``, ...), or None."""
    return _REGISTRY.get((prefix, kind))


# --------------------------------------------------------------------------- plain values


def to_plain(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """Turn dataclasses, enums, paths, tuples, sets and NumPy values into plain Python values.

    Non-finite floats stay floats here (:func:`strict_plain` replaces them). ``default``
    turns any other object into something plain (as for :func:`json.dumps`); without it
    such an object is returned unchanged.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name), default) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return to_plain(value.value, default)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else _key(k): to_plain(v, default) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v, default) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy arrays and scalars
        return to_plain(value.tolist(), default)
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if default is not None:
        return to_plain(default(value), None)
    return value


def _key(k: Any) -> str:
    """A mapping key as JSON writes it (``True`` -> ``"true"``, ``1`` -> ``"1"``, ``None`` -> ``"null"``)."""
    return json.dumps(k, allow_nan=True) if isinstance(k, (bool, int, float)) or k is None else str(k)


def _nonfinite_name(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def strict_plain(value: Any) -> Any:
    """A copy of a plain value with every non-finite float replaced by None and recorded.

    Each object that holds a non-finite number (directly or in its lists) gets a
    ``"nonfinite"`` entry naming it; see the module docs.
    """
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        found: dict[str, str] = {}
        for k, v in value.items():
            if k == NONFINITE_KEY:
                continue
            out[k] = _strict_member(v, str(k), found)
        old = value.get(NONFINITE_KEY)
        if isinstance(old, Mapping) or found:
            out[NONFINITE_KEY] = {**(dict(old) if isinstance(old, Mapping) else {}), **found}
        return out
    if isinstance(value, list):
        return [strict_plain(v) for v in value]
    return value


def _strict_member(v: Any, name: str, found: dict[str, str]) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        found[name] = _nonfinite_name(v)
        return None
    if isinstance(v, list):
        return [_strict_member(x, f"{name}[{i}]", found) for i, x in enumerate(v)]
    return strict_plain(v)


def restore_nonfinite(value: Any) -> Any:
    """The inverse of :func:`strict_plain`: put the recorded non-finite numbers back."""
    if isinstance(value, list):
        return [restore_nonfinite(v) for v in value]
    if not isinstance(value, Mapping):
        return value
    out = {k: restore_nonfinite(v) for k, v in value.items() if k != NONFINITE_KEY}
    marks = value.get(NONFINITE_KEY)
    if not isinstance(marks, Mapping):
        if NONFINITE_KEY in value:
            out[NONFINITE_KEY] = value[NONFINITE_KEY]
        return out
    for name, reason in marks.items():
        number = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(str(reason))
        if number is None:
            continue
        if name in out:
            out[name] = number
            continue
        m = _INDEXED_RE.match(str(name))
        if m is None or m.group(1) not in out:
            continue
        target: Any = out[m.group(1)]
        indices = [int(i) for i in re.findall(r"[0-9]+", m.group(2))]
        for i in indices[:-1]:
            target = target[i] if isinstance(target, list) and i < len(target) else None
        if isinstance(target, list) and indices[-1] < len(target):
            target[indices[-1]] = number
    return out


def dumps_json(obj: Any, *, indent: int | None = None, sort_keys: bool = False,
               default: Callable[[Any], Any] | None = None) -> str:
    """The strict JSON text of ``obj``: the one way edgeq and edgeq_device write JSON.

    Like :func:`json.dumps` (same arguments), but dataclasses, enums, paths, tuples, sets
    and NumPy values are written as plain JSON, and a non-finite number becomes ``null``
    with its reason recorded beside it (see the module docs). The text never holds
    ``NaN`` or ``Infinity``.
    """
    return json.dumps(strict_plain(to_plain(obj, default)), indent=indent, sort_keys=sort_keys,
                      allow_nan=False)


def loads_json(text: str | bytes) -> Any:
    """Parse JSON written by :func:`dumps_json`, putting recorded non-finite numbers back."""
    return restore_nonfinite(json.loads(text))


def write_json(result: Any, dest: str | Path, overwrite: bool = False, *, indent: int | None = 2,
               argument: str = "json") -> Path | None:
    """Write a result (or any JSON-able value) as strict JSON to a file, or to stdout for ``"-"``.

    The file is written atomically (see :mod:`edgeq_device.results.fileio`); a :class:`JsonResult`
    is written as its :meth:`~JsonResult.to_dict`.

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        OutputError: the path cannot be written (see ``edgeq_device.results.fileio``).
    """
    body = result.to_dict() if isinstance(result, JsonResult) else result
    text = dumps_json(body, indent=indent) + "\n"
    if str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    return atomic_write_text(dest, text, overwrite=overwrite, argument=argument)


# --------------------------------------------------------------------------- reading back


class _SchemaMismatchError(TypeError):
    """A plain value that does not fit the annotated type (tried the next union member)."""


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
            if not isinstance(value, Mapping):
                raise _SchemaMismatchError(f"expected an object for {tp.__name__}, got {type(value).__name__}")
            fields = [f for f in dataclasses.fields(tp) if f.init]
            missing = [f.name for f in fields if f.name not in value and f.default is dataclasses.MISSING
                       and f.default_factory is dataclasses.MISSING]
            if missing:
                raise _SchemaMismatchError(f"{tp.__name__} lacks {', '.join(repr(m) for m in missing)}")
            hints = typing.get_type_hints(tp)
            kwargs = {f.name: _build(hints.get(f.name, Any), value[f.name]) for f in fields if f.name in value}
            return tp(**kwargs)
        if issubclass(tp, Enum):
            return tp(value)
        if issubclass(tp, PurePath):
            return Path(value)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if tp in (int, float, str, bool) and not isinstance(value, tp):
            raise _SchemaMismatchError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


# --------------------------------------------------------------------------- the results


class JsonResult:
    """Mixin of the frozen result dataclasses: ``to_dict``/``to_json``/``save`` and back.

    Class attributes of a result: ``KIND`` (``"bench"``, ...), ``VERSION`` (its schema
    version), ``PREFIX`` (``"edgeq-device"``; the host toolkit's results use ``"edgeq"``)
    and ``UPGRADES``, which maps an older version to a function turning that version's
    dict into the next version's.
    """

    KIND: ClassVar[str] = "result"
    VERSION: ClassVar[int] = SCHEMA_VERSION
    PREFIX: ClassVar[str] = SCHEMA_PREFIX
    UPGRADES: ClassVar[Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "KIND" in cls.__dict__:
            _REGISTRY[(cls.PREFIX, cls.KIND)] = cls

    @classmethod
    def schema(cls) -> str:
        """This result's schema string, e.g. ``"edgeq-device/bench/1"``."""
        return schema_id(cls.KIND, cls.VERSION, cls.PREFIX)

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON-ready dict, ``"schema"`` first (non-finite numbers as the module says)."""
        body = strict_plain(to_plain(self))
        return {"schema": self.schema(), **body}

    def to_json(self, indent: int | None = 2) -> str:
        """The strict JSON text of :meth:`to_dict`, ending with a newline."""
        return dumps_json(self.to_dict(), indent=indent) + "\n"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the JSON form atomically; refuse to replace an existing file unless ``overwrite``."""
        return atomic_write_text(path, self.to_json(), overwrite=overwrite, argument="json")

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Rebuild the result from :meth:`to_dict`'s output, or from an older version's.

        A dict without ``"schema"`` is read as the current version.

        Raises:
            InvalidArgumentError: the dict holds another kind, a newer version, or does not
                fit the schema (a missing field, a value of the wrong type).
        """
        if not isinstance(data, Mapping):
            raise InvalidArgumentError("expected a JSON object", argument="data", received=type(data).__name__,
                                       fix=f"give a {cls.schema()} document")
        schema = data.get("schema")
        body = {k: v for k, v in data.items() if k != "schema"}
        if schema is not None and schema != cls.schema():
            parsed = parse_schema(schema)
            if parsed is None or parsed[:2] != (cls.PREFIX, cls.KIND) or parsed[2] > cls.VERSION \
                    or any(v not in cls.UPGRADES for v in range(parsed[2], cls.VERSION)):
                raise InvalidArgumentError("JSON holds another kind of result or schema version",
                                           argument="data", received=schema,
                                           fix=f"give a {cls.schema()} document (upgrade "
                                               f"{cls.PREFIX} if the version is newer)")
            for version in range(parsed[2], cls.VERSION):
                body = cls.UPGRADES[version](body)
        try:
            return typing.cast(R, _build(cls, restore_nonfinite(body)))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            if isinstance(exc, InvalidArgumentError):
                raise
            raise InvalidArgumentError(f"not a valid {cls.schema()} document: {exc}", argument="data",
                                       received=schema, fix=f"give the JSON a {cls.__name__} wrote") from exc

    @classmethod
    def from_json(cls: type[R], text: str | bytes) -> R:
        """Rebuild the result from its JSON text."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result saved with :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def __str__(self) -> str:
        """A readable text: each field on a line, numbers plain."""
        return plain_text(self.schema(), to_plain(self))

    def _repr_html_(self) -> str:
        """An HTML table for notebooks."""
        return html_table(self.schema(), to_plain(self))
