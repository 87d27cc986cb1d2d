"""Task metrics in the results store: the migration, the columns, history and --diff on mAP/mIoU and SQNR."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError
from edgeq.store.db import _COLUMNS, MIGRATIONS, SCHEMA_VERSION, Measurement, ResultsStore
from edgeq.store.records import canonical_json

SHA = "ab" * 32


def _m(created: str, **kw) -> Measurement:
    base = {"model_sha256": SHA, "model_name": "det", "mode": "int8", "device": "host", "runtime": "litert",
            "threads": 1, "kind": "compare", "created": created}
    return Measurement(**{**base, **kw})


def test_a_store_of_the_previous_schema_upgrades_and_keeps_its_fingerprints(tmp_path):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    for step in range(2):  # the schema before task metrics
        MIGRATIONS[step](conn)
        conn.execute(f"PRAGMA user_version = {step + 1}")
    conn.commit()
    conn.close()
    with ResultsStore(db) as st:
        assert st.schema_version == SCHEMA_VERSION
        rid, new = st.record(_m("2026-01-01T00:00:00Z", accuracy_top1=0.5))
        assert new
    conn = sqlite3.connect(db)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(measurements)")]
    fp = conn.execute("SELECT fingerprint FROM measurements").fetchone()[0]
    conn.close()
    assert {"task", "task_metric", "task_metric2"} <= set(cols)
    with ResultsStore(db) as st:  # the same run again is the same row
        assert st.record(_m("2026-01-01T00:00:00Z", accuracy_top1=0.5)) == (rid, False)
        assert st.runs()[0].task is None
    m = _m("2026-01-01T00:00:00Z", accuracy_top1=0.5)
    assert fp == hashlib.sha256(canonical_json({k: getattr(m, k) for k in _COLUMNS}).encode()).hexdigest()


def test_task_metrics_are_checked_kept_and_their_drops_flagged(tmp_path):
    with pytest.raises(InvalidArgumentError, match="task_metric"):
        _m("2026-01-01T00:00:00Z", task="detection", task_metric=45.0)
    with pytest.raises(InvalidArgumentError, match="task"):
        _m("2026-01-01T00:00:00Z", task="pose", task_metric=0.4)
    db = tmp_path / "r.db"
    with ResultsStore(db) as st:
        st.add_measurement(_m("2026-01-01T00:00:00Z", task="detection", task_metric=0.50, task_metric2=0.8,
                              sqnr_db=30.0))
        st.add_measurement(_m("2026-01-02T00:00:00Z", task="detection", task_metric=0.497, task_metric2=0.8,
                              sqnr_db=29.0))
        assert st.diff() == []  # -0.3 points, -1 dB: within the thresholds
        st.add_measurement(_m("2026-01-03T00:00:00Z", task="detection", task_metric=0.45, task_metric2=0.7,
                              sqnr_db=20.0))
        found = {r.metric: r for r in st.diff()}
        assert set(found) == {"map", "sqnr_db"}
        assert found["map"].change == pytest.approx(-4.7)
        assert found["sqnr_db"].change == pytest.approx(-9.0)
        assert "mAP@[.5:.95] -4.70 points" in found["map"].describe()
        assert "output SQNR -9.0 dB" in found["sqnr_db"].describe()
        assert st.runs()[0].task_metric == pytest.approx(0.45)
    runner = CliRunner()
    res = runner.invoke(cli, ["history", "--db", str(db), "--format", "csv"], catch_exceptions=False)
    assert res.exit_code == 0 and "mAP 45.00" in res.stdout
    res = runner.invoke(cli, ["history", "--db", str(db), "--diff"], catch_exceptions=False)
    assert res.exit_code == 1 and "mAP@[.5:.95] -4.70 points" in res.stdout
    res = runner.invoke(cli, ["history", "--db", str(db), "--diff", "--threshold-accuracy", "5",
                              "--threshold-sqnr", "10", "--format", "json"], catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.stdout) == []
