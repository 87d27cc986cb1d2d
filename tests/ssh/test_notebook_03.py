"""notebooks/03_deploy_and_benchmark.ipynb runs top to bottom against the loopback board."""

from __future__ import annotations

import sqlite3

import pytest

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


def test_notebook_03_deploys_and_compares(loopback_ssh, board_python, tmp_path, monkeypatch, execute_notebook):
    fleet = tmp_path / "devices.toml"
    fleet.write_text(f"""
[[board]]
label = "pi4-notebook"
host = "{loopback_ssh.target('board-a')}"
ssh_config = "{loopback_ssh.ssh_config}"
python = "{board_python}"
workdir = "{tmp_path / 'board' / '.edgeq-device'}"
""")
    db = tmp_path / "results.db"
    monkeypatch.setenv("EDGEQ_BOARD", str(fleet))
    monkeypatch.setenv("EDGEQ_DB", str(db))
    outputs = execute_notebook("03_deploy_and_benchmark.ipynb")
    html = "".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    # the side-by-side table has the host and the board
    assert "<td>host</td>" in html and "<td>pi4-notebook</td>" in html
    text = "".join(o.get("text", "") for o in outputs)
    assert "1 board: 1 ok, 0 failed" in text
    # int8 on both machines: the same predictions, so the same accuracy
    assert "pi4-notebook: the same top-1 as the host" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "no latency chart"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select device, kind, source from measurements order by device, kind").fetchall()
    assert rows == [("host", "bench", "notebook"), ("host", "eval", "notebook"),
                    ("pi4-notebook", "bench", "deploy"), ("pi4-notebook", "eval", "deploy")]
