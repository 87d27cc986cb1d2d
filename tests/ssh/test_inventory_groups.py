"""A deploy over an inventory keeps each board's groups on the measurements it stores: history filters and
shows them, and the compare report names them beside each board."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.comparison.records import Comparison, ModeRow, Recommendation
from edgeq.deployment.orchestrate import deploy
from edgeq.report.tables import board_rows
from edgeq.store.db import ResultsStore

pytestmark = pytest.mark.ssh


def _row(name: str, mode: str, sha: str | None) -> ModeRow:
    return ModeRow(name=name, mode=mode, io="float32", size_bytes=None, size_ratio=None, top1=None, top5=None,
                   top1_change_points=None, agreement=None, sqnr_db=None, max_abs_error=None, cosine=None,
                   latency_us={}, model_sha256=sha)


def test_deployed_rows_keep_the_inventory_groups(loopback_ssh, tiny_models_dir, board_python, tmp_path):
    # pi-kitchen sits in two groups (one directly, one through a child group); pi-lab in one.
    inv = tmp_path / "boards.yml"
    inv.write_text(f"""
all:
  vars:
    ansible_host: 127.0.0.1
    ansible_user: {loopback_ssh.user}
    ansible_ssh_private_key_file: {loopback_ssh.identity}
    ansible_ssh_common_args: "-o UserKnownHostsFile={loopback_ssh.known_hosts}"
    ansible_python_interpreter: {board_python}
  children:
    home:
      children:
        kitchen:
          hosts:
            pi-kitchen:
              ansible_port: {loopback_ssh.ports['board-a']}
              edgeq_workdir: {tmp_path / 'wd-kitchen'}
    lab:
      hosts:
        pi-lab:
          ansible_port: {loopback_ssh.ports['board-b']}
          edgeq_workdir: {tmp_path / 'wd-lab'}
""")
    db = tmp_path / "r.db"
    model = tiny_models_dir["int8"]
    report = deploy(model, inventory=inv, ssh_config=loopback_ssh.ssh_config, store=db, bench=True, threads=1,
                    bench_args=["--runs", "5", "--min-secs", "0.05"], progress=False)
    kitchen, lab = report["pi-kitchen"], report["pi-lab"]
    assert kitchen.ok and lab.ok, (kitchen.error, lab.error)
    assert kitchen.groups == ("home", "kitchen") and lab.groups == ("lab",)

    with ResultsStore(db) as store:
        rows = store.runs()
        assert {m.device for m in rows} == {"pi-kitchen", "pi-lab"}
        for m in rows:  # each row has the groups of the board that measured it, as the deploy run has them
            assert m.groups == report[m.device].groups and m.source == "deploy"
            run = store.deploy_run(store.deploy_runs()[0]["run_id"])
            assert tuple(run["boards"][m.device]["groups"]) == m.groups
        assert {m.device for m in store.runs(group="home")} == {"pi-kitchen"}
        assert {m.device for m in store.runs(group="lab")} == {"pi-lab"}
        assert store.runs(group="kitch") == [] and store.runs(group="k%") == []  # whole names, no wildcards
        assert store.diff(group="lab") == []

    runner = CliRunner()
    got = runner.invoke(cli, ["history", "--db", str(db), "--group", "kitchen", "--json", "-"])
    assert got.exit_code == 0, got.output
    listed = json.loads(got.stdout)
    assert [r["device"] for r in listed] == ["pi-kitchen"] and listed[0]["groups"] == ["home", "kitchen"]
    table = runner.invoke(cli, ["history", "--db", str(db), "--format", "csv"])
    assert table.exit_code == 0, table.output
    header, *cells = table.stdout.splitlines()
    at = header.split(",").index("groups")
    by_device = {line.split(",")[header.split(",").index("device")]: line for line in cells}
    assert by_device["pi-lab"].split(",")[at] == "lab"
    assert '"home,kitchen"' in by_device["pi-kitchen"]  # CSV quotes the comma-joined names
    none = runner.invoke(cli, ["history", "--db", str(db), "--group", "garage"])
    assert none.exit_code == 0 and "no runs recorded that match" in none.stdout

    # the compare report's board rows name each board's groups
    sha = rows[0].model_sha256
    comp = Comparison(model_name="digits", rows=(_row("keras", "keras", None), _row("int8", "int8", sha)),
                      recommendation=Recommendation(mode="int8", reason="", budget_points=1.0, prefer="latency"),
                      threads=(1,), evaluation="", eval_images=0, labeled=False, notes=(), board={},
                      created="2026-12-07T00:00:00Z")
    header, cells = board_rows(comp.with_board_results(db).to_dict())
    assert header[:2] == ["board", "groups"]
    assert {(c[0], c[1]) for c in cells} == {("pi-kitchen", "home, kitchen"), ("pi-lab", "lab")}
    folder = tmp_path / "compare"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(comp.to_dict()))
    got = runner.invoke(cli, ["report", str(folder), "--db", str(db)])
    assert got.exit_code == 0, got.output
    section = (folder / "report.md").read_text().split("## On boards")[1]
    assert "| board | groups |" in section and "| pi-kitchen | home, kitchen | int8 |" in section
    assert "| pi-lab | lab | int8 |" in section and "home, kitchen" in (folder / "report.html").read_text()
