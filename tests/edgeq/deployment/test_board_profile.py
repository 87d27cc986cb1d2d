"""A board's profile in BoardResult and in the results store, with a real profile of the digits CNN."""

from __future__ import annotations

import json

import pytest
from edgeq_device.measure.profile import ProfileParams, ProfileResult, profile_model

from edgeq.deployment.results import BoardResult, DeployReport
from edgeq.errors import DataError, InvalidArgumentError
from edgeq.store.db import ResultsStore
from edgeq.store.device_json import parse_device_result

QUICK = ProfileParams(runs=5, min_secs=0.0, whole_runs=5, whole_min_secs=0.0, threads=1)


@pytest.fixture(scope="module")
def profile_doc(digits_edgeq_tflite) -> dict:
    """What ``edgeq-device profile --json -`` prints for the int8 digits CNN, as the board sends it."""
    return json.loads(profile_model(digits_edgeq_tflite["int8"], QUICK).to_json())


def test_a_board_result_keeps_its_profile_and_round_trips(profile_doc):
    res = BoardResult("pi4", "pi@pi4:22", ok=True, timings={"profile": 1.5, "total": 2.0}, profile=profile_doc)
    d = res.to_dict()
    assert d["schema"] == "edgeq/board-result/4" and d["profile"]["schema"] == "edgeq-device/profile/1"
    again = BoardResult.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert again == res
    prof = again.profile_result
    assert isinstance(prof, ProfileResult) and prof.operators and prof.whole_p50_us and prof.whole_p50_us > 0
    assert [o.op for o in prof.operators] == [o["op"] for o in profile_doc["operators"]]
    assert f"profile {len(prof.timed)}/{len(prof.operators)} operators" in str(res)
    report = DeployReport("m.tflite", (res,))
    assert DeployReport.from_dict(report.to_dict()) == report


def test_a_version_1_board_result_still_reads_without_a_profile():
    old = {"schema": "edgeq/board-result/1", "label": "pi4", "host": "pi@pi4:22", "ok": True, "error": None,
           "error_kind": None, "timings": {"total": 1.0}, "actions": {}, "board": {}, "bench": None,
           "eval": None, "stored_ids": [3]}
    res = BoardResult.from_dict(old)
    assert res.profile is None and res.profile_result is None and res.stored_ids == (3,)
    assert BoardResult.from_dict(res.to_dict()) == res
    with pytest.raises(InvalidArgumentError, match="another kind of result"):
        BoardResult.from_dict({**old, "schema": "edgeq/board-result/5"})


def test_a_profile_is_stored_as_a_measurement_of_kind_profile(profile_doc, tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        row = store.add_device_result(profile_doc, device="pi4-kitchen", source="deploy")
        assert store.add_device_result(profile_doc, device="pi4-kitchen", source="deploy") == row  # once
        (m,) = store.runs(device="pi4-kitchen")
    assert m.kind == "profile" and m.device == "pi4-kitchen" and m.source == "deploy"
    assert m.latency_p50_us == pytest.approx(profile_doc["whole_p50_us"])
    assert m.mode == "int8" and m.threads == 1
    back = parse_device_result(m.payload)
    assert isinstance(back, ProfileResult) and back == ProfileResult.from_dict(profile_doc)


def test_a_profile_of_a_newer_version_is_refused(profile_doc):
    with pytest.raises(DataError, match="unknown version"):
        parse_device_result({**profile_doc, "schema": "edgeq-device/profile/9"})
