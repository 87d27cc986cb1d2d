"""One board's deploy, step by step: connect, probe, setup, upload, bench, eval, profile.

:class:`BoardRun` drives the steps over one :class:`~edgeq.deployment.ssh.SSHConnection`
(each step timed, its note kept and reported through the progress callback),
runs the agent (:mod:`edgeq.deployment.agent`) with the board's own Python for
probe/recv/setup and ``edgeq-device`` under the watcher
(:mod:`edgeq.deployment.watch`) for bench, eval and profile, and ends with a frozen
:class:`~edgeq.deployment.results.BoardResult`. Every failure becomes that result's
``error`` and ``error_kind``; nothing raised here escapes :meth:`BoardRun.run`
except the unexpected.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeq.deployment.fleet import Board
from edgeq.deployment.payload import agent_program, tar_folder, watch_program
from edgeq.deployment.results import BoardResult, bench_p50_ms, eval_top1, fidelity_sqnr
from edgeq.deployment.ssh import SSHConnection
from edgeq.errors import DEPLOY_ERROR_KINDS, DeployError

__all__ = ["BOARD_MACHINES", "BoardRun", "ProgressFn"]

ProgressFn = Callable[[str, str], None]

#: Machines (``platform.machine()``) the TFLite runtimes edgeq-device installs have wheels for.
BOARD_MACHINES = ("x86_64", "aarch64", "amd64", "arm64")


class _CancelledError(Exception):
    """The deploy was interrupted before this board's next step."""


def _remote_python(python: str) -> str:
    if python.startswith("~/"):
        return '"$HOME"/' + shlex.quote(python[2:])
    return shlex.quote(python)


def _parse_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            return obj if isinstance(obj, dict) else None
    return None


def _parse_json_doc(text: str) -> dict[str, Any] | None:
    text = text.strip()
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except json.JSONDecodeError:
        start = text.find("{")
        if start < 0:
            return None
        try:
            obj = json.loads(text[start:])
            return obj if isinstance(obj, dict) else None
        except json.JSONDecodeError:
            return None


class BoardRun:
    """Runs the steps on one board and returns its :class:`BoardResult`.

    Args:
        board: the board and how to reach it.
        model, model_sha: the ``.tflite`` file and its sha256.
        data, data_sha: the evaluation folder and its tree sha256 (None: no eval data).
        wheel, wheel_sha: the edgeq-device wheel to install and its sha256.
        want_bench, want_eval: which measurements to run.
        extra_args: more arguments for ``edgeq-device bench``.
        progress: called with (label, text) after each step.
        cancel: set when the whole deploy is interrupted; the next step stops the board.
        want_profile: also run ``edgeq-device profile`` (after bench and eval).
        fidelity: ``(inputs.npz, its sha256, reference.npz, its sha256)``: copy them (when they changed)
            and run ``edgeq-device eval MODEL --inputs --reference`` (after eval).
    """

    def __init__(self, board: Board, model: Path, model_sha: str, data: Path | None, data_sha: str | None,
                 wheel: Path, wheel_sha: str, want_bench: bool, want_eval: bool, extra_args: Sequence[str],
                 progress: ProgressFn, cancel: threading.Event, want_profile: bool = False,
                 fidelity: tuple[Path, str, Path, str] | None = None) -> None:
        self.b = board
        self.model, self.model_sha = model, model_sha
        self.data, self.data_sha = data, data_sha
        self.wheel, self.wheel_sha = wheel, wheel_sha
        self.want_bench, self.want_eval, self.want_profile = want_bench, want_eval, want_profile
        self.extra_args = list(extra_args)
        self.progress = progress
        self.cancel = cancel
        self.conn: SSHConnection | None = None
        # what the steps find, for the BoardResult at the end
        self.timings: dict[str, float] = {}
        self.actions: dict[str, str] = {}
        self.board_info: dict[str, Any] = {}
        self.bench: dict[str, Any] | None = None
        self.eval: dict[str, Any] | None = None
        self.profile: dict[str, Any] | None = None
        self.fidelity_files = fidelity
        self.fidelity: dict[str, Any] | None = None
        self.probe: dict[str, Any] = {}
        self.workdir = board.workdir
        self.venv_python = ""
        self.remote_paths: dict[str, str] = {}
        self.current_step: str | None = None

    def say(self, text: str) -> None:
        """Report a line of progress for this board."""
        self.progress(self.b.label, text)

    def step(self, name: str, fn: Callable[[], str | None]) -> None:
        """Run one step: stop first if the deploy was interrupted; time it, keep and report its note."""
        if self.cancel.is_set():
            raise _CancelledError()
        self.current_step = name
        t0 = time.perf_counter()
        try:
            note = fn()
        finally:
            dt = time.perf_counter() - t0
            self.timings[name] = round(dt, 3)
        if note:
            self.actions[name] = note
        self.say(f"{name} {note + ' ' if note else ''}({dt:.1f} s)")

    def helper(self, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
        """Run the agent with the board's Python (``python3 -c AGENT ARGS``); its JSON answer.

        Raises:
            DeployError: no Python there (kind ``no-python``), the agent's own error (its kind),
                or no answer (kind ``remote``).
        """
        assert self.conn is not None
        cmd = " ".join([_remote_python(self.b.python), "-c", shlex.quote(agent_program()),
                        *(shlex.quote(a) for a in args)])
        res = self.conn.run(cmd, stdin=stdin, timeout=self.b.timeout)
        out = _parse_json_line(res.text)
        if res.returncode in (126, 127) and out is None:
            raise DeployError(f"no Python at {self.b.python!r} on {self.b.describe()}: "
                              f"{(res.err.strip().splitlines() or ['not found'])[-1]}", kind="no-python",
                              argument=f"{self.b.label}.python", received=self.b.python,
                              fix="install python3 on the board, or set python = '/path/to/python3' for it")
        if out is not None and "error" in out:
            kind = str(out.get("kind", "remote"))
            raise DeployError(str(out["error"]), kind=kind if kind in DEPLOY_ERROR_KINDS else "remote",
                              fix=str(out.get("fix") or "") or None)
        if res.returncode != 0 or out is None:
            tail = (res.err.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
            raise DeployError(f"the edgeq helper failed on the board: {tail}", kind="remote",
                              fix="run the deploy again with the board reachable by ssh; report it if it persists")
        return out

    def run(self) -> BoardResult:
        """Every step in order; the board's result (failures are in it, not raised)."""
        t0 = time.perf_counter()
        ok, error, kind = False, None, None
        try:
            self.conn = SSHConnection(self.b.target())
            self.step("connect", self._connect)
            self.step("probe", self._probe)
            self.step("setup", self._setup)
            self.step("upload_model", lambda: self._upload(self.model, f"models/{self.model.name}",
                                                           self.model_sha, "file"))
            if self.data is not None and self.data_sha is not None:
                data, data_sha = self.data, self.data_sha
                self.step("upload_data", lambda: self._upload(data, f"data/{data.name}", data_sha, "tar"))
            if self.want_bench:
                self.step("bench", self._bench)
            if self.want_eval:
                self.step("eval", self._eval)
            if self.fidelity_files is not None:
                self.step("fidelity", self._fidelity)
            if self.want_profile:
                self.step("profile", self._profile)
            ok = True
        except _CancelledError:
            error, kind = "interrupted before this board finished", "interrupted"
        except DeployError as exc:  # SSHError included
            if self.cancel.is_set():  # the host stopped this board's commands: not the board's fault
                error, kind = "interrupted before this board finished", "interrupted"
            else:
                error, kind = str(exc), exc.kind
        finally:
            if self.conn is not None:
                self.conn.close()
            self.timings["total"] = round(time.perf_counter() - t0, 3)
        self.say("done" if ok else (f"stopped: {error}" if kind == "interrupted" else f"FAILED: {error}"))
        return BoardResult(self.b.label, self.b.describe(), ok=ok, error=error, error_kind=kind,
                           timings=dict(self.timings), actions=dict(self.actions), board=dict(self.board_info),
                           bench=self.bench, eval=self.eval, profile=self.profile, fidelity=self.fidelity,
                           step=None if ok else self.current_step, groups=self.b.groups)

    def kill_running(self) -> None:
        """Stop the board's running command and connection (Ctrl-C on the host)."""
        if self.conn is not None:
            self.conn.kill_running()

    # -- steps -----------------------------------------------------------------------
    def _connect(self) -> str | None:
        assert self.conn is not None
        self.conn.open()
        return None

    def _probe(self) -> str | None:
        info = self.helper("probe", self.b.workdir)
        self.probe = info
        self.workdir = str(info["workdir"])
        self.board_info = {k: info.get(k) for k in ("python", "python_version", "machine", "system",
                                                     "hostname", "workdir", "modules")}
        machine = str(info.get("machine") or "")
        if machine.lower() not in BOARD_MACHINES and self.b.runtime is None:
            raise DeployError(f"{self.b.describe()} is a {machine or 'unknown'} machine: no TFLite runtime has "
                              f"wheels for it (LiteRT and tflite-runtime: {', '.join(BOARD_MACHINES[:2])})",
                              kind="arch", argument=f"{self.b.label}.python", received=machine,
                              fix="use a 64-bit OS on the board (aarch64), or set its runtime (edgeq_runtime) "
                                  "when you installed one yourself")
        return f"python {info.get('python_version')} {info.get('machine')}"

    def _setup(self) -> str | None:
        rel = f"wheels/{self.wheel.name}"
        if self.probe.get("manifest", {}).get(rel) != self.wheel_sha:
            self.helper("recv", self.b.workdir, rel, self.wheel_sha, "file", stdin=self.wheel.read_bytes())
        extra = "tflite-runtime" if self.b.runtime == "tflite-runtime" else "litert"
        out = self.helper("setup", self.b.workdir, rel, self.wheel_sha, extra, "1" if self.b.offline else "0",
                          self.b.runtime or "")
        self.venv_python = str(out["python"])
        runtime = out.get("runtime")
        self.board_info["runtime"] = runtime
        name = runtime.get("name") if isinstance(runtime, dict) else None
        return f"venv {out.get('action')} ({out.get('install')}), runtime {name}"

    def _upload(self, local: Path, rel: str, sha: str, kind: str) -> str:
        remote_path = f"{self.workdir}/{rel}"
        if self.probe.get("manifest", {}).get(rel) == sha:
            self.remote_paths[rel] = remote_path
            return "unchanged"
        payload = local.read_bytes() if kind == "file" else tar_folder(local)
        self.helper("recv", self.b.workdir, rel, sha, kind, stdin=payload)
        self.remote_paths[rel] = remote_path
        return f"copied {len(payload) / 1e6:.2f} MB"

    def _device_cmd(self, verb: str, *args: str) -> dict[str, Any]:
        """``edgeq-device VERB ARGS --json -`` in the board's venv, under the watcher; its JSON document."""
        assert self.conn is not None
        exe = str(Path(self.venv_python).parent / "edgeq-device")
        cmd = [self.venv_python, "-c", watch_program(), exe, verb, *args, "--json", "-"]
        if self.b.threads:
            cmd += ["--threads", str(self.b.threads)]
        if self.b.runtime:
            cmd += ["--runtime", self.b.runtime]
        cmd += self.extra_args if verb == "bench" else []
        res = self.conn.run(cmd, timeout=self.b.timeout, hold_stdin=True)
        payload = _parse_json_doc(res.text) if res.returncode == 0 else None
        if payload is None:
            err = [ln for ln in res.err.strip().splitlines() if ln.strip()]
            reason = err[-1] if err else f"exit status {res.returncode}, no JSON on stdout"
            kind = "no-runtime" if "runtime" in reason.lower() and "no" in reason.lower() else verb
            raise DeployError(f"edgeq-device {verb} failed on the board: {reason}", kind=kind,
                              fix="run the same command on the board to see the whole message")
        return payload

    def _bench(self) -> str | None:
        payload = self._device_cmd("bench", self.remote_paths[f"models/{self.model.name}"])
        self.bench = payload
        p50 = bench_p50_ms(payload)
        return None if p50 is None else f"p50 {p50:.3f} ms"

    def _eval(self) -> str | None:
        assert self.data is not None
        payload = self._device_cmd("eval", self.remote_paths[f"models/{self.model.name}"],
                                   self.remote_paths[f"data/{self.data.name}"])
        self.eval = payload
        top1 = eval_top1(payload)
        return None if top1 is None else f"top-1 {top1:.4f}"

    def _fidelity(self) -> str | None:
        assert self.fidelity_files is not None
        x, x_sha, ref, ref_sha = self.fidelity_files
        for local, sha, name in ((x, x_sha, "inputs.npz"), (ref, ref_sha, "reference.npz")):
            self._upload(local, f"fidelity/{name}", sha, "file")
        payload = self._device_cmd("eval", self.remote_paths[f"models/{self.model.name}"],
                                   "--inputs", self.remote_paths["fidelity/inputs.npz"],
                                   "--reference", self.remote_paths["fidelity/reference.npz"])
        self.fidelity = payload
        sqnr = fidelity_sqnr(payload)
        return None if sqnr is None else f"SQNR {sqnr:.1f} dB vs the reference"

    def _profile(self) -> str | None:
        payload = self._device_cmd("profile", self.remote_paths[f"models/{self.model.name}"], "--quiet")
        self.profile = payload
        ops = payload.get("operators")
        if not isinstance(ops, list):
            return None
        timed = sum(1 for o in ops if isinstance(o, dict) and o.get("p50_us") is not None)
        return f"{timed}/{len(ops)} operators timed"
