"""edgeq.compare against independent computations on the same data, and its report files."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import stat
import subprocess

import numpy as np
import pytest
from report_chromium import svg_text_layout

from edgeq.comparison.recommend import LATENCY_ROUNDS, LATENCY_TIE
from edgeq.comparison.records import Comparison
from edgeq.comparison.run import compare
from edgeq.errors import DataError, OutputExistsError
from edgeq.report.tables import p50_text
from edgeq.store.db import ResultsStore

EVAL_N = 300


@pytest.fixture(scope="module")
def trained(demo_cnn):
    return demo_cnn


@pytest.fixture(scope="module")
def comparison(trained, mnist_train, mnist_test, tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "results.db"
    comp = compare(trained, calibration=mnist_train, evaluation=mnist_test, samples=100, eval_samples=EVAL_N,
                   threads=(1, 2), runs=20, min_secs=0.05, max_secs=5, store=db)
    return comp, db


@pytest.fixture(scope="module")
def eval_arrays(mnist_test):
    """The same seeded subset compare evaluated, read independently of edgeq.data."""
    from edgeq_device.model.preprocess import Preprocess
    from edgeq_device.run.images import iter_images, list_image_folder

    listing = list_image_folder(mnist_test).sample(EVAL_N, seed=0)
    pairs = list(iter_images(listing, Preprocess(size=(28, 28), color="l")))
    return np.stack([a for a, _ in pairs]), np.array([y for _, y in pairs])


def _plain_tflite_outputs(model_bytes, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = []
    for sample in x:
        v = sample[None]
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            v = np.clip(np.round(v / s + z), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max).astype(inp["dtype"])
        it.set_tensor(inp["index"], v)
        it.invoke()
        o = it.get_tensor(out["index"]).astype(np.float64)
        if out["dtype"] != np.float32:
            s, z = out["quantization"]
            o = (o - z) * s
        res.append(o.reshape(-1))
    return np.array(res)


def test_figures_match_independent_computation(comparison, trained, eval_arrays):
    comp, _ = comparison
    x, y = eval_arrays
    keras_out = np.asarray(trained(x, training=False))
    keras_row = comp.row("keras")
    assert keras_row.top1 == pytest.approx(np.mean(keras_out.argmax(1) == y))
    assert comp.eval_images == EVAL_N and comp.labeled
    f32_size = comp.results["float32"].size_bytes
    for name, res in comp.results.items():
        row = comp.row(name)
        out = _plain_tflite_outputs(res.model_bytes, x)
        assert row.top1 == pytest.approx(np.mean(out.argmax(1) == y)), name
        top5 = np.mean([yy in np.argsort(-o, kind="stable")[:5] for o, yy in zip(out, y)])
        assert row.top5 == pytest.approx(top5), name
        assert row.agreement == pytest.approx(np.mean(out.argmax(1) == keras_out.argmax(1))), name
        assert row.top1_change_points == pytest.approx((row.top1 - keras_row.top1) * 100)
        err = out - keras_out
        sqnr = 10 * np.log10(np.sum(keras_out.astype(np.float64) ** 2) / np.sum(err ** 2)) if np.any(err) else np.inf
        assert row.sqnr_db == pytest.approx(sqnr, rel=1e-3), name
        assert row.max_abs_error == pytest.approx(np.abs(err).max(), rel=1e-3, abs=1e-6), name
        assert row.size_bytes == len(res.model_bytes)
        assert row.size_ratio == pytest.approx(f32_size / len(res.model_bytes))
        for t in (1, 2):
            lat = row.latency_us[t]
            assert 0 < lat["p50_us"] <= lat["p90_us"]
    assert comp.row("int8").size_ratio > 3


def test_recommendation_within_budget(comparison):
    comp, _ = comparison
    rec = comp.recommendation
    assert rec.mode is not None
    chosen = comp.row(rec.mode)
    assert -chosen.top1_change_points <= rec.budget_points
    within = [r for r in comp.rows[1:] if -r.top1_change_points <= rec.budget_points]
    smallest = min(r.size_bytes for r in within)
    near = [r for r in within if r.size_bytes <= smallest * 1.02]
    assert chosen in near
    # no mode among the smallest is clearly faster than the chosen one: interval wholly below and > 15% faster
    lo, _ = chosen.p50_interval(1)
    for r in near:
        assert not (r.p50_interval(1)[1] < lo and r.p50(1) * (1 + LATENCY_TIE) < chosen.p50(1)), r.name
    assert rec.mode in rec.reason and "budget" in rec.reason
    assert f"p50 {p50_text(chosen.latency_us[1])} at 1 thread" in rec.reason  # with its interval
    if rec.ties:
        assert rec.mode in rec.ties and "tie" in rec.reason


def test_latency_interval_comes_from_the_timed_runs(comparison):
    comp, _ = comparison
    for r in comp.rows[1:]:
        for t in (1, 2):
            lat, samples = r.latency_us[t], r.latency_samples_us[t]
            assert lat["runs"] == len(samples) >= 20 and lat["rounds"] == LATENCY_ROUNDS
            assert lat["p50_us"] == pytest.approx(float(np.median(samples)))
            assert min(samples) <= lat["p50_lo_us"] <= lat["p50_us"] <= lat["p50_hi_us"] <= max(samples)


@pytest.mark.slow
def test_same_inputs_give_the_same_recommendation(comparison, trained, mnist_train, mnist_test):
    """Compare again on the same model and data: the same mode is recommended."""
    comp, _ = comparison
    again = compare(trained, calibration=mnist_train, evaluation=mnist_test, samples=100, eval_samples=EVAL_N,
                    threads=(1,), runs=20, min_secs=0.05, max_secs=5)
    assert again.recommendation.mode == comp.recommendation.mode, (again.recommendation.reason,
                                                                   comp.recommendation.reason)


def test_every_measurement_is_stored(comparison):
    comp, db = comparison
    runs = ResultsStore(db).runs()
    assert len(runs) == (len(comp.rows) - 1) * 2
    int8 = next(m for m in runs if m.mode == "int8" and m.threads == 1)
    assert int8.latency_p50_us == pytest.approx(comp.row("int8").latency_us[1]["p50_us"])
    assert int8.accuracy_top1 == pytest.approx(comp.row("int8").top1)


def test_report_files_hold_results_json_numbers(comparison, tmp_path):
    comp, _ = comparison
    written = comp.save(tmp_path)
    for name in ("results.json", "report.md", "report.html", "plots/accuracy_vs_latency.png", "plots/size.png",
                 "plots/latency.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len(list((tmp_path / "models").glob("*.tflite"))) == len(comp.results)
    data = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for row in data["rows"]:
        if row["top1"] is not None:
            shown = f"{row['top1'] * 100:.2f}%"
            assert shown in md and shown in page
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['name']} |"))
        p50 = row["latency_us"].get("1", {}).get("p50_us")
        if p50:
            assert f"{p50 / 1000:.3f}" in line
    assert data["recommendation"]["reason"] in md
    assert set(written) >= {"results.json", "report.md", "report.html"}
    with pytest.raises(OutputExistsError, match="report file"):
        comp.save(tmp_path)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_report_files_get_the_permissions_of_a_plain_open(comparison, tmp_path, mask, expected):
    comp, _ = comparison
    old = os.umask(mask)
    try:
        written = comp.save(tmp_path / "report")
    finally:
        os.umask(old)
    names = {name for name in written if name.startswith("models/")}
    assert names and {"results.json", "report.md", "report.html", "plots/size.png"} <= set(written)
    modes = {name: oct(stat.S_IMODE(path.stat().st_mode)) for name, path in written.items()}
    assert set(modes.values()) == {oct(expected)}, modes
    folders = {oct(stat.S_IMODE(p.stat().st_mode)) for p in (tmp_path / "report", tmp_path / "report" / "plots")}
    assert folders == {oct(0o777 & ~mask)}


def test_html_is_self_contained(comparison, tmp_path):
    comp, _ = comparison
    comp.save(tmp_path, overwrite=True)
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    assert not re.search(r"url\((?!#)", page) and "@import" not in page  # url(#id): the SVG's own clip paths
    assert page.count("data:image/png;base64,") == 2  # size and latency
    assert page.count("<svg") == 1 and "accuracy vs latency" in page  # inline, its text as text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(comparison, tmp_path):
    """Render report.html in headless Chromium and check the table and plots are on the screenshot.

    The screenshot stays in the test's tmp_path (pytest keeps the last runs' folders under
    /tmp/pytest-of-$USER/) for a person to look at.
    """
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (tests/setup_system.sh installs it)")
    comp, _ = comparison
    folder = tmp_path
    comp.save(folder / "report", overwrite=True)
    shot = folder / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={folder / 'chromium-profile'}", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,2600", (folder / "report" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    h = img.shape[0]
    nonwhite = np.any(img < 235, axis=2)
    # The table's grid lines: many long horizontal runs of grey near the top.
    table_rows = sum(1 for r in range(h // 3) if nonwhite[r].mean() > 0.4)
    assert table_rows >= 5, "no table visible"
    # The plots: the bar/marker colour #4c78a8 appears in quantity below the table.
    blue = (np.abs(img - np.array([0x4c, 0x78, 0xa8])).sum(axis=2) < 40)
    assert blue.sum() > 2000, "no plot visible"
    # The accuracy-vs-latency plot is inline SVG: where Chromium lays its texts out, none covers another.
    layout = svg_text_layout(folder / "report" / "report.html", folder)
    assert layout["texts"] >= 10 and layout["overlaps"] == [], layout


def test_report_includes_the_model_analysis(comparison, tmp_path):
    from edgeq.measure.analysis import analyze

    comp, _ = comparison
    comp.save(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Model analysis" in md
    for name, res in comp.results.items():
        a = analyze(res.model_bytes)
        assert comp.row(name).macs == a.graph.total_macs > 0
        line = next(ln for ln in md.split("## Model analysis")[1].splitlines() if ln.startswith(f"| {name} |"))
        assert f"{comp.row(name).macs:,}" in line


@pytest.mark.slow
def test_compare_cli_writes_report_and_refuses_to_overwrite(trained, mnist_train, mnist_test, tmp_path):
    from click.testing import CliRunner

    from edgeq.cli import cli

    model_path = tmp_path / "digits.keras"
    trained.save(model_path)
    out, db = tmp_path / "report", tmp_path / "results.db"
    args = ["compare", str(model_path), "--calib", str(mnist_train), "--eval", str(mnist_test), "--modes",
            "float32,int8", "--threads", "1", "--samples", "20", "--eval-samples", "50", "-o", str(out),
            "--db", str(db)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["keras", "float32", "int8"]
    assert data["recommendation"]["reason"].split(":")[0] in result.stdout.replace("\n", " ")
    assert len(ResultsStore(db).runs()) == 2
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 2
    assert again.stderr.strip().splitlines() == [
        f"error: --output: a report exists in the output folder (received '{out}'); "
        "choose another --output or pass --force to overwrite"]
    bad = CliRunner().invoke(cli, [*args[:-4], "--threads", "one", "-o", str(tmp_path / "x")], catch_exceptions=False)
    assert bad.exit_code == 2 and "error: --threads: expected comma-separated integers" in bad.stderr


def test_table_fits_80_columns_and_piped_rows_stay_whole(comparison):
    from rich.console import Console

    from edgeq.report.tables import natural_width, rich_table, table_rows

    comp, _ = comparison
    buf = io.StringIO()
    Console(file=buf, width=80).print(rich_table(comp))
    text = buf.getvalue()
    assert max(len(ln) for ln in text.splitlines()) <= 80 and "…" not in text
    for row in comp.rows:  # float32 and float16 both whole, not "float…"
        assert re.search(rf"^│ {row.name} +│", text, re.M), row.name
    assert "not shown for lack of width" in text
    header, rows = table_rows(comp.to_dict())
    buf = io.StringIO()
    Console(file=buf, width=max(80, natural_width(header, rows))).print(rich_table(comp))
    lines = buf.getvalue().splitlines()
    for cells in rows:  # piped: every column, each mode's row on one line
        (line,) = [ln for ln in lines if ln.startswith(f"│ {cells[0]} ")]
        assert all(c in line for c in cells), (cells, line)


@pytest.mark.slow
def test_compare_formats_md_csv_json(comparison, trained, mnist_train, mnist_test, tmp_path, capsys):
    from click.testing import CliRunner

    from edgeq.cli import cli
    from edgeq.cli.compare import print_compare

    comp, _ = comparison
    print_compare(comp, "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model"] for r in rows] == [r.name for r in comp.rows]
    print_compare(comp, "json")
    assert json.loads(capsys.readouterr().out)["rows"][1]["name"] == comp.rows[1].name
    print_compare(comp, "md")
    assert capsys.readouterr().out.startswith("| model | size |")

    model_path = tmp_path / "digits.keras"
    trained.save(model_path)
    res = CliRunner().invoke(cli, ["compare", str(model_path), "--calib", str(mnist_train), "--eval", str(mnist_test),
                                   "--modes", "float32", "--threads", "1", "--samples", "10", "--eval-samples", "20",
                                   "-o", str(tmp_path / "r"), "--no-store", "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    assert [r["model"] for r in csv.DictReader(io.StringIO(res.stdout))] == ["keras", "float32"]
    assert "wrote" in res.stderr


def test_report_shows_each_p50_with_its_interval(comparison):
    from edgeq.report.html import html_fragment
    from edgeq.report.markdown import markdown

    comp, _ = comparison
    md, page = markdown(comp), html_fragment(comp, pngs={})
    for r in comp.rows[1:]:
        lat = r.latency_us[1]
        text = p50_text(lat)
        assert text.count(" ms [") == 1 and text.endswith("]")
        assert f"{r.name} {text}" in md and f"{r.name} {text}" in page
    assert "95% bootstrap interval" in md and "Overlapping intervals, or p50s within 15%, are ties" in md


def test_report_rebuilt_from_results_json_is_the_report_written(comparison, tmp_path):
    """Every report renders from the schema dict, so results.json alone gives the same report.md."""
    from edgeq.report.markdown import markdown

    comp, _ = comparison
    comp.save(tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    again = Comparison.from_dict(data)
    assert again.to_dict() == data  # the round trip keeps every field (the timed runs are not in the file)
    assert markdown(data) == markdown(again.to_dict()) == (tmp_path / "report.md").read_text()
    assert again.rows == tuple(dataclasses.replace(r, latency_samples_us={}) for r in comp.rows)
    again.save(tmp_path / "rebuilt")  # without the timed runs the latency plot shows p50/p90 bars
    assert (tmp_path / "rebuilt" / "report.md").read_text() == (tmp_path / "report.md").read_text()
    with pytest.raises(DataError, match="not an edgeq compare results file"):
        Comparison.from_dict({**data, "schema": "edgeq/compare/0"})
    with pytest.raises(DataError, match="lacks a field"):
        Comparison.from_dict({k: v for k, v in data.items() if k != "rows"})


@pytest.mark.slow
def test_comparison_is_frozen_and_reads_plainly(comparison):
    comp, _ = comparison
    with pytest.raises(dataclasses.FrozenInstanceError):
        comp.notes = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        comp.rows[1].top1 = 1.0  # type: ignore[misc]
    text = str(comp)
    assert "np." not in text and "float64" not in text
    for row in comp.rows:
        assert re.search(rf"^│ {row.name} +│", text, re.M), row.name
        assert "np." not in str(row) and "np." not in repr(row) and str(row).startswith(f"{row.name} (")
    assert str(comp.recommendation) == f"{comp.recommendation.mode}: {comp.recommendation.reason}"
    assert "<table>" in comp._repr_html_() and "data:image/png;base64," in comp._repr_html_()
