"""The compare report shows what a board measured for the very same .tflite files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.comparison.records import Comparison
from edgeq.comparison.run import compare
from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy
from edgeq.store.db import ResultsStore

pytestmark = pytest.mark.ssh


def test_report_includes_board_measurements(loopback_ssh, board_python, eval_folder, demo_cnn, mnist_train,
                                            mnist_test, tmp_path):
    db = tmp_path / "results.db"
    model = demo_cnn
    comp = compare(model, calibration=mnist_train, evaluation=mnist_test, modes=["float32", "int8"], samples=50,
                   eval_samples=100, threads=(1,), runs=10, min_secs=0.05, store=db)
    out = tmp_path / "report"
    comp.save(out)
    int8_file = out / "models" / comp.results["int8"].default_filename
    board = Board(loopback_ssh.target("board-a"), label="pi-report", python=board_python,
                  workdir=str(tmp_path / "board" / ".edgeq-device"), ssh_config=str(loopback_ssh.ssh_config))
    report = deploy(int8_file, to=board, bench=True, evaluation=eval_folder, store=db, profile=True, threads=1,
                    bench_args=["--runs", "20", "--min-secs", "0.1"])
    assert report["pi-report"].ok, report["pi-report"].error
    measured = [m for m in ResultsStore(db).runs(device="pi-report") if m.kind == "bench"]
    assert measured and measured[0].model_sha256 == comp.row("int8").model_sha256

    result = CliRunner().invoke(cli, ["report", str(out), "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "1 board measurement" in result.stdout
    md = (out / "report.md").read_text()
    section = md.split("## On boards")[1]
    line = next(ln for ln in section.splitlines() if ln.startswith("| pi-report | int8 |"))
    assert f"{measured[0].latency_p50_us / 1000:.3f}" in line
    evaluated = next(m for m in ResultsStore(db).runs(device="pi-report") if m.kind == "eval")
    assert f"{evaluated.accuracy_top1 * 100:.2f}%" in line
    assert "On boards" in (out / "report.html").read_text()

    # the board's profile: a per-operator section with the slowest operators and the residual
    assert "and 1 per-operator profile(s)" in " ".join(result.stdout.split())
    prof = report["pi-report"].profile_result
    assert prof is not None and prof.whole_p50_us is not None
    section = md.split("## Per operator on boards")[1].split("\n## ")[0]
    assert "### pi-report: int8" in section
    assert f"{len(prof.timed)} of {len(prof.operators)} operators timed alone" in section
    slowest = max(prof.timed, key=lambda o: o.p50_us or 0.0)
    assert f"| {slowest.index} | {slowest.op} |" in section
    residual = next(ln for ln in section.splitlines() if ln.startswith("|  | residual"))
    assert f"{prof.residual_us / 1000:.3f}" in residual
    page = (out / "report.html").read_text()
    assert "Per operator on boards" in page and "pi-report: int8" in page
    saved = json.loads((out / "results.json").read_text())
    assert saved["schema"] == "edgeq/compare/3"
    assert [(p["board"], p["mode"]) for p in saved["board_profiles"]] == [("pi-report", "int8")]
    assert Comparison.from_dict(saved).board_profiles[0]["profile"] == report["pi-report"].profile

    # a results.json of version 1 (no profiles) still reads, and the report gets the profile from the store
    old = {k: v for k, v in saved.items() if k != "board_profiles"}
    old["schema"] = "edgeq/compare/1"
    comp1 = Comparison.from_dict(old)
    assert comp1.board_profiles == () and comp1.with_board_results(db).board_profiles == \
        Comparison.from_dict(saved).board_profiles
