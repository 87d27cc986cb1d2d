"""A deploy recording into a real PostgreSQL server stores what the SQLite store stores."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from postgres_server import new_database

from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy
from edgeq.store.db import ResultsStore

pytestmark = pytest.mark.ssh

QUICK = ["--runs", "10", "--min-secs", "0.1", "--warmup", "1"]


def _rows(store: ResultsStore) -> list[dict]:
    return sorted(({k: v for k, v in asdict(m).items() if k != "id"} for m in store.runs()), key=lambda r: r["device"])


def test_a_deploy_into_postgres_stores_the_rows_sqlite_stores(loopback_ssh, tiny_models_dir, board_python,
                                                               postgres_server, tmp_path):
    url = new_database(postgres_server, "deploy")
    boards = [Board(loopback_ssh.target(alias), label=f"pi-{alias[-1]}", python=board_python,
                    workdir=str(tmp_path / "board" / ".edgeq-device"), ssh_config=str(loopback_ssh.ssh_config),
                    groups=("kitchen",)) for alias in ("board-a", "board-b")]
    report = deploy(tiny_models_dir["int8"], to=boards, bench=True, bench_args=QUICK, store=url, progress=False)
    assert report.ok and report.db is not None and report.db.startswith("postgresql://")
    # the same board results recorded into SQLite by the same code path give the same rows
    with ResultsStore(tmp_path / "r.db") as lite:
        for res in report:
            lite.add_device_result(res.bench, device=res.label, source="deploy",
                                   model_name=tiny_models_dir["int8"].stem, run_id=report.run_id,
                                   groups=res.groups)
        want = _rows(lite)
    with ResultsStore(url) as pg:
        assert _rows(pg) == want and {r["device"] for r in want} == {"pi-a", "pi-b"}
        assert [m.groups for m in pg.runs(group="kitchen")] == [("kitchen",), ("kitchen",)]
        run = pg.deploy_run(report.run_id)
    assert {label: row["state"] for label, row in run["boards"].items()} == {"pi-a": "ok", "pi-b": "ok"}
    assert run["boards"]["pi-a"]["groups"] == ["kitchen"] and len(run["boards"]["pi-a"]["stored_ids"]) == 1
