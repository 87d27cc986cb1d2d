"""Strict JSON: non-finite numbers become null with a note beside them, and come back on reading."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pytest
from edgeq_device.errors import InvalidArgumentError, OutputExistsError
from edgeq_device.results.report_json import (
    JsonResult,
    dumps_json,
    loads_json,
    parse_schema,
    result_class,
    write_json,
)


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("value", [
    {"a": math.inf, "b": [1.0, math.nan], "c": {"x": -math.inf, "y": 2}},
    {"m": [[1.0, math.inf], [math.nan, 0.0]], "s": "inf"},
    [{"p50_us": math.nan}, {"p50_us": 1.5}],
    {"plain": [1, 2, 3], "nested": {"deeper": {"z": math.inf}}},
])
def test_non_finite_numbers_round_trip_through_strict_json(value: object) -> None:
    text = dumps_json(value, indent=2)
    assert "NaN" not in text and "Infinity" not in text
    _strict(text)
    assert _same(loads_json(text), value)


def test_the_note_sits_in_the_object_that_holds_the_number() -> None:
    d = _strict(dumps_json({"lat": {"p50_us": math.inf, "p90_us": 3.0}, "samples": [1.0, math.nan]}))
    assert d == {"lat": {"p50_us": None, "p90_us": 3.0, "nonfinite": {"p50_us": "inf"}},
                 "samples": [1.0, None], "nonfinite": {"samples[1]": "nan"}}
    # A bare number has no object to hold the note: it is just null.
    assert dumps_json(math.nan) == "null" and dumps_json([math.inf]) == "[null]"


def test_numpy_paths_enums_and_sets_are_written_plainly() -> None:
    class Color(Enum):
        RED = "red"

    text = dumps_json({"x": np.float32(0.5), "v": np.arange(3), "p": Path("/a/b"), "c": Color.RED,
                       "t": (1, 2), "n": np.float64("nan")}, sort_keys=True)
    assert _strict(text) == {"c": "red", "n": None, "nonfinite": {"n": "nan"}, "p": "/a/b", "t": [1, 2],
                             "v": [0, 1, 2], "x": 0.5}


@dataclass(frozen=True)
class _Probe(JsonResult):
    KIND = "probe"

    value: float
    name: str = "probe"


def test_a_result_is_registered_and_refuses_other_documents(tmp_path: Path) -> None:
    assert result_class("probe") is _Probe and parse_schema("edgeq-device/probe/1") == ("edgeq-device", "probe", 1)
    assert parse_schema("package.json") is None and parse_schema(3) is None
    r = _Probe(math.inf)
    assert _Probe.from_json(r.to_json()) == r
    with pytest.raises(InvalidArgumentError, match="another kind"):
        _Probe.from_dict({"schema": "edgeq-device/bench/1", "value": 1.0})
    with pytest.raises(InvalidArgumentError, match="lacks 'value'"):
        _Probe.from_dict({"schema": "edgeq-device/probe/1"})
    with pytest.raises(InvalidArgumentError, match="expected float"):
        _Probe.from_dict({"value": "fast"})
    out = write_json(r, tmp_path / "probe.json")
    assert out is not None and _strict(out.read_text())["nonfinite"] == {"value": "inf"}
    with pytest.raises(OutputExistsError):
        write_json(r, out)
    assert "value  inf" in str(r) and "&lt;" in _Probe(1.0, name="<b>")._repr_html_()
