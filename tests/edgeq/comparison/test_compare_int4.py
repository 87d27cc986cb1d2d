"""int4 through the product: edgeq convert --mode int4 --rounding, edgeq compare --modes ...,int4 (compressed
size column, report, store, the runtime note up front), and the store's compressed-size migration."""

from __future__ import annotations

import gzip
import json
import sqlite3

import pytest
from click.testing import CliRunner
from edgeq_device.model.flatbuffer import read_flat_model

from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError
from edgeq.store.db import MIGRATIONS, SCHEMA_VERSION, ResultsStore
from edgeq.store.records import Measurement


@pytest.fixture(scope="module")
def digits_keras(digits_cnn, tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("int4cli") / "digits.keras"
    digits_cnn.save(path)
    return path


@pytest.mark.slow
def test_convert_cli_int4_rounding_and_gzip_column(digits_keras, mnist_train, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["convert", str(digits_keras), "--mode", "int8,int4", "--calib", str(mnist_train),
                                   "--samples", "32", "-o", str(out), "--json", str(tmp_path / "c.json")],
                             env={"COLUMNS": "200", "EDGEQ_PROGRESS": "0"}, catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert "gzip -9" in res.stdout
    data = json.loads((tmp_path / "c.json").read_text())["results"]
    by_mode = {r["mode"]: r for r in data}
    int4 = (out / "digits_int4.tflite").read_bytes()
    assert by_mode["int4"]["compressed_size_bytes"] == len(gzip.compress(int4, 9, mtime=0))
    assert by_mode["int4"]["size_bytes"] < 0.75 * by_mode["int8"]["size_bytes"]
    assert any(t.dtype == "INT4" for t in read_flat_model(int4).main.tensors)
    bad = CliRunner().invoke(cli, ["convert", str(digits_keras), "--mode", "int4", "--rounding", "stochastic",
                                   "-o", str(tmp_path / "x")], catch_exceptions=False)
    assert bad.exit_code == 2 and "Traceback" not in bad.stderr
    assert "--rounding" in bad.stderr and "stochastic" in bad.stderr and "nearest" in bad.stderr
    nodata = CliRunner().invoke(cli, ["convert", str(digits_keras), "--mode", "int4", "-o", str(tmp_path / "y")],
                                env={"EDGEQ_PROGRESS": "0"}, catch_exceptions=False)
    assert nodata.exit_code != 0 and len(nodata.stderr.strip().splitlines()) == 1
    assert "--rounding nearest" in nodata.stderr


@pytest.mark.slow
def test_compare_int4_compressed_size_note_report_and_store(digits_keras, mnist_train, mnist_test,
                                                            tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, db = tmp_path / "report", tmp_path / "results.db"
    args = ["compare", str(digits_keras), "--calib", str(mnist_train), "--eval", str(mnist_test), "--modes",
            "int8,int4", "--threads", "1", "--samples", "32", "--eval-samples", "60", "-o", str(out),
            "--db", str(db)]
    res = CliRunner().invoke(cli, args, env={"COLUMNS": "200", "EDGEQ_PROGRESS": "0"}, catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert res.stderr.lstrip().startswith("note: int4: needs LiteRT")  # before any measuring
    data = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert data["notes"][0].startswith("int4: needs LiteRT")
    for name in ("int8", "int4"):
        assert 0 < rows[name]["compressed_size_bytes"] < rows[name]["size_bytes"]
    assert rows["int4"]["size_bytes"] < rows["int8"]["size_bytes"] and rows["int4"]["agreement"] >= 0.9
    assert "gzip -9" in res.stdout and "gzip -9" in (out / "report.md").read_text()
    stored = {m.mode: m for m in ResultsStore(db).runs()}
    assert stored["int4"].compressed_size_bytes == rows["int4"]["compressed_size_bytes"]


def test_store_migration_adds_compressed_size_to_an_older_file(tmp_path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    for step in MIGRATIONS[:3]:
        step(conn)
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with ResultsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        m = Measurement(model_sha256="a" * 64, mode="int4", device="host", runtime="litert", kind="bench",
                        size_bytes=1000, compressed_size_bytes=700)
        store.record(m)
        (got,) = store.runs()
        assert got.compressed_size_bytes == 700 and got.size_bytes == 1000
    with pytest.raises(InvalidArgumentError, match="compressed_size_bytes"):
        Measurement(model_sha256="a" * 64, mode="int4", device="host", runtime="litert", kind="bench",
                    compressed_size_bytes=-1)
