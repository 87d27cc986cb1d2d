"""compare --profile: every mode's operators timed alone on the host, side by side in the report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.comparison.records import Comparison
from edgeq.measure.profile import ProfileComparison
from edgeq.report.markdown import markdown

pytestmark = pytest.mark.slow  # a compare() with per-operator profiles of every mode


@pytest.fixture(scope="module")
def profiled(demo_cnn, mnist_train, mnist_test, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare-profile")
    model_path = tmp / "digits.keras"
    demo_cnn.save(model_path)
    out = tmp / "report"
    args = ["compare", str(model_path), "--calib", str(mnist_train), "--eval", str(mnist_test), "--modes",
            "float32,int8", "--threads", "1", "--samples", "20", "--eval-samples", "50", "-o", str(out),
            "--no-store", "--profile"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


def test_the_modes_are_profiled_side_by_side(profiled):
    data = json.loads((profiled / "results.json").read_text())
    assert data["schema"] == "edgeq/compare/3" and data["profile"]["schema"] == "edgeq/profile-comparison/1"
    comp = ProfileComparison.from_dict(data["profile"])
    assert comp.names == ("float32", "int8")
    for prof in comp.profiles:
        assert prof.threads == 1 and prof.operators and prof.coverage == 1.0
        assert prof.whole_p50_us is not None and prof.whole_p50_us > 0
    # the int8 model has the float model's operators plus its QUANTIZE/DEQUANTIZE at the edges
    convs = [r for r in comp.rows() if r.op == "CONV_2D"]
    assert convs and all(None not in r.ops for r in convs)
    assert Comparison.from_dict(data).profile == data["profile"]


def test_the_report_has_the_per_operator_section_and_plot(profiled):
    data = json.loads((profiled / "results.json").read_text())
    comp = ProfileComparison.from_dict(data["profile"])
    md = (profiled / "report.md").read_text()
    section = md.split("## Per operator")[1].split("\n## ")[0]
    slowest = max(comp.rows(), key=lambda r: r.slowest_us)
    idx = "/".join("" if o is None else str(o.index) for o in slowest.ops)
    assert f"| {idx} | {slowest.op} |" in section
    assert "| p50 float32 | p50 int8 | int8 / float32 |" in section
    for name, prof in zip(comp.names, comp.profiles):
        totals = next(ln for ln in section.splitlines() if ln.startswith(f"| {name} | "))
        assert f"{len(prof.timed)} of {len(prof.operators)}" in totals
        assert f"{prof.sum_us / 1000:.3f}" in totals and f"{prof.whole_p50_us / 1000:.3f}" in totals
    assert "](plots/profile.png)" in section
    assert (profiled / "plots" / "profile.png").read_bytes().startswith(b"\x89PNG")
    page = (profiled / "report.html").read_text()
    assert "<h3>Per operator</h3>" in page and page.count("data:image/png") == 3 and page.count("<svg") == 1  # + the profile plot
    assert markdown(data) == md  # rebuilt from results.json alone


def test_a_version_1_results_json_reads_without_profiles(profiled):
    data = json.loads((profiled / "results.json").read_text())
    old = {k: v for k, v in data.items() if k not in ("profile", "board_profiles")}
    old["schema"] = "edgeq/compare/1"
    comp = Comparison.from_dict(old)
    assert comp.profile is None and comp.board_profiles == ()
    assert "Per operator" not in markdown(comp.to_dict())
