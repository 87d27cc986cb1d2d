"""BoardResult and DeployReport: frozen, round-trip through their dicts, readable as text and HTML."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import edgeq
from edgeq.deployment.results import BoardResult, DeployReport
from edgeq.errors import InvalidArgumentError, OutputExistsError

BENCH = {"schema": "edgeq-device/bench/1", "latency": {"p50_us": 1234.5, "mean_us": 1300.0}, "threads": 1}
EVAL = {"schema": "edgeq-device/eval/1", "top1": 0.9125, "n": 80}


def ok_board() -> BoardResult:
    return BoardResult("pi4", "pi@pi4:22", ok=True, timings={"connect": 0.2, "total": 3.25},
                       actions={"setup": "venv reused (none), runtime litert"},
                       board={"machine": "aarch64", "python_version": "3.11.2"}, bench=BENCH, eval=EVAL,
                       stored_ids=(4, 5))


def failed_board() -> BoardResult:
    return BoardResult("pi-gone", "pi@gone", error="connection refused by pi@gone; check the host <and> port",
                       error_kind="unreachable", timings={"total": 0.5})


def report() -> DeployReport:
    return DeployReport("m.tflite", (ok_board(), failed_board()), wall_seconds=4.0, db="/tmp/r.db")


def test_the_facade_names_are_these_classes():
    assert edgeq.BoardResult is BoardResult and edgeq.DeployReport is DeployReport


def test_results_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok_board().ok = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report().db = None  # type: ignore[misc]


def test_a_report_round_trips_through_its_dict_and_json():
    r = report()
    d = r.to_dict()
    assert d["schema"] == "edgeq/deploy/1" and d["boards"][0]["schema"] == "edgeq/board-result/4"
    assert d["boards"][0]["stored_ids"] == [4, 5]
    again = DeployReport.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert again == r
    assert BoardResult.from_dict(d["boards"][1]) == failed_board()


def test_from_dict_refuses_another_schema_or_unknown_keys():
    with pytest.raises(InvalidArgumentError, match="another kind of result"):
        DeployReport.from_dict({**report().to_dict(), "schema": "edgeq/deploy/2"})
    with pytest.raises(InvalidArgumentError, match="another kind of result"):
        BoardResult.from_dict(BENCH)
    with pytest.raises(InvalidArgumentError, match="not a board result"):
        BoardResult.from_dict({**ok_board().to_dict(), "colour": "red"})
    with pytest.raises(InvalidArgumentError, match="not a deploy report"):
        DeployReport.from_dict({"schema": "edgeq/deploy/1", "boards": []})


def test_the_measurements_read_from_the_device_payloads():
    b = ok_board()
    assert b.p50_ms == pytest.approx(1.2345) and b.top1 == pytest.approx(0.9125)
    assert failed_board().p50_ms is None and failed_board().top1 is None


def test_text_is_readable_even_with_numpy_numbers():
    b = dataclasses.replace(ok_board(), bench={"latency": {"p50_us": np.float64(2000.0)}},
                            eval={"top1": np.float32(0.5)}, timings={"total": np.float64(1.25)})
    text = str(b)
    assert text == "pi4 (pi@pi4:22): ok, p50 2.000 ms, top-1 0.5000, 1.2 s"
    assert "np." not in text and "float64" not in text
    assert b.to_dict()["eval"] == {"top1": 0.5} and b.to_dict()["timings"] == {"total": 1.25}
    assert str(failed_board()).endswith("\n  unreachable: connection refused by pi@gone; check the host <and> port")
    summary = str(report())
    assert summary == report().summary()
    lines = summary.splitlines()
    assert lines[1].split()[:4] == ["pi4", "ok", "1.234", "0.912"]
    assert lines[2].split()[:2] == ["pi-gone", "unreachable"] and "connection refused" in lines[2]
    assert lines[-1] == "2 boards: 1 ok, 0 failed, 1 unreachable, 0 timed-out, 0 interrupted in 4.0 s"


def test_html_has_one_row_per_board_and_escapes_text():
    page = report()._repr_html_()
    assert page.count("<tr>") == 3 and "&lt;and&gt;" in page and "<and>" not in page
    assert ok_board()._repr_html_().count("<tr>") == 2


def test_the_report_is_saved_as_json_and_not_overwritten(tmp_path):
    path = report().save(tmp_path / "deploy.json")
    assert DeployReport.from_dict(json.loads(path.read_text())) == report()
    with pytest.raises(OutputExistsError):
        report().save(path)
    report().save(path, overwrite=True)


def test_lookup_by_label_and_the_failed_boards():
    r = report()
    assert r["pi4"] == ok_board() and len(r) == 2 and [b.label for b in r] == ["pi4", "pi-gone"]
    assert not r.ok and r.failed == [failed_board()]
    with pytest.raises(KeyError):
        r["nope"]
