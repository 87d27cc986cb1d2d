"""A sweep in this process: one failed cell does not stop the others and is recorded with its error;
the resume runs only what is not in the store; --force reruns all; the report names the front and the
recommended cell, links each cell's files and renders in headless Chromium with no text over text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from report_chromium import chromium, svg_text_layout

import edgeq
from edgeq.cli import cli
from edgeq.store.db import ResultsStore

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def small_data(digits_test_arrays):
    x, y = digits_test_arrays
    return (x[:100], y[:100]), (x[100:300], y[100:300])


@pytest.mark.slow
def test_failed_cell_resume_force_and_report(tiny_models, small_data, tmp_path):
    calib, evaluation = small_data
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras file")
    out = tmp_path / "sweep"
    kw = dict(calibration=calib, evaluation=evaluation, modes=["float32", "int8"], output=out, workers=0,
              samples=50, runs=10, min_secs=0.02, max_secs=1.0, max_drop=2.0, progress=False)
    first = edgeq.sweep([tiny_models[2], broken], **kw)
    assert (first.ran, first.reused, first.failed) == (4, 0, 2)
    cells = {c["name"]: c for c in first.report.cells}
    assert cells["broken/int8"]["status"] == "failed" and "broken.keras" in cells["broken/int8"]["error"]
    ok = cells["digits_w8/int8"]
    assert ok["status"] == "ok" and (out / "cells" / ok["folder"] / "model.tflite").exists()
    f32 = cells["digits_w8/float32"]["figures"]
    assert f32["eval_images"] == 200 and 0 <= f32["top1"] <= 1 and f32["agreement"] == 1.0
    assert ok["figures"]["size_bytes"] < f32["size_bytes"]
    failed_json = json.loads((out / "cells" / cells["broken/int8"]["folder"] / "cell.json").read_text())
    assert failed_json["status"] == "failed" and failed_json["error"]
    with ResultsStore(out / "results.db") as st:  # only finished cells are measurements
        rows = st.runs()
        assert sorted(m.mode for m in rows) == ["float32", "int8"] and all(m.source == "sweep" for m in rows)

    # Resume: the two finished cells come from the store; the failed ones run again (and fail again).
    again = edgeq.sweep([tiny_models[2], broken], **kw)
    assert (again.ran, again.reused, again.failed) == (2, 2, 2)
    assert again.report.cell("digits_w8/int8")["figures"] == ok["figures"]
    # Other settings are other cells; --force reruns every one.
    assert edgeq.sweep([tiny_models[2]], **{**kw, "samples": 60}).ran == 1  # float32 takes no calibration: reused
    forced = edgeq.sweep([tiny_models[2]], **{**kw, "force": True})
    assert (forced.ran, forced.reused) == (2, 0)
    assert forced.report.cell("digits_w8/int8")["figures"]["size_bytes"] == ok["figures"]["size_bytes"]

    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "edgeq/sweep/1" and data["metric"] == "top1"
    rec = data["recommendation"]
    assert rec["cell"] in {"digits_w8/int8", "digits_w8/float32"} and "within the constraints" in rec["reason"]
    md = (out / "report.md").read_text()
    assert f"(cells/{ok['folder']}/model.tflite)" in md and "Pareto front" in md
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 2 and f'href="cells/{ok["folder"]}/model.tflite"' in page
    if chromium() is None:
        pytest.skip("chromium is not installed (tests/setup_system.sh installs it)")
    layout = svg_text_layout(out / "report.html", tmp_path)
    assert layout["texts"] > 20 and layout["overlaps"] == [], layout


@pytest.mark.slow
def test_constraints_no_cell_within_and_cli(tiny_models, small_data, tmp_path):
    calib, evaluation = small_data
    np.savez(tmp_path / "calib.npz", x=calib[0], y=calib[1])
    np.savez(tmp_path / "eval.npz", x=evaluation[0], y=evaluation[1])
    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, ["sweep", str(tiny_models[0]), "--calib", str(tmp_path / "calib.npz"), "--eval",
                                   str(tmp_path / "eval.npz"), "--modes", "float32,float16", "--workers", "0",
                                   "--runs", "5", "-o", str(out), "--max-size", "1KB"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Recommended: none — no cell meets the constraints" in res.stdout
    assert "2 cell(s) run, 0 from the store, 0 failed" in res.stdout
    data = json.loads((out / "results.json").read_text())
    assert all(any("B > 1000 B" in w for w in c["outside_because"]) for c in data["cells"])
    # a folder that holds other files is not taken over
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    res = CliRunner().invoke(cli, ["sweep", str(tiny_models[0]), "--calib", str(tmp_path / "calib.npz"), "--eval",
                                   str(tmp_path / "eval.npz"), "-o", str(tmp_path / "other")])
    assert res.exit_code == 2 and "output: the output folder holds other files" in res.stderr


@pytest.mark.slow
def test_a_worker_with_other_versions_stops_the_sweep(tiny_models, small_data, tmp_path, monkeypatch):
    from edgeq.errors import SweepError
    from edgeq.sweeps import run as sweep_run
    from edgeq.sweeps.job import run_cell, worker_versions

    mine = worker_versions()
    assert set(mine) == {"edgeq", "tensorflow", "ai-edge-litert"} and mine["tensorflow"] != "missing"
    res = run_cell({"key": "k", "name": "m/float32", "versions": {**mine, "tensorflow": "2.0.0"}})
    assert res["status"] == "version-mismatch"
    assert f"tensorflow {mine['tensorflow']} here, 2.0.0 on the driver" in res["error"]
    # a driver whose TensorFlow differs from its workers' (here: this process's): one clear error, no cell run
    monkeypatch.setattr(sweep_run, "worker_versions", lambda: {**mine, "ai-edge-litert": "9.9.9"})
    calib, evaluation = small_data
    with pytest.raises(SweepError, match=r"ai-edge-litert .* here, 9\.9\.9 on the driver.*install the driver's"):
        edgeq.sweep([tiny_models[0]], calibration=calib, evaluation=evaluation, modes=["float32"],
                    output=tmp_path / "s", workers=0, progress=False)
    assert not list((tmp_path / "s").glob("cells/*/model.tflite"))
