"""The results store on a real PostgreSQL server: the same rows as SQLite, concurrent writers, history."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict

import pytest
from click.testing import CliRunner
from postgres_server import new_database

from edgeq.cli import cli
from edgeq.errors import StoreError
from edgeq.store.db import SCHEMA_VERSION, Measurement, ResultsStore

SHA = "cd" * 32


def _measurements() -> list[Measurement]:
    base = {"model_sha256": SHA, "model_name": "digits", "device": "pi4", "runtime": "litert", "kind": "bench"}
    return [
        Measurement(**base, mode="int8", threads=1, created="2026-01-01T00:00:00Z", latency_p50_us=1234.567891234,
                    latency_p90_us=1500.25, size_bytes=48_000, compressed_size_bytes=30_001,
                    payload={"latency": {"p50_us": 1234.567891234}, "note": "100% – ünïcode ?"},
                    groups=("kitchen", "pi 4 – 100%")),
        Measurement(**base, mode="int8", threads=1, created="2026-01-02T00:00:00Z", latency_p50_us=1400.0),
        Measurement(**{**base, "kind": "eval"}, mode="float32", threads=4, created="2026-01-03T00:00:00Z",
                    accuracy_top1=0.9123456789, accuracy_top5=0.99, agreement=0.97, sqnr_db=31.5,
                    task="detection", task_metric=0.42, task_metric2=0.61),
    ]


def _rows(store: ResultsStore) -> list[dict]:
    return [{k: v for k, v in asdict(m).items() if k != "id"} for m in store.runs()]


def test_postgres_keeps_the_same_rows_as_sqlite(postgres_server, tmp_path):
    url = new_database(postgres_server, "same_rows")
    with ResultsStore(tmp_path / "r.db") as lite, ResultsStore(url) as pg:
        assert pg.schema_version == lite.schema_version == SCHEMA_VERSION
        assert "postgresql://" in pg.location and "same_rows" in repr(pg)
        for m in _measurements():
            assert lite.record(m)[1] and pg.record(m)[1]
            assert not pg.record(m)[1]  # the same run twice is stored once, as in SQLite
        assert _rows(pg) == _rows(lite) and len(pg) == len(lite) == 3
        # doubles, not PostgreSQL's 4-byte REAL: every digit comes back
        assert pg.runs(mode="int8")[-1].latency_p50_us == 1234.567891234
        # the boards' inventory groups, and --group's filter, the same on both
        assert pg.runs(mode="int8")[-1].groups == ("kitchen", "pi 4 – 100%")
        for st in (lite, pg):
            assert [m.created[:10] for m in st.runs(group="pi 4 – 100%")] == ["2026-01-01"]
            assert st.runs(group="pi 4") == [] and len(st.runs(group=None)) == 3
        assert [(r.metric, r.device) for r in pg.diff(latency_threshold=0.1)] == \
            [(r.metric, r.device) for r in lite.diff(latency_threshold=0.1)] == [("latency_p50_us", "pi4")]
        # deploy runs and board states
        for st in (lite, pg):
            st.start_deploy_run("run-1", model_sha256=SHA, model_name="digits", settings={"forks": 5})
            st.record_deploy_board("run-1", "pi4", host="pi@pi4", state="failed", error_kind="no-space",
                                   step="setup", error="disk full", groups=["kitchen"], board={"host": "pi@pi4"},
                                   stored_ids=[], attempts=1)
            st.record_deploy_board("run-1", "pi4", host="pi@pi4", state="ok", error_kind=None, step=None,
                                   error=None, groups=["kitchen"], board={"host": "pi@pi4"}, stored_ids=[1],
                                   attempts=1)
        a, b = lite.deploy_run("run-1"), pg.deploy_run("run-1")
        for run in (a, b):
            run["created"] = run["boards"]["pi4"]["finished"] = None
        assert a == b and b["boards"]["pi4"]["state"] == "ok" and b["boards"]["pi4"]["groups"] == ["kitchen"]
    # a second process finds the schema made: nothing to migrate
    with ResultsStore(url, create=False) as again:
        assert len(again) == 3 and again.deploy_runs()[0]["states"] == {"ok": 1}


WRITER = textwrap.dedent("""
    import sys
    from edgeq.store.db import Measurement, ResultsStore
    url, who = sys.argv[1], sys.argv[2]
    with ResultsStore(url) as store:   # both processes migrate the fresh database at once
        for i in range(150):
            store.record(Measurement(model_sha256="ef" * 32, mode="int8", device=f"{who}-{i}", runtime="litert",
                                     kind="bench", created="2026-02-01T00:00:00Z", latency_p50_us=float(i)))
            # the same run from both processes: stored once
            store.record(Measurement(model_sha256="ef" * 32, mode="int8", device=f"shared-{i % 30}",
                                     runtime="litert", kind="bench", created="2026-02-01T00:00:00Z"))
    print("done")
""")


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing(postgres_server):
    url = new_database(postgres_server, "race")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, who], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("host-a", "host-b")]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-600:] for o in outs]
    with ResultsStore(url) as store:
        devices = [m.device for m in store.runs()]
        assert store.schema_version == SCHEMA_VERSION
    assert len(devices) == 2 * 150 + 30 and len(set(devices)) == len(devices)


def test_history_and_diff_read_postgres(postgres_server, monkeypatch):
    url = new_database(postgres_server, "history")
    with ResultsStore(url) as store:
        for m in _measurements():
            store.record(m)
    res = CliRunner().invoke(cli, ["history", "--db", url])
    assert res.exit_code == 0, res.output
    assert "3 run(s)" in res.stdout and "pi4" in res.stdout and "1.400" in res.stdout
    res = CliRunner().invoke(cli, ["history", "--db", url, "--diff", "--threshold-latency", "5%", "--json", "-"])
    assert res.exit_code == 1 and json.loads(res.stdout)[0]["metric"] == "latency_p50_us"
    with ResultsStore(url) as store:
        store.start_deploy_run("run-7", model_sha256=SHA, model_name="digits", settings={})
        for label, state, step in (("pi4", "ok", None), ("pi5", "failed", "setup"), ("pi6", "unreachable", "connect")):
            store.record_deploy_board("run-7", label, host=f"pi@{label}", state=state, error_kind=None, step=step,
                                      error=None if state == "ok" else "it broke", groups=["lab"],
                                      board={"host": f"pi@{label}"}, stored_ids=[], attempts=1)
    res = CliRunner().invoke(cli, ["history", "--db", url, "--deploys", "--format", "csv"])
    assert res.exit_code == 0 and "run-7" in res.stdout and "1 failed, 1 ok, 1 unreachable" in res.stdout
    res = CliRunner().invoke(cli, ["history", "--db", url, "--deploy", "run-7", "--format", "csv"])
    assert res.exit_code == 0 and "pi5,failed,setup,lab,1,it broke" in res.stdout
    res = CliRunner().invoke(cli, ["history", "--db", url, "--deploy", "run-8"])
    assert res.exit_code == 2 and "no such deploy run" in res.stderr
    monkeypatch.setenv("EDGEQ_DB", url)  # EDGEQ_DB takes a URL as --db does
    res = CliRunner().invoke(cli, ["history", "--device", "pi4", "--json", "-"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 3


def test_a_postgres_database_from_before_groups_is_upgraded_in_place(postgres_server):
    from edgeq.store.connect import open_backend
    from edgeq.store.migrations import MIGRATIONS

    url = new_database(postgres_server, "before_groups")
    db = open_backend(url, create=True)
    try:
        with db.transaction() as tx:
            for migrate in MIGRATIONS[:5]:  # the schema an edgeq without groups wrote
                migrate(tx)
            tx.set_schema_version(5)
            tx.execute("INSERT INTO measurements (model_sha256, mode, device, runtime, kind, created, source, "
                       "payload) VALUES (?, 'int8', 'pi-old', 'litert', 'bench', '2026-01-01T00:00:00.000000Z', "
                       "'deploy', '{}')", (SHA,))
    finally:
        db.close()
    with ResultsStore(url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [m.groups for m in store.runs()] == [()]
        store.record(Measurement(model_sha256=SHA, mode="int8", device="pi-new", runtime="litert", kind="bench",
                                 groups=("lab",)))
        assert [m.device for m in store.runs(group="lab")] == ["pi-new"]


def test_an_unreachable_server_is_one_clear_error(postgres_server):
    bad = f"postgresql://{postgres_server['user']}:secret@/edgeq?host={postgres_server['host']}&port=1"
    with pytest.raises(StoreError, match="cannot connect to the PostgreSQL server") as info:
        ResultsStore(bad)
    assert "secret" not in str(info.value)
    res = CliRunner().invoke(cli, ["history", "--db", bad])
    assert res.exit_code == 2 and res.stderr.startswith("error: db: ") and "Traceback" not in res.output
