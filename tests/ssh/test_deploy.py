"""Deploy to real boards: OpenSSH servers on 127.0.0.1 started by the session fixture."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.deployment.fleet import Board, load_fleet
from edgeq.deployment.orchestrate import deploy
from edgeq.deployment.results import DeployReport
from edgeq.errors import InvalidArgumentError, ModelFileError
from edgeq.store.db import ResultsStore, file_sha256

pytestmark = pytest.mark.ssh

QUICK = ["--runs", "20", "--min-secs", "0.1", "--warmup", "2"]


def _workdir(tmp: Path, name: str) -> str:
    return str(tmp / name / ".edgeq-device")


@pytest.fixture(scope="module")
def first_deploy(loopback_ssh, tiny_models_dir, eval_folder, board_python, tmp_path_factory):
    """One board, bench + eval, done once; later tests look at it and deploy again."""
    tmp = tmp_path_factory.mktemp("single")
    db = tmp / "results.db"
    board = Board(loopback_ssh.target("board-a"), label="pi4-kitchen", python=board_python,
                  workdir=_workdir(tmp, "board"), ssh_config=str(loopback_ssh.ssh_config))
    lines: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    report = deploy(tiny_models_dir["int8"], to=board, bench=True, evaluation=eval_folder, store=db,
                    bench_args=QUICK, progress=lambda label, text: lines.append((label, text)))
    return {"report": report, "db": db, "board": board, "lines": lines, "seconds": time.perf_counter() - t0}


def test_single_board_bench_and_eval(first_deploy, tiny_models_dir):
    report: DeployReport = first_deploy["report"]
    assert isinstance(report, DeployReport) and len(report) == 1
    res = report["pi4-kitchen"]
    assert res.ok, res.error
    assert res.error is None and res.error_kind is None
    assert res.bench is not None and res.bench["schema"] == "edgeq-device/bench/1"
    assert res.bench["runtime"] == "litert"
    assert res.bench["latency"]["count"] >= 20 and res.bench["latency"]["p50_us"] > 0
    assert res.eval is not None and res.eval["schema"] == "edgeq-device/eval/1"
    assert json.dumps(res.eval)  # plain JSON
    # the model and the data were copied, the venv was made and got edgeq-device without deps
    assert res.actions["upload_model"].startswith("copied")
    assert res.actions["upload_data"].startswith("copied")
    assert "venv created (no-deps)" in res.actions["setup"]
    for step in ("connect", "probe", "setup", "upload_model", "upload_data", "bench", "eval", "total"):
        assert res.timings[step] >= 0
    assert res.board["machine"] and res.board["python_version"].startswith("3.")
    # the model on the board is byte-identical, recorded in the sha256 manifest
    workdir = Path(first_deploy["board"].workdir)
    copied = workdir / "models" / tiny_models_dir["int8"].name
    assert copied.read_bytes() == tiny_models_dir["int8"].read_bytes()
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert f"models/{copied.name}" in manifest and "data/mnist_small" in manifest
    # each step printed a progress line for this board
    steps = [text.split()[0] for label, text in first_deploy["lines"] if label == "pi4-kitchen"]
    assert steps[:3] == ["connect", "probe", "setup"] and steps[-1] == "done"


def test_results_stored_under_the_board_label(first_deploy):
    res = first_deploy["report"]["pi4-kitchen"]
    assert len(res.stored_ids) == 2
    with sqlite3.connect(first_deploy["db"]) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        table = "measurements" if "measurements" in tables else tables[0]
        rows = conn.execute(f"select device, kind, source from {table}").fetchall()
    assert sorted(rows) == [("pi4-kitchen", "bench", "deploy"), ("pi4-kitchen", "eval", "deploy")]
    # the history command reads it back by board label
    out = CliRunner().invoke(cli, ["history", "--db", str(first_deploy["db"]), "--device", "pi4-kitchen"])
    assert out.exit_code == 0, out.output
    assert "pi4-kitchen" in out.output


def test_second_deploy_reuses_venv_and_skips_unchanged_files(first_deploy, tiny_models_dir, eval_folder,
                                                             tmp_path):
    report = deploy(tiny_models_dir["int8"], to=first_deploy["board"], evaluation=eval_folder, progress=False,
                    store=False)
    res = report["pi4-kitchen"]
    assert res.ok, res.error
    assert res.actions["upload_model"] == "unchanged"
    assert res.actions["upload_data"] == "unchanged"
    assert "venv reused" in res.actions["setup"]
    assert res.eval is not None and res.bench is None
    # a changed model is copied again; the old one is replaced atomically
    report = deploy(tiny_models_dir["float32"], to=first_deploy["board"], bench=True, bench_args=QUICK,
                    progress=False, store=False)
    res = report["pi4-kitchen"]
    assert res.ok, res.error
    assert res.actions["upload_model"].startswith("copied")
    assert "venv reused" in res.actions["setup"]


def test_eval_folder_with_empty_class_folders_keeps_its_indices_on_the_board(first_deploy, tiny_models_dir,
                                                                            eval_folder, tmp_path):
    import shutil

    from edgeq_device import evaluate

    data = tmp_path / "only_3_and_7"
    for name in ("0", "3", "7", "9"):
        (data / name).mkdir(parents=True)
    for name in ("3", "7"):
        for f in sorted((eval_folder / name).glob("*.png")):
            shutil.copy(f, data / name / f.name)
    with pytest.warns(UserWarning, match="no image"):
        here = evaluate(tiny_models_dir["int8"], data)
    report = deploy(tiny_models_dir["int8"], to=first_deploy["board"], evaluation=data, progress=False, store=False)
    res = report["pi4-kitchen"]
    assert res.ok, res.error
    assert res.actions["upload_data"].startswith("copied") and res.eval is not None
    # the empty class folders arrived: the board lists them as classes, as here
    assert res.eval["class_folders"] == {"0": 0, "3": 3, "7": 7, "9": 9} == here.class_folders
    assert res.eval["empty_folders"] == ["0", "9"] and res.eval["top1"] == here.top1


def test_fleet_runs_concurrently_and_an_unreachable_board_fails_alone(loopback_ssh, tiny_models_dir, board_python,
                                                                       tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    fleet = tmp_path / "devices.toml"
    fleet.write_text(f"""
[defaults]
python = "{board_python}"
ssh_config = "{loopback_ssh.ssh_config}"
threads = 1

[[board]]
label = "pi-a"
host = "{loopback_ssh.target('board-a')}"
workdir = "{_workdir(tmp_path, 'a')}"

[[board]]
label = "pi-b"
host = "{loopback_ssh.target('board-b')}"
workdir = "{_workdir(tmp_path, 'b')}"

[[board]]
label = "pi-gone"
host = "{loopback_ssh.user}@127.0.0.1"
port = {closed_port}
identity = "{loopback_ssh.identity}"
""")
    boards = load_fleet(fleet)
    assert [b.label for b in boards] == ["pi-a", "pi-b", "pi-gone"] and boards[0].threads == 1
    lines: list[tuple[str, str]] = []
    report = deploy(tiny_models_dir["int8"], fleet=fleet, bench=True, bench_args=QUICK, parallel=3,
                    store=tmp_path / "r.db", progress=lambda label, text: lines.append((label, text)))
    assert [b.label for b in report] == ["pi-a", "pi-b", "pi-gone"]
    assert report["pi-a"].ok and report["pi-b"].ok, (report["pi-a"].error, report["pi-b"].error)
    assert report["pi-a"].bench["threads"] == 1
    gone = report["pi-gone"]
    assert not gone.ok and gone.error_kind == "unreachable"
    assert "connection refused" in gone.error and str(closed_port) in gone.error
    assert not report.ok and [b.label for b in report.failed] == ["pi-gone"]
    # each board reported its own steps; the failure is one line naming the board
    assert {label for label, _ in lines} == {"pi-a", "pi-b", "pi-gone"}
    assert any(label == "pi-gone" and text.startswith("FAILED: ") for label, text in lines)
    # boards a and b ran at the same time: the fleet took less than the two in a row
    a, b = report["pi-a"].timings["total"], report["pi-b"].timings["total"]
    assert report.wall_seconds < a + b
    with ResultsStore(tmp_path / "r.db") as store:
        assert store is not None
    with sqlite3.connect(tmp_path / "r.db") as conn:
        devices = sorted(r[0] for r in conn.execute("select device from measurements"))
    assert devices == ["pi-a", "pi-b"]
    assert "pi-gone" in report.summary() and "unreachable" in report.summary()


def test_wrong_key_fails_with_auth_reason(loopback_ssh, tiny_models_dir, tmp_path):
    board = Board(f"{loopback_ssh.user}@127.0.0.1", port=loopback_ssh.ports["board-a"], label="wrong-key",
                  identity=str(loopback_ssh.wrong_identity),
                  ssh_options=(f"UserKnownHostsFile={loopback_ssh.known_hosts}", "StrictHostKeyChecking=yes"))
    res = deploy(tiny_models_dir["int8"], to=board, progress=False)["wrong-key"]
    assert not res.ok and res.error_kind == "auth"
    assert "Permission denied" in res.error and "authorized_keys" in res.error


def test_unknown_host_key_is_refused_not_prompted(loopback_ssh, tiny_models_dir, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    board = Board(f"{loopback_ssh.user}@127.0.0.1", port=loopback_ssh.ports["board-a"], label="new-host",
                  identity=str(loopback_ssh.identity),
                  ssh_options=(f"UserKnownHostsFile={empty}", "StrictHostKeyChecking=yes"))
    res = deploy(tiny_models_dir["int8"], to=board, progress=False)["new-host"]
    assert not res.ok and res.error_kind == "hostkey" and "known_hosts" in res.error


def test_board_without_python_fails_with_reason(loopback_ssh, tiny_models_dir, tmp_path):
    board = Board(loopback_ssh.target(), label="no-python", python="/opt/nowhere/bin/python3",
                  ssh_config=str(loopback_ssh.ssh_config), workdir=_workdir(tmp_path, "np"))
    res = deploy(tiny_models_dir["int8"], to=board, progress=False)["no-python"]
    assert not res.ok and res.error_kind == "no-python"
    assert "/opt/nowhere/bin/python3" in res.error and "python =" in res.error


def test_board_without_runtime_fails_with_reason(loopback_ssh, tiny_models_dir, tmp_path):
    """Debian's own python3 has no TFLite runtime (nor numpy); an offline board cannot get one."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 to stand in for a bare board")
    probe = subprocess.run(["/usr/bin/python3", "-c", "import ai_edge_litert"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has ai_edge_litert: not a bare board")
    board = Board(loopback_ssh.target(), label="bare", python="/usr/bin/python3", offline=True,
                  ssh_config=str(loopback_ssh.ssh_config), workdir=_workdir(tmp_path, "bare"))
    res = deploy(tiny_models_dir["int8"], to=board, bench=True, progress=False, store=False)["bare"]
    assert not res.ok and res.error_kind == "no-runtime"
    assert "TFLite runtime" in res.error and "offline" in res.error
    assert "ai-edge-litert" in res.error  # the fix names what to install
    assert "edgeq-device[" not in res.error  # and never edgeq-device from an index by name


def test_board_that_never_answers_times_out(tiny_models_dir, tmp_path):
    """A port that accepts TCP but never speaks SSH: the board fails with a time-out, nothing hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    try:
        board = Board("root@127.0.0.1", port=port, label="silent", connect_timeout=2,
                      ssh_options=("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"))
        t0 = time.perf_counter()
        res = deploy(tiny_models_dir["int8"], to=board, progress=False)["silent"]
        assert time.perf_counter() - t0 < 30
    finally:
        srv.close()
    assert not res.ok and res.error_kind == "timeout" and "timed out" in res.error


def test_bad_arguments_raise_before_connecting(tiny_models_dir, tmp_path):
    with pytest.raises(ModelFileError, match="model"):
        deploy(tmp_path / "missing.tflite", to="pi@nowhere")
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"0123456789abcdef")
    with pytest.raises(ModelFileError, match="TFL3"):
        deploy(not_tflite, to="pi@nowhere")
    with pytest.raises(InvalidArgumentError, match="to"):
        deploy(tiny_models_dir["int8"])
    with pytest.raises(InvalidArgumentError, match="parallel"):
        deploy(tiny_models_dir["int8"], to="pi@nowhere", parallel=0)
    with pytest.raises(InvalidArgumentError, match="runtime"):
        deploy(tiny_models_dir["int8"], to=Board("pi@nowhere", runtime="onnx"))
    bad = tmp_path / "devices.toml"
    bad.write_text('[[board]]\nhost = "pi@x"\ncolour = "red"\n')
    with pytest.raises(InvalidArgumentError, match="colour"):
        load_fleet(bad)
    bad.write_text('[[board]]\nhost = "pi@x"\nlabel = "a"\n[[board]]\nhost = "pi@y"\nlabel = "a"\n')
    with pytest.raises(InvalidArgumentError, match="label"):
        load_fleet(bad)


def test_cli_deploy(loopback_ssh, tiny_models_dir, board_python, tmp_path):
    db = tmp_path / "cli.db"
    out_json = tmp_path / "report.json"
    env = {**os.environ, "EDGEQ_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", "deploy", str(tiny_models_dir["int8"]),
         "--to", loopback_ssh.target("board-a"), "--to", f"{loopback_ssh.user}@127.0.0.1:1",
         "--ssh-config", str(loopback_ssh.ssh_config), "--python", board_python, "--threads", "1",
         "--workdir", _workdir(tmp_path, "cli"), "--bench", "--bench-arg=--runs=10", "--bench-arg=--min-secs=0.1",
         "--db", str(db), "--report", str(out_json)],
        capture_output=True, text=True, env=env, timeout=300)
    # one board failed: exit status 1, the other's result is printed and stored
    assert proc.returncode == 1, proc.stderr
    assert "[board-a] done" in proc.stderr
    assert "[127.0.0.1] FAILED: " in proc.stderr and "connection refused" in proc.stderr
    assert "board-a" in proc.stdout and "unreachable" in proc.stdout
    saved = json.loads(out_json.read_text())
    assert saved["schema"] == "edgeq/deploy/1" and [b["ok"] for b in saved["boards"]] == [True, False]
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("select device from measurements")] == ["board-a"]
    # bad input: one line, exit 2
    proc = subprocess.run([sys.executable, "-m", "edgeq.cli", "deploy", str(tmp_path / "none.tflite"),
                           "--to", "pi@x"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: model: ")


def test_cli_deploy_profile_runs_on_the_board_and_is_stored(loopback_ssh, tiny_models_dir, board_python, tmp_path):
    from edgeq_device.measure.profile import ProfileResult

    from edgeq.store.device_json import parse_device_result

    db = tmp_path / "profile.db"
    out_json = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", "deploy", str(tiny_models_dir["int8"]),
         "--to", loopback_ssh.target("board-a"), "--ssh-config", str(loopback_ssh.ssh_config),
         "--python", board_python, "--threads", "1", "--workdir", _workdir(tmp_path, "profile"), "--profile",
         "--db", str(db), "--report", str(out_json)],
        capture_output=True, text=True, env={**os.environ, "EDGEQ_PROGRESS": "0"}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "[board-a] profile " in proc.stderr and "operators timed" in proc.stderr
    res = DeployReport.from_dict(json.loads(out_json.read_text()))["board-a"]
    assert res.ok and res.bench is None and res.eval is None and res.timings["profile"] > 0
    prof = res.profile_result
    assert isinstance(prof, ProfileResult) and prof.threads == 1 and prof.runtime == "litert"
    assert prof.operators and prof.coverage == 1.0 and prof.whole_p50_us and prof.whole_p50_us > 0
    assert prof.model_sha256 == file_sha256(tiny_models_dir["int8"])
    with ResultsStore(db) as store:
        (m,) = store.runs(device="board-a")
    assert m.kind == "profile" and m.source == "deploy" and list(res.stored_ids) == [m.id]
    assert m.latency_p50_us == prof.whole_p50_us
    assert parse_device_result(m.payload) == prof


def test_ctrl_c_stores_nothing_half_done(loopback_ssh, tiny_models_dir, board_python, tmp_path):
    """SIGINT while the boards are measuring: exit 130, no result rows, no partial files on the host."""
    db = tmp_path / "int.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeq.cli", "deploy", str(tiny_models_dir["int8"]),
         "--to", loopback_ssh.target("board-a"), "--to", loopback_ssh.target("board-b"),
         "--ssh-config", str(loopback_ssh.ssh_config), "--python", board_python,
         "--workdir", _workdir(tmp_path, "int"), "--bench", "--bench-arg=--min-secs=60",
         "--bench-arg=--max-secs=60", "--db", str(db), "--report", str(tmp_path / "rep.json")],
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_as_terminal_foreground_job)
    seen: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum("upload_model" in s for s in seen) < 2:
        time.sleep(0.2)
    assert sum("upload_model" in s for s in seen) == 2, seen
    time.sleep(1.0)  # both boards are in bench now (60 s each)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"deploy did not stop on SIGINT: {seen}") from None
    reader.join(timeout=5)
    assert rc == 130, seen
    assert not [s for s in seen if "FAILED" in s], seen  # an interrupt is not a broken board
    assert not (tmp_path / "rep.json").exists()
    rows = 0
    if db.exists():
        with sqlite3.connect(db) as conn:
            rows = conn.execute("select count(*) from measurements").fetchone()[0]
    assert rows == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # the measurements on the boards stopped too (their ssh session's stdin closed)
    workdir = _workdir(tmp_path, "int")
    deadline = time.monotonic() + 20
    while _processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_mentioning(workdir)


def _as_terminal_foreground_job() -> None:
    # A job started in the background by a shell without job control (a CI runner, `make` with
    # `&`) inherits SIGINT ignored, and Python keeps it so; a terminal's foreground job does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_ssh_connection_reuses_one_master_and_tells_remote_from_ssh_failures(loopback_ssh, tmp_path):
    from edgeq.deployment.ssh import SSHConnection, SSHError, SSHTarget

    target = SSHTarget(loopback_ssh.target("board-b"), ssh_config=str(loopback_ssh.ssh_config))
    with SSHConnection(target) as conn:
        assert conn.control_dir and len(os.listdir(conn.control_dir)) == 1  # the master's socket
        first = conn.run("echo $PPID; cat", stdin=b"bytes in", timeout=30)
        assert first.returncode == 0 and first.text.splitlines()[1] == "bytes in"
        # a remote program exiting 255 is the program's status, not an ssh failure
        res = conn.run(["sh", "-c", "exit 255"], timeout=30)
        assert res.returncode == 255
        with pytest.raises(SSHError) as exc:
            conn.run("echo oops >&2; exit 3", timeout=30, check=True)
        assert exc.value.kind == "remote" and "oops" in str(exc.value)
        with pytest.raises(SSHError) as exc:
            conn.run("sleep 20", timeout=1)
        assert exc.value.kind == "timeout"
        control_dir = conn.control_dir
    assert not os.path.exists(control_dir)  # master stopped, private folder removed
    # without a master, a failed connection is classified from ssh's own message
    closed = SSHConnection(SSHTarget(f"{loopback_ssh.user}@127.0.0.1", port=1, identity=str(loopback_ssh.identity)))
    try:
        with pytest.raises(SSHError) as exc:
            closed.run("true", timeout=30)
        assert exc.value.kind == "unreachable" and "connection refused" in str(exc.value)
    finally:
        closed.close()


@pytest.mark.slow
def test_board_without_runtime_gets_one_from_pip_when_online(loopback_ssh, tiny_models_dir, tmp_path):
    """Debian's bare python3 and internet: pip resolves numpy, pillow, ... and ai-edge-litert there."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3 to stand in for a bare board")
    board = Board(loopback_ssh.target(), label="bare-online", python="/usr/bin/python3", timeout=900,
                  ssh_config=str(loopback_ssh.ssh_config), workdir=_workdir(tmp_path, "online"))
    res = deploy(tiny_models_dir["int8"], to=board, bench=True, bench_args=QUICK, progress=False,
                 store=False)["bare-online"]
    if not res.ok and res.error_kind == "no-runtime" and "pip could not install" in (res.error or ""):
        pytest.skip(f"no package index reachable from here: {res.error}")
    assert res.ok, res.error
    assert "venv created (resolved)" in res.actions["setup"]
    assert res.bench["runtime"] == "litert"
