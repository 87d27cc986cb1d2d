"""The results store: schema migrations, concurrent writers, device JSON import, regressions, CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.errors import DataError, InvalidArgumentError, ModelFileError, StoreError
from edgeq.store.db import (
    SCHEMA_VERSION,
    Measurement,
    Regression,
    ResultsStore,
    default_db_path,
    file_sha256,
)

SHA_A = hashlib.sha256(b"model a").hexdigest()
SHA_B = hashlib.sha256(b"model b").hexdigest()


def _m(**kw: object) -> Measurement:
    base: dict[str, object] = dict(model_sha256=SHA_A, model_name="a", mode="int8", device="host",
                                   runtime="litert", runtime_version="2.3.0", threads=1, kind="compare")
    base.update(kw)
    return Measurement(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- records


def test_file_sha256_of_path_and_bytes_agree(tmp_path: Path) -> None:
    p = tmp_path / "m.tflite"
    p.write_bytes(b"\x00tflite bytes" * 1000)
    assert file_sha256(p) == file_sha256(p.read_bytes()) == hashlib.sha256(p.read_bytes()).hexdigest()
    with pytest.raises(ModelFileError, match=r"missing\.tflite"):
        file_sha256(tmp_path / "missing.tflite")


def test_measurement_validates_and_normalizes() -> None:
    m = _m(created="2025-01-31T13:00:00+01:00", latency_p50_us=5)
    assert m.created == "2025-01-31T12:00:00.000000Z"
    assert m.latency_p50_us == 5.0 and isinstance(m.latency_p50_us, float)
    with pytest.raises(InvalidArgumentError, match="model_sha256"):
        _m(model_sha256="abc")
    with pytest.raises(InvalidArgumentError, match=r"accuracy_top1.*fraction"):
        _m(accuracy_top1=98.5)
    with pytest.raises(InvalidArgumentError, match="kind"):
        _m(kind="benchmark")
    with pytest.raises(InvalidArgumentError, match="threads"):
        _m(threads=0)
    with pytest.raises(InvalidArgumentError, match="created"):
        _m(created="yesterday")


def test_default_path_follows_edgeq_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_DB", str(tmp_path / "sub" / "env.db"))
    assert default_db_path() == tmp_path / "sub" / "env.db"
    with ResultsStore() as store:
        store.add_measurement(_m())
    assert (tmp_path / "sub" / "env.db").is_file()
    monkeypatch.delenv("EDGEQ_DB")
    assert default_db_path() == Path("~/.edgeq/results.db").expanduser()


# --------------------------------------------------------------------------- schema


def test_open_creates_latest_schema_in_wal_mode(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store._db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db._conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


# The tables a version-1 store held, as edgeq wrote them then (kept here verbatim, so that a
# change to the migrations cannot change the old file the test starts from).
_V1_SCHEMA = """
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_sha256 TEXT NOT NULL, model_name TEXT, mode TEXT NOT NULL, device TEXT NOT NULL,
    runtime TEXT NOT NULL, runtime_version TEXT, threads INTEGER, kind TEXT NOT NULL,
    created TEXT NOT NULL, size_bytes INTEGER, latency_p50_us REAL, latency_p90_us REAL,
    latency_mean_us REAL, accuracy_top1 REAL, accuracy_top5 REAL, agreement REAL, sqnr_db REAL,
    source TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX ix_measurements_key ON measurements (model_sha256, mode, device, runtime, threads, created);
PRAGMA user_version = 1;
"""


def test_migrates_a_version_1_file_keeping_its_rows(tmp_path: Path) -> None:
    """A file written at schema version 1 (before fingerprints) is upgraded in place when opened."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    old = _m(created="2025-01-01T00:00:00Z", latency_p50_us=100.0, payload={"note": "v1"})
    cols = ("model_sha256", "model_name", "mode", "device", "runtime", "runtime_version", "threads", "kind",
            "created", "latency_p50_us", "source", "payload")
    row = [getattr(old, c) for c in cols[:-1]] + [json.dumps(old.payload)]
    for _ in range(2):  # version 1 had nothing against the same run recorded twice
        conn.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)
    conn.commit()
    conn.close()

    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        columns = {r[1] for r in store._db._conn.execute("PRAGMA table_info(measurements)")}
        assert "fingerprint" in columns
        runs = store.runs()
        assert len(runs) == 2 and all(r == old for r in runs)
        assert runs[0].payload == {"note": "v1"}
        # The first old row got the fingerprint: recording the same run again finds it.
        assert store.record(old) == (1, False)
        new_id, is_new = store.record(_m(latency_p50_us=90.0))
        assert is_new and new_id == 3 and len(store) == 3
    with ResultsStore(path) as store:  # opening an up-to-date file changes nothing
        assert store.schema_version == SCHEMA_VERSION and len(store) == 3


def test_a_version_2_file_from_an_earlier_edgeq_still_knows_its_runs(tmp_path: Path) -> None:
    """Rows written by an earlier edgeq (fingerprints of its plain sorted JSON) are found again."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.executescript("""
        ALTER TABLE measurements ADD COLUMN fingerprint TEXT;
        CREATE UNIQUE INDEX ux_measurements_fingerprint ON measurements (fingerprint);
        CREATE INDEX ix_measurements_created ON measurements (created);
        PRAGMA user_version = 2;""")
    old = _m(created="2025-01-01T00:00:00Z", latency_p50_us=100.0, size_bytes=4096,
             payload={"schema": "edgeq-device/bench/1", "latency": {"p50_us": 100.0}, "samples": [1, 2.5]})
    columns = ("model_sha256", "model_name", "mode", "device", "runtime", "runtime_version", "threads", "kind",
               "created", "size_bytes", "latency_p50_us", "latency_p90_us", "latency_mean_us", "accuracy_top1",
               "accuracy_top5", "agreement", "sqnr_db", "source", "payload")
    values = {c: getattr(old, c) for c in columns}
    fingerprint = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()  # as edgeq wrote it
    values["payload"] = json.dumps(old.payload, sort_keys=True)
    conn.execute(f"INSERT INTO measurements ({', '.join(columns)}, fingerprint) "
                 f"VALUES ({', '.join('?' * (len(columns) + 1))})", [*values.values(), fingerprint])
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        assert store.record(old) == (1, False) and len(store) == 1


def test_a_file_from_before_groups_is_upgraded_in_place(tmp_path: Path) -> None:
    """A file at the schema before measurements kept their boards' groups: its rows read with no groups,
    new rows keep theirs, and --group finds only those."""
    from edgeq.store.migrations import MIGRATIONS

    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path)
    for migrate in MIGRATIONS[:5]:  # up to the deploy runs: the schema an edgeq without groups wrote
        migrate(conn)
    conn.execute("PRAGMA user_version = 5")
    old = _m(device="pi-old", created="2025-01-01T00:00:00Z", latency_p50_us=100.0, payload={"note": "v5"})
    cols = ("model_sha256", "model_name", "mode", "device", "runtime", "threads", "kind", "created",
            "latency_p50_us", "source", "payload", "run_id")
    conn.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                 [getattr(old, c) for c in cols[:-2]] + [json.dumps(old.payload), "run-1"])
    conn.commit()
    conn.close()
    assert "groups_json" not in {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(measurements)")}

    with ResultsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        (got,) = store.runs()
        assert got.groups == () and got.device == "pi-old" and got.payload == {"note": "v5"}
        new = _m(device="pi-new", groups=["kitchen", "pi_4%"], latency_p50_us=90.0)
        assert new.groups == ("kitchen", "pi_4%")
        row, _ = store.record(new)
        assert [m.id for m in store.runs(group="kitchen")] == [row]
        assert [m.id for m in store.runs(group="pi_4%")] == [row] and store.runs(group="pi_4") == []
        assert store.runs(group="kitchen", limit=1)[0].groups == ("kitchen", "pi_4%")
        assert len(store.runs(limit=1)) == 1 and store.runs(group="kitchen", device="pi-old") == []
    code, out, _ = _run("history", "--db", str(path), "--group", "kitchen", "--json", "-")
    assert code == 0 and [r["groups"] for r in json.loads(out)] == [["kitchen", "pi_4%"]]
    code, out, _ = _run("history", "--db", str(path), "--format", "csv")
    head, *lines = out.splitlines()
    assert code == 0 and head.split(",")[6] == "groups" and lines[0].split(",")[5:7] == ["pi-new", '"kitchen']
    assert lines[1].split(",")[5:7] == ["pi-old", "-"]
    with pytest.raises(InvalidArgumentError, match="groups"):
        _m(groups="kitchen")  # one name is not a list of names
    code, _, err = _run("history", "--db", str(path), "--group", " ")
    assert code == 2 and "--group: must be the name of an inventory group" in err and "Traceback" not in err
    with ResultsStore(path) as store, pytest.raises(InvalidArgumentError, match="group"):
        store.runs(group="")


def test_non_finite_figures_are_kept_and_written_as_strict_json(tmp_path: Path) -> None:
    """An infinite SQNR (outputs identical to the float model's) and a NaN in a payload."""
    import math

    m = _m(sqnr_db=math.inf, payload={"spread": math.nan, "ok": 1.0})
    d = m.to_dict()
    assert d["schema"] == "edgeq/measurement/1" and d["sqnr_db"] is None and d["nonfinite"] == {"sqnr_db": "inf"}
    assert d["payload"] == {"spread": None, "ok": 1.0, "nonfinite": {"spread": "nan"}}
    again = Measurement.from_dict(d)
    assert again.sqnr_db == math.inf and math.isnan(again.payload["spread"])
    old_form = {k: v for k, v in _m().to_dict().items() if k != "schema"}  # edgeq wrote no schema key before
    assert Measurement.from_dict(old_form) == _m(created=old_form["created"])
    db = str(tmp_path / "r.db")
    with ResultsStore(db) as store:
        row = store.add_measurement(m)
        (got,) = store.runs()
        assert got.id == row and got.sqnr_db == math.inf and math.isnan(got.payload["spread"])
        assert store.add_measurement(m) == row  # the same run, recognised again
        raw = store._db._conn.execute("SELECT payload FROM measurements").fetchone()[0]

    def refuse(name: str) -> object:
        raise ValueError(name)

    assert json.loads(raw, parse_constant=refuse)["nonfinite"] == {"spread": "nan"}
    code, out, _ = _run("history", "--db", db, "--json", "-")
    assert code == 0 and json.loads(out, parse_constant=refuse)[0]["nonfinite"] == {"sqnr_db": "inf"}
    assert "sqnr_db" in str(got) and "payload" in str(got) and "<table>" in got._repr_html_()


def test_a_file_from_a_newer_edgeq_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with ResultsStore(path) as store:
        store.add_measurement(_m())
        store._db._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=r"newer edgeq.*upgrade edgeq"):
        ResultsStore(path)


def test_files_that_are_not_results_stores_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an edgeq results database"):
        ResultsStore(junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="other tables"):
        ResultsStore(other)
    with pytest.raises(StoreError, match="directory"):
        ResultsStore(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        ResultsStore(tmp_path / "afile" / "r.db")
    with pytest.raises(StoreError, match="no results store"):
        ResultsStore(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


# --------------------------------------------------------------------------- concurrency


def _writer(path: str, worker: int, count: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(30)
    with ResultsStore(path) as store:
        for i in range(count):
            store.add_measurement(_m(model_name=f"w{worker}", threads=1 + worker, latency_p50_us=float(i),
                                     payload={"worker": worker, "i": i}))


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    """Two real processes open the same new file together and insert 200 rows each."""
    ctx = multiprocessing.get_context("spawn")
    path = str(tmp_path / "shared.db")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(path, w, 200, start)) for w in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with ResultsStore(path) as store:
        assert len(store) == 400
        for w in range(2):
            got = sorted(r.payload["i"] for r in store.runs(model=f"w{w}"))
            assert got == list(range(200))


# --------------------------------------------------------------------------- reading, diff


def test_runs_filter_and_order_newest_first(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        store.add_measurement(_m(created="2025-01-01T00:00:00Z"))
        store.add_measurement(_m(created="2025-01-03T00:00:00Z", mode="float32"))
        store.add_measurement(_m(created="2025-01-02T00:00:00Z", model_sha256=SHA_B, model_name="b",
                                 device="pi4"))
        assert [r.created[:10] for r in store.runs()] == ["2025-01-03", "2025-01-02", "2025-01-01"]
        assert [r.model_name for r in store.runs(model="b")] == ["b"]
        assert [r.model_name for r in store.runs(model=SHA_B[:8].upper())] == ["b"]
        assert [r.mode for r in store.runs(model="a")] == ["float32", "int8"]
        assert [r.device for r in store.runs(device="pi4")] == ["pi4"]
        assert [r.mode for r in store.runs(mode="int8")] == ["int8", "int8"]
        assert len(store.runs(limit=1)) == 1
        with pytest.raises(InvalidArgumentError, match="limit"):
            store.runs(limit=0)


def test_diff_compares_each_keys_latest_run_with_the_previous(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        # threads=1: 100 -> 200 us (an old regression) -> 205 us (now within 10 %)
        for day, us in ((1, 100.0), (2, 200.0), (3, 205.0)):
            store.add_measurement(_m(created=f"2025-01-0{day}T00:00:00Z", latency_p50_us=us))
        assert store.diff() == []
        # threads=2: 100 -> 120 us, +20 %
        store.add_measurement(_m(threads=2, created="2025-01-01T00:00:00Z", latency_p50_us=100.0))
        store.add_measurement(_m(threads=2, created="2025-01-02T00:00:00Z", latency_p50_us=120.0))
        # another device's key is compared only with itself
        store.add_measurement(_m(device="pi4", created="2025-01-04T00:00:00Z", latency_p50_us=900.0))
        # accuracy: 0.990 -> 0.982 is -0.8 points; an eval run without latency sits between
        store.add_measurement(_m(kind="eval", mode="float32", accuracy_top1=0.990, created="2025-01-01T00:00:00Z"))
        store.add_measurement(_m(kind="eval", mode="float32", accuracy_top1=0.982, created="2025-01-02T00:00:00Z"))
        found = store.diff()
        assert {(r.metric, r.threads, r.mode) for r in found} == {("latency_p50_us", 2, "int8"),
                                                                   ("accuracy_top1", 1, "float32")}
        lat = next(r for r in found if r.metric == "latency_p50_us")
        assert isinstance(lat, Regression)
        assert (lat.previous, lat.current, lat.model, lat.device) == (100.0, 120.0, "a", "host")
        assert lat.change == pytest.approx(0.20)
        assert "+20.0%" in lat.describe()
        acc = next(r for r in found if r.metric == "accuracy_top1")
        assert acc.change == pytest.approx(-0.8)
        assert store.diff(latency_threshold=0.25, accuracy_threshold=1.0) == []
        assert [r.metric for r in store.diff(mode="float32")] == ["accuracy_top1"]
        assert store.diff(device="pi4") == []
        with pytest.raises(InvalidArgumentError, match="latency_threshold"):
            store.diff(latency_threshold=-1)


# --------------------------------------------------------------------------- real device results


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small float32 CNN for 28x28 digits, converted for real by edgeq.convert."""
    import tf_keras as keras

    from edgeq.quantize.converter import convert

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="tinycnn")
    path = tmp_path_factory.mktemp("models") / "tinycnn.tflite"
    convert(model, "float32").save(path)
    return path


def _bench(model: Path, xnnpack: bool = True) -> dict[str, object]:
    from edgeq_device.measure.bench import benchmark

    return benchmark(model, runs=20, min_secs=0.15, warmup=3, threads=1, xnnpack=xnnpack).to_dict()


def test_import_a_real_bench_json(tiny_tflite: Path, tmp_path: Path) -> None:
    """`edgeq-device bench --json` output, produced by the real benchmark, imported by the CLI."""
    from edgeq_device.measure.bench import BenchResult

    payload = _bench(tiny_tflite)
    result = BenchResult.from_dict(payload)
    bench_json = tmp_path / "bench.json"
    result.save(bench_json)
    db = str(tmp_path / "r.db")

    code, out, err = _run("store", "import", "--db", db, str(bench_json))
    assert code == 0, err
    assert "recorded as run #1" in out and "bench" in out and "float32" in out
    code, out, _ = _run("store", "import", "--db", db, str(bench_json))  # the same file again
    assert code == 0 and "already recorded as run #1" in out
    code, out, _ = _run("store", "import", "--db", db, "--device", "lab-pi", str(bench_json))
    assert code == 0 and "recorded as run #2" in out

    with ResultsStore(db) as store:
        assert len(store) == 2
        labelled, m = store.runs()
        assert labelled.device == "lab-pi"
        assert m.kind == "bench" and m.source == "device"
        assert m.model_sha256 == file_sha256(tiny_tflite)
        assert m.model_name == "tinycnn" and m.mode == "float32"
        assert m.size_bytes == tiny_tflite.stat().st_size == result.model_size_bytes
        assert (m.runtime, m.runtime_version, m.threads) == ("litert", result.runtime_version, 1)
        assert m.device == result.board.name  # no label given: the board's own name
        assert (m.latency_p50_us, m.latency_p90_us, m.latency_mean_us) == (
            result.latency.p50_us, result.latency.p90_us, result.latency.mean_us)
        assert m.latency_p50_us is not None and m.latency_p50_us > 0
        assert m.accuracy_top1 is None
        assert m.created.startswith(result.started[:19])
        assert m.payload == json.loads(bench_json.read_text())

        # The same result as a board reports it: its model path is not on this machine.
        away = dict(payload, model="/home/pi/models/tinycnn.tflite")
        row = store.add_device_result(away, device="pi5", source="deploy")
        got = store.runs(device="pi5")[0]
        assert got.id == row and got.source == "deploy" and got.model_sha256 == m.model_sha256
        assert (got.mode, got.model_name, got.size_bytes) == ("float32", "tinycnn", m.size_bytes)
        # Without the hash in the payload and without the file, the run cannot be keyed.
        del away["model_sha256"]
        with pytest.raises(DataError, match="sha256"):
            store.add_device_result(away, device="pi5")


def test_import_a_real_eval_json(tiny_tflite: Path, mnist_test: Path, tmp_path: Path) -> None:
    """`edgeq-device eval --json` output on real MNIST digits, imported through the API."""
    from edgeq_device.tasks.evaluation import evaluate

    result = evaluate(tiny_tflite, mnist_test, limit=60, threads=1)
    eval_json = tmp_path / "eval.json"
    result.save(eval_json)
    with ResultsStore(tmp_path / "r.db") as store:
        row = store.import_json(eval_json, device="host")
        (m,) = store.runs()
    assert m.id == row and m.kind == "eval" and m.device == "host"
    assert m.model_sha256 == file_sha256(tiny_tflite) == result.model_sha256
    assert (m.mode, m.threads, m.runtime) == ("float32", 1, result.runtime)
    assert (m.accuracy_top1, m.accuracy_top5) == (result.top1, result.top5)
    assert m.size_bytes == tiny_tflite.stat().st_size  # read from the model file, which is here
    assert m.latency_p50_us is None


def test_diff_flags_a_real_slowdown(tiny_tflite: Path, tmp_path: Path) -> None:
    """A regression found in two real benchmarks, nothing faked but which runs are compared.

    The same model is benchmarked on this machine with one thread, first with the runtime's
    default XNNPACK kernels, then with XNNPACK turned off (the builtin reference kernels,
    several times slower for convolutions). Both results are recorded, in that order, as
    runs of the same model hash, mode, device label, runtime and thread count: exactly what
    the store sees when a runtime upgrade or a configuration change slows a model down.
    A third run with XNNPACK back on is a speed-up, which is not a regression.
    """
    db = str(tmp_path / "r.db")
    fast, slow = _bench(tiny_tflite, xnnpack=True), _bench(tiny_tflite, xnnpack=False)
    with ResultsStore(db) as store:
        store.add_device_result(fast, device="ci-runner")
        store.add_device_result(slow, device="ci-runner")
        found = store.diff(device="ci-runner")
    p_fast = fast["latency"]["p50_us"]  # type: ignore[index]
    p_slow = slow["latency"]["p50_us"]  # type: ignore[index]
    assert p_slow > 1.1 * p_fast, (p_fast, p_slow)  # the premise: builtin kernels are slower
    assert len(found) == 1
    r = found[0]
    assert (r.metric, r.model, r.mode, r.device, r.threads) == ("latency_p50_us", "tinycnn", "float32",
                                                                  "ci-runner", 1)
    assert (r.previous, r.current) == (p_fast, p_slow)
    assert r.change == pytest.approx(p_slow / p_fast - 1)

    code, out, _ = _run("history", "--db", db, "--diff")
    assert code == 1 and "regression" in out and "tinycnn float32 on ci-runner" in out
    # A threshold above the measured slowdown lets it pass.
    code, out, _ = _run("history", "--db", db, "--diff", "--threshold-latency",
                        f"{(p_slow / p_fast - 1) * 100 + 50:.0f}%")
    assert code == 0 and "no regressions" in out

    with ResultsStore(db) as store:
        store.add_device_result(_bench(tiny_tflite, xnnpack=True), device="ci-runner")
    code, out, _ = _run("history", "--db", db, "--diff")
    assert code == 0 and "no regressions" in out
    code, out, _ = _run("history", "--db", db, "--model", "tinycnn")
    assert code == 0 and "3 run(s)" in out and "ci-runner" in out


# --------------------------------------------------------------------------- device JSON errors


def test_non_edgeq_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    other = tmp_path / "package.json"
    other.write_text(json.dumps({"name": "left-pad", "version": "1.3.0"}))
    with ResultsStore(tmp_path / "r.db") as store:
        with pytest.raises(DataError, match=r"package\.json.*not edgeq-device JSON.*keys \[name, version\]"):
            store.import_json(other)
        lst = tmp_path / "list.json"
        lst.write_text("[1, 2]")
        with pytest.raises(DataError, match=r"list\.json.*JSON list"):
            store.import_json(lst)
        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        with pytest.raises(DataError, match=r"broken\.json.*not JSON"):
            store.import_json(broken)
        newer = tmp_path / "newer.json"
        newer.write_text(json.dumps({"schema": "edgeq-device/bench/7"}))
        with pytest.raises(DataError, match=r"unknown version.*upgrade edgeq"):
            store.import_json(newer)
        with pytest.raises(DataError, match="no such file"):
            store.import_json(tmp_path / "absent.json")
        info = tmp_path / "info.json"
        info.write_text(json.dumps({"schema": "edgeq-device/info/2", "model_sha256": SHA_A}))
        with pytest.raises(DataError, match=r"info\.json.*not edgeq-device JSON"):
            store.import_json(info)
        partial = tmp_path / "partial.json"
        partial.write_text(json.dumps({"schema": "edgeq-device/bench/1", "model_sha256": SHA_A,
                                       "latency_us": {"p50": 10.0}}))
        with pytest.raises(DataError, match=r"partial\.json.*does not fit its schema.*lacks 'model'"):
            store.import_json(partial)
        assert len(store) == 0


# --------------------------------------------------------------------------- CLI


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_history_lists_runs_and_diff_exits_1_on_regression(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    with ResultsStore(db) as store:
        store.add_measurement(_m(created="2025-01-01T00:00:00Z", latency_p50_us=1000.0, size_bytes=2048))
        store.add_measurement(_m(created="2025-01-02T00:00:00Z", latency_p50_us=1050.0, size_bytes=2048))
    code, out, _ = _run("history", "--db", db)
    assert code == 0
    assert "2 run(s)" in out and out.index("2025-01-02") < out.index("2025-01-01") and "1.050" in out
    code, out, _ = _run("history", "--db", db, "--diff")
    assert code == 0 and "no regressions" in out
    code, out, _ = _run("history", "--db", db, "--diff", "--threshold-latency", "4%")
    assert code == 1 and "regression" in out and "+5.0%" in out
    code, out, _ = _run("history", "--db", db, "--diff", "--threshold-latency", "0.04", "--json", "-")
    assert code == 1 and json.loads(out)[0]["metric"] == "latency_p50_us"
    code, out, _ = _run("history", "--db", db, "--json", "-", "--limit", "1")
    assert code == 0 and [r["latency_p50_us"] for r in json.loads(out)] == [1050.0]
    target = tmp_path / "runs.json"
    target.write_text("keep")
    code, _, err = _run("history", "--db", db, "--json", str(target))
    assert code == 2 and "exists" in err and target.read_text() == "keep"
    assert _run("history", "--db", db, "--json", str(target), "--force")[0] == 0
    assert len(json.loads(target.read_text())) == 2


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 50)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": "world"}))
    cases = [
        (("history", "--db", str(tmp_path / "absent.db")), "no results store"),
        (("history", "--db", str(junk)), "not an edgeq results database"),
        (("history", "--db", str(tmp_path)), "is a directory"),
        (("store", "import", "--db", str(tmp_path / "r.db"), str(other)), "not edgeq-device JSON"),
        (("history", "--db", str(junk), "--diff", "--threshold-latency", "ten"), "--threshold-latency"),
    ]
    for args, expected in cases:
        code, out, err = _run(*args)
        assert code == 2, (args, out, err)
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
        assert "Traceback" not in out + err
    assert not (tmp_path / "r.db").exists()  # files are checked before the store is opened


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOARDS = {"edgeq-bar-0": "float32", "edgeq-bar-1": "float16", "raspberrypi-kitchen-5": "int16x8", "host": "dynamic"}


def _fleet_db(tmp_path: Path) -> str:
    db = str(tmp_path / "fleet.db")
    with ResultsStore(db) as store:
        for i, (board, mode) in enumerate(_BOARDS.items()):
            store.add_measurement(_m(model_sha256=hashlib.sha256(bytes([i])).hexdigest(),
                                     model_name="mobilenet_v2_1.00_224", mode=mode, device=board, kind="bench",
                                     size_bytes=3_500_000, latency_p50_us=12345.6, latency_p90_us=13000.0,
                                     accuracy_top1=0.7123, agreement=0.99, sqnr_db=27.3))
    return db


def test_history_piped_keeps_every_row_on_one_line(tmp_path: Path) -> None:
    db = _fleet_db(tmp_path)
    env = dict(os.environ, COLUMNS="80")
    proc = subprocess.run([sys.executable, "-m", "edgeq.cli", "history", "--db", db], capture_output=True,
                          text=True, env=env, timeout=120)  # standard output is a pipe
    assert proc.returncode == 0, proc.stderr
    for board, mode in _BOARDS.items():
        (line,) = [ln for ln in proc.stdout.splitlines() if f" {board} " in ln]  # what `| grep board` finds
        assert f" {mode} " in line and "mobilenet_v2_1.00_224" in line and "12.346" in line and "71.23" in line
    assert "…" not in proc.stdout


def test_history_on_an_80_column_terminal_cuts_no_name(tmp_path: Path) -> None:
    db = _fleet_db(tmp_path)
    res = CliRunner().invoke(cli, ["history", "--db", db], env={"COLUMNS": "80", "FORCE_COLOR": "1"})
    assert res.exit_code == 0, res.output
    text = _ANSI.sub("", res.stdout)
    assert max(len(ln) for ln in text.splitlines()) <= 80
    assert "…" not in text
    for board, mode in _BOARDS.items():
        (line,) = [ln for ln in text.splitlines() if f" {board} " in ln]
        assert f" {mode} " in line and "12.346" in line
    assert "left out for lack of width: sha256" in text


def test_history_formats_md_csv_json(tmp_path: Path) -> None:
    db = _fleet_db(tmp_path)
    code, out, _ = _run("history", "--db", db, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["device"]: r["mode"] for r in rows} == _BOARDS
    assert {r["model"] for r in rows} == {"mobilenet_v2_1.00_224"} and rows[0]["p50 ms"] == "12.346"
    code, out, _ = _run("history", "--db", db, "--format", "json")
    assert code == 0 and {r["device"]: r["mode"] for r in json.loads(out)} == _BOARDS
    code, out, _ = _run("history", "--db", db, "--format", "md")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("| # | UTC | model |") and len(lines) == 2 + len(_BOARDS)
    code, _, err = _run("history", "--db", db, "--diff", "--format", "csv")
    assert code == 2 and err.startswith("error: --format:")
