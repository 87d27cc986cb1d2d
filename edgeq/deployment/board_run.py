"""Deploy a ``.tflite`` model to boards over SSH and measure it there.

``edgeq.deploy("model.tflite", to="pi@raspberrypi.local", bench=True)`` does, for
each board, concurrently (at most ``parallel`` at once):

1. **connect** with the system ``ssh`` (the user's ``~/.ssh/config``, keys,
   agent, ``ProxyJump`` and ``known_hosts`` apply); one control master per board
   carries every later step; ``BatchMode=yes``, so nothing prompts.
2. **probe** the board's Python: version, machine, which modules it has.
3. **setup**: the edgeq-device wheel, the very ``edgeq_device`` code this host
   runs (see :func:`build_device_wheel`: from the source tree of an editable
   install, or packed from the installed distribution's files checked against its
   ``RECORD``; never fetched from an index by name), goes into a
   venv under the board's ``~/.edgeq-device/``, made with
   ``--system-site-packages`` so Debian's numpy serves on a board without
   internet. When the board already has numpy, pillow, flatbuffers, click and a
   TFLite runtime it is installed with ``--no-deps``; otherwise pip resolves
   them. A venv with the same wheel is reused as it is.
4. **upload** the model (and with ``eval=`` the dataset folder) only when its
   sha256 differs from the board's manifest; files land atomically.
5. **bench** / **eval** with ``edgeq-device ... --json -``.

Each board ends with a :class:`BoardResult`; a board that cannot be reached,
rejects the key, has no Python or no runtime, or times out fails alone with a
clear reason while the others finish. Results go to the results store only
when a board has finished, tagged with the board's label.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import Distribution
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from edgeq_device.fileio import atomic_write_text
from edgeq_device.report_json import dumps_json

from edgeq.deployment import agent as _remote
from edgeq.deployment.ssh import SSHConnection, SSHError, SSHTarget, parse_target
from edgeq.errors import DeployError, InvalidArgumentError, ModelFileError

__all__ = [
    "Board",
    "BoardResult",
    "DeployReport",
    "build_device_wheel",
    "deploy",
    "load_fleet",
]

BOARD_KEYS = ("host", "label", "port", "user", "identity", "python", "threads", "runtime", "workdir",
              "timeout", "ssh_config", "ssh_options", "offline", "connect_timeout")
RUNTIME_CHOICES = ("litert", "tflite-runtime", "tensorflow")
DEFAULT_WORKDIR = "~/.edgeq-device"
DEFAULT_TIMEOUT = 900.0

ProgressFn = Callable[[str, str], None]


# --------------------------------------------------------------------------- boards


@dataclass(frozen=True)
class Board:
    """One board and how to reach and use it (a row of ``devices.toml``).

    Attributes:
        host: ``user@host``, ``user@host:PORT`` or a ``Host`` alias from ssh config.
        label: the name results are stored under (default: the host name).
        port: SSH port (overrides one in ``host``).
        identity: private key file for this board.
        python: the board's Python that makes the venv (``python3``, a path, or a
            venv's python whose packages the edgeq venv then sees too).
        threads: interpreter threads for bench/eval (None: the runtime's default).
        runtime: ``litert``, ``tflite-runtime`` or ``tensorflow`` (None: first found).
        workdir: the per-user edgeq folder on the board.
        timeout: seconds any one step may take on this board.
        ssh_config: an ssh_config file to use instead of ``~/.ssh/config``.
        ssh_options: extra ``-o`` options for ssh (``"ProxyJump=bastion"``).
        offline: the board has no internet: never let pip download there.
        connect_timeout: seconds for the SSH connection itself.
    """

    host: str
    label: str = ""
    port: int | None = None
    identity: str | None = None
    python: str = "python3"
    threads: int | None = None
    runtime: str | None = None
    workdir: str = DEFAULT_WORKDIR
    timeout: float = DEFAULT_TIMEOUT
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()
    offline: bool = False
    connect_timeout: float = 15.0

    def __post_init__(self) -> None:
        dest, port = parse_target(self.host)
        if port is not None and self.port is None:
            object.__setattr__(self, "port", port)
        object.__setattr__(self, "host", dest)
        if not self.label:
            object.__setattr__(self, "label", dest.split("@")[-1])
        if self.port is not None and not (isinstance(self.port, int) and 0 < self.port < 65536):
            raise InvalidArgumentError("not a TCP port", argument=f"{self.label}.port", received=self.port,
                                       fix="give an integer between 1 and 65535")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InvalidArgumentError("threads must be a positive integer", argument=f"{self.label}.threads",
                                       received=self.threads, fix="give e.g. threads = 4, or leave it out")
        if self.runtime is not None and self.runtime not in RUNTIME_CHOICES:
            raise InvalidArgumentError("unknown runtime", argument=f"{self.label}.runtime", received=self.runtime,
                                       fix=f"use one of {', '.join(RUNTIME_CHOICES)}, or leave it out")
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise InvalidArgumentError("timeout must be a positive number of seconds",
                                       argument=f"{self.label}.timeout", received=self.timeout,
                                       fix="give e.g. timeout = 600")
        if isinstance(self.ssh_options, str):
            object.__setattr__(self, "ssh_options", (self.ssh_options,))
        else:
            object.__setattr__(self, "ssh_options", tuple(self.ssh_options))

    def target(self) -> SSHTarget:
        """The :class:`~edgeq.ssh.SSHTarget` for this board."""
        return SSHTarget(self.host, self.port, self.identity, self.ssh_config, self.ssh_options,
                         self.connect_timeout)

    def describe(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def _board_from_mapping(d: Mapping[str, Any], where: str) -> Board:
    unknown = sorted(set(d) - set(BOARD_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown key {unknown[0]!r} in {where}", argument="fleet",
                                   received=unknown, fix=f"use only {', '.join(BOARD_KEYS)}")
    if "host" not in d:
        raise InvalidArgumentError(f"{where} has no host", argument="fleet", received=dict(d),
                                   fix='add host = "user@hostname"')
    kw = dict(d)
    user = kw.pop("user", None)
    if user and "@" not in str(kw["host"]):
        kw["host"] = f"{user}@{kw['host']}"
    for key in ("identity", "ssh_config"):
        if kw.get(key):
            kw[key] = str(Path(str(kw[key])).expanduser())
    try:
        return Board(**kw)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad value in {where}: {exc}", argument="fleet", received=dict(d),
                                   fix="check the key names and value types") from exc


def load_fleet(path: str | os.PathLike[str]) -> list[Board]:
    """Read a ``devices.toml`` fleet file.

    Format::

        [defaults]              # optional, applies to every board
        identity = "~/.ssh/id_ed25519"
        threads = 4

        [[board]]
        label = "pi4-kitchen"
        host = "pi@raspberrypi.local"
        port = 22
        python = "python3"
        runtime = "litert"

    Keys: ``host`` (required), ``label``, ``port``, ``user``, ``identity``,
    ``python``, ``threads``, ``runtime``, ``workdir``, ``timeout``,
    ``ssh_config``, ``ssh_options`` (list), ``offline``, ``connect_timeout``.
    Relative ``identity``/``ssh_config`` paths are taken from the file's folder.

    Raises:
        InvalidArgumentError: the file is missing, not TOML, or has unknown keys.
    """
    p = Path(path).expanduser()
    try:
        import tomllib as toml  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as toml  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ModuleNotFoundError:
            raise InvalidArgumentError("reading devices.toml needs Python >= 3.11 or the tomli package",
                                       argument="fleet", received=str(p), fix="pip install tomli") from None
    try:
        data = toml.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgumentError("no such fleet file", argument="fleet", received=str(p),
                                   fix="give the path of a devices.toml") from None
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the fleet file: {exc}", argument="fleet", received=str(p),
                                   fix="fix the TOML syntax") from exc
    defaults = data.get("defaults", {})
    rows = data.get("board", data.get("boards"))
    extra = sorted(set(data) - {"defaults", "board", "boards"})
    if extra or not isinstance(rows, list) or not rows:
        raise InvalidArgumentError("a fleet file needs one or more [[board]] tables (and optionally "
                                   "[defaults])", argument="fleet", received=extra or str(p),
                                   fix='add [[board]] with host = "user@hostname"')
    boards = []
    for i, row in enumerate(rows):
        merged = {**defaults, **row}
        for key in ("identity", "ssh_config"):
            if merged.get(key) and not str(merged[key]).startswith(("~", "/")):
                merged[key] = str(p.parent / str(merged[key]))
        boards.append(_board_from_mapping(merged, f"{p} board #{i + 1}"))
    labels = [b.label for b in boards]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InvalidArgumentError("two boards share a label", argument="fleet", received=dup,
                                   fix="give each [[board]] its own label")
    return boards


# --------------------------------------------------------------------------- results


@dataclass
class BoardResult:
    """What happened on one board.

    Attributes:
        label: the board's label (results are stored under it).
        host: where it was reached (``user@host:port``).
        ok: every step succeeded.
        error: why it failed (one line with the fix), or None.
        error_kind: ``unreachable``, ``auth``, ``hostkey``, ``timeout``, ``no-python``,
            ``no-venv``, ``no-runtime``, ``missing-deps``, ``setup``, ``transfer``,
            ``bench``, ``eval``, ``interrupted`` or ``remote``.
        timings: seconds per step (``connect``, ``probe``, ``setup``, ``upload_model``,
            ``upload_data``, ``bench``, ``eval``, ``total``).
        actions: what each step did (``created``/``reused`` venv, ``copied``/``unchanged`` files).
        board: what the probe found (python version, machine, ...).
        bench: the ``edgeq-device bench --json`` payload, or None.
        eval: the ``edgeq-device eval --json`` payload, or None.
        stored_ids: row ids in the results store.
    """

    label: str
    host: str
    ok: bool = False
    error: str | None = None
    error_kind: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    board: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    stored_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeployReport:
    """One :class:`BoardResult` per board, in the order the boards were given."""

    model: str
    boards: list[BoardResult]
    wall_seconds: float = 0.0
    db: str | None = None

    @property
    def ok(self) -> bool:
        """Every board succeeded."""
        return all(b.ok for b in self.boards)

    @property
    def failed(self) -> list[BoardResult]:
        return [b for b in self.boards if not b.ok]

    def __iter__(self) -> Iterator[BoardResult]:
        return iter(self.boards)

    def __len__(self) -> int:
        return len(self.boards)

    def __getitem__(self, label: str) -> BoardResult:
        for b in self.boards:
            if b.label == label:
                return b
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgeq/deploy/1", "model": self.model, "wall_seconds": self.wall_seconds,
                "db": self.db, "boards": [b.to_dict() for b in self.boards]}

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the report as JSON, atomically; refuse to overwrite unless asked."""
        return atomic_write_text(path, dumps_json(self.to_dict(), indent=2, default=str) + "\n",
                                 overwrite=overwrite, argument="path")

    def summary(self) -> str:
        """A plain-text table: one line per board."""
        lines = [f"{'board':<18} {'status':<7} {'p50 ms':>8} {'top1':>6} {'total s':>8}  detail"]
        for b in self.boards:
            p50 = _bench_p50_ms(b.bench)
            top1 = _eval_top1(b.eval)
            lines.append(f"{b.label:<18} {'ok' if b.ok else 'FAILED':<7} "
                         f"{'' if p50 is None else f'{p50:.3f}':>8} {'' if top1 is None else f'{top1:.3f}':>6} "
                         f"{b.timings.get('total', 0.0):>8.1f}  {b.error or b.board.get('machine', '')}")
        lines.append(f"{sum(b.ok for b in self.boards)}/{len(self.boards)} boards ok in {self.wall_seconds:.1f} s")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # notebooks
        import html
        rows = "".join(
            f"<tr><td>{html.escape(b.label)}</td><td>{'ok' if b.ok else 'FAILED'}</td>"
            f"<td>{'' if _bench_p50_ms(b.bench) is None else f'{_bench_p50_ms(b.bench):.3f}'}</td>"
            f"<td>{'' if _eval_top1(b.eval) is None else f'{_eval_top1(b.eval):.3f}'}</td>"
            f"<td>{b.timings.get('total', 0.0):.1f}</td><td>{html.escape(b.error or '')}</td></tr>"
            for b in self.boards)
        return ("<table><tr><th>board</th><th>status</th><th>p50 ms</th><th>top-1</th><th>total s</th>"
                f"<th>error</th></tr>{rows}</table>")


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _bench_p50_ms(payload: Mapping[str, Any] | None) -> float | None:
    if not payload:
        return None
    for path in (("latency_ms", "p50"), ("latency", "p50_ms"), ("timing", "p50_ms"), ("latency_ms", "median")):
        v = _dig(payload, *path)
        if isinstance(v, (int, float)):
            return float(v)
    for path in (("latency_us", "p50"), ("latency", "p50_us")):
        v = _dig(payload, *path)
        if isinstance(v, (int, float)):
            return float(v) / 1000.0
    return None


def _eval_top1(payload: Mapping[str, Any] | None) -> float | None:
    if not payload:
        return None
    for path in (("accuracy", "top1"), ("top1",), ("metrics", "top1")):
        v = _dig(payload, *path)
        if isinstance(v, (int, float)):
            return float(v)
    return None


# --------------------------------------------------------------------------- host-side files


def file_sha256(path: Path) -> str:
    """sha256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(root: Path) -> str:
    """sha256 over a folder: relative paths and file hashes, and empty folders, sorted (same as on the board)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if not dirnames and not filenames and Path(dirpath) != root:  # an empty class folder is data too
            h.update(Path(dirpath).relative_to(root).as_posix().encode("utf-8") + b"/\0dir\n")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            h.update(rel.encode("utf-8") + b"\0" + file_sha256(full).encode("ascii") + b"\n")
    return h.hexdigest()


def _tar_folder(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if not dirnames and not filenames and Path(dirpath) != root:  # empty class folders travel too
                info = tf.gettarinfo(dirpath, arcname=Path(dirpath).relative_to(root).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tf.addfile(info)
            for name in sorted(filenames):
                full = Path(dirpath) / name
                info = tf.gettarinfo(str(full), arcname=full.relative_to(root).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(full, "rb") as fh:
                    tf.addfile(info, fh)
    return buf.getvalue()


_WHEEL_LOCK = threading.Lock()
_WHEELS: dict[str, Path] = {}


def _device_source() -> Path | None:
    """The source tree the imported ``edgeq_device`` comes from (an editable install or a checkout)."""
    import edgeq_device

    root = Path(edgeq_device.__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    if project.is_file() and (root / "edgeq_device").is_dir():
        try:
            if re.search(r'^name\s*=\s*"edgeq-device"', project.read_text("utf-8"), re.M):
                return root
        except (OSError, UnicodeDecodeError):
            return None
    return None


def _installed_device_distribution() -> Distribution:
    """The installed edgeq-device distribution that holds the imported ``edgeq_device``."""
    from importlib.metadata import distributions

    import edgeq_device

    here = Path(edgeq_device.__file__).resolve()
    for dist in distributions(name="edgeq-device"):
        for f in dist.files or []:
            if f.name == "__init__.py" and f.parts[:1] == ("edgeq_device",) \
                    and Path(str(dist.locate_file(f))).resolve() == here:
                return dist
    raise DeployError("the imported edgeq_device is neither in a source tree nor in an installed edgeq-device "
                      "distribution, so there is no checked copy of it to send to boards",
                      argument="device wheel", received=str(here.parent),
                      fix="install edgeq-device with pip (pip install ./device) or run from the source tree")


def _source_key(src: Path) -> str:
    h = hashlib.sha256()
    for f in sorted([src / "pyproject.toml", *(src / "edgeq_device").rglob("*")]):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def build_device_wheel(cache_dir: str | os.PathLike[str] | None = None, *, quiet: bool = True,
                       distribution: Distribution | None = None) -> Path:
    """The edgeq-device wheel to install on boards: the very ``edgeq_device`` code this host runs.

    - ``edgeq_device`` imported from a source tree (an editable install or a checkout):
      ``pip wheel --no-deps`` of that tree (in a copy, so the tree stays clean), built at
      most once per host run and cached under ``~/.cache/edgeq/wheels/<version>-<source hash>/``.
    - ``edgeq_device`` imported from an installed distribution: that distribution's
      files are packed into a wheel, each checked against the sha256 its installed
      ``RECORD`` holds (see :func:`edgeq._device_wheel.wheel_from_distribution`).

    edgeq-device is never fetched from a package index by its name.

    Args:
        cache_dir: where wheels are kept (default ``$EDGEQ_CACHE`` or ``~/.cache/edgeq``).
        quiet: unused; kept for callers that pass it.
        distribution: pack this installed distribution instead of finding the one
            ``edgeq_device`` is imported from.

    Raises:
        DeployError: pip could not build the wheel from the source tree, or an installed
            file differs from its recorded hash, or there is no checked copy to send.
    """
    from edgeq_device import __version__ as device_version

    from edgeq.deployment.wheel import wheel_from_distribution

    cache = Path(cache_dir or os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser() / "wheels"
    src = None if distribution is not None else _device_source()
    if src is None:
        return wheel_from_distribution(distribution or _installed_device_distribution(), cache)
    key = f"{device_version}-{_source_key(src)}"
    with _WHEEL_LOCK:
        if key in _WHEELS and _WHEELS[key].is_file():
            return _WHEELS[key]
        out = cache / key
        found = sorted(out.glob("edgeq_device-*.whl")) if out.is_dir() else []
        if not found:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=out.parent))
            try:
                copy = tmp / "src"
                shutil.copytree(src, copy, ignore=shutil.ignore_patterns(
                    "build", "dist", "*.egg-info", "__pycache__", "*.pyc"))
                cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                       "-w", str(tmp / "whl"), str(copy)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:  # no setuptools here: let pip isolate the build
                    cmd.remove("--no-build-isolation")
                    res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise DeployError(f"cannot build the edgeq-device wheel: {tail[0]}", argument="device wheel",
                                      received=" ".join(cmd[3:5]), fix="check that pip works on this machine")
                whl = sorted((tmp / "whl").glob("edgeq_device-*.whl"))
                if not whl:
                    raise DeployError("pip made no edgeq-device wheel", argument="device wheel",
                                      received=str(tmp), fix="check the device/ source tree")
                try:
                    os.replace(tmp / "whl", out)
                except OSError:  # another process made it meanwhile
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            found = sorted(out.glob("edgeq_device-*.whl"))
        _WHEELS[key] = found[-1]
        return found[-1]


# --------------------------------------------------------------------------- one board


class _CancelledError(Exception):
    pass


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


class _BoardRun:
    """Runs the steps on one board, filling a BoardResult."""

    def __init__(self, board: Board, model: Path, model_sha: str, data: Path | None, data_sha: str | None,
                 wheel: Path, wheel_sha: str, want_bench: bool, want_eval: bool, extra_args: Sequence[str],
                 progress: ProgressFn, cancel: threading.Event) -> None:
        self.b = board
        self.model, self.model_sha = model, model_sha
        self.data, self.data_sha = data, data_sha
        self.wheel, self.wheel_sha = wheel, wheel_sha
        self.want_bench, self.want_eval = want_bench, want_eval
        self.extra_args = list(extra_args)
        self.progress = progress
        self.cancel = cancel
        self.result = BoardResult(board.label, board.describe())
        self.conn: SSHConnection | None = None

    def say(self, text: str) -> None:
        self.progress(self.b.label, text)

    def step(self, name: str, fn: Callable[[], str | None]) -> None:
        if self.cancel.is_set():
            raise _CancelledError()
        t0 = time.perf_counter()
        try:
            note = fn()
        finally:
            dt = time.perf_counter() - t0
            self.result.timings[name] = round(dt, 3)
        if note:
            self.result.actions[name] = note
        self.say(f"{name} {note + ' ' if note else ''}({dt:.1f} s)")

    def helper(self, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
        assert self.conn is not None
        cmd = " ".join([_remote_python(self.b.python), "-c", shlex.quote(_remote.SOURCE),
                        *(shlex.quote(a) for a in args)])
        res = self.conn.run(cmd, stdin=stdin, timeout=self.b.timeout)
        out = _parse_json_line(res.text)
        if res.returncode in (126, 127) and out is None:
            raise DeployError(f"no Python at {self.b.python!r} on {self.b.describe()}: "
                              f"{(res.err.strip().splitlines() or ['not found'])[-1]}",
                              argument=f"{self.b.label}.python", received=self.b.python,
                              fix="install python3 on the board, or set python = '/path/to/python3' for it")
        if out is not None and "error" in out:
            raise _RemoteFailureError(str(out["error"]), str(out.get("kind", "remote")), str(out.get("fix") or ""))
        if res.returncode != 0 or out is None:
            tail = (res.err.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
            raise _RemoteFailureError(f"the edgeq helper failed on the board: {tail}", "remote",
                                 "run the deploy again with the board reachable by ssh; report it if it persists")
        return out

    def run(self) -> BoardResult:
        t0 = time.perf_counter()
        r = self.result
        try:
            self.conn = SSHConnection(self.b.target())
            self.step("connect", self._connect)
            self.step("probe", self._probe)
            self.step("setup", self._setup)
            self.step("upload_model", lambda: self._upload(self.model, f"models/{self.model.name}",
                                                           self.model_sha, "file"))
            if self.data is not None and self.data_sha is not None:
                data = self.data
                self.step("upload_data", lambda: self._upload(data, f"data/{data.name}", self.data_sha or "",
                                                              "tar"))
            if self.want_bench:
                self.step("bench", self._bench)
            if self.want_eval:
                self.step("eval", self._eval)
            r.ok = True
        except _CancelledError:
            r.error, r.error_kind = "interrupted before this board finished", "interrupted"
        except SSHError as exc:
            r.error, r.error_kind = str(exc), exc.kind
        except _RemoteFailureError as exc:
            r.error = f"{exc.message}" + (f"; {exc.fix}" if exc.fix else "")
            r.error_kind = exc.kind
        except DeployError as exc:
            r.error = str(exc)
            r.error_kind = "no-python" if exc.argument and exc.argument.endswith(".python") else (
                exc.argument.rsplit(".", 1)[-1] if exc.argument and "." in exc.argument else "remote")
        finally:
            if self.conn is not None:
                self.conn.close()
            r.timings["total"] = round(time.perf_counter() - t0, 3)
        self.say("done" if r.ok else f"FAILED: {r.error}")
        return r

    # -- steps -----------------------------------------------------------------------
    def _connect(self) -> str | None:
        assert self.conn is not None
        self.conn.open()
        return None

    def _probe(self) -> str | None:
        info = self.helper("probe", self.b.workdir)
        self.probe = info
        self.workdir = str(info["workdir"])
        self.result.board = {k: info.get(k) for k in ("python", "python_version", "machine", "system",
                                                       "hostname", "workdir", "modules")}
        return f"python {info.get('python_version')} {info.get('machine')}"

    def _setup(self) -> str | None:
        rel = f"wheels/{self.wheel.name}"
        if self.probe.get("manifest", {}).get(rel) != self.wheel_sha:
            self.helper("recv", self.b.workdir, rel, self.wheel_sha, "file", stdin=self.wheel.read_bytes())
        extra = "tflite-runtime" if self.b.runtime == "tflite-runtime" else "litert"
        out = self.helper("setup", self.b.workdir, rel, self.wheel_sha, extra, "1" if self.b.offline else "0",
                          self.b.runtime or "")
        self.venv_python = str(out["python"])
        self.result.board["runtime"] = out.get("runtime")
        return f"venv {out.get('action')} ({out.get('install')}), runtime {_dig(out, 'runtime', 'name')}"

    def _upload(self, local: Path, rel: str, sha: str, kind: str) -> str:
        remote_path = f"{self.workdir}/{rel}"
        if self.probe.get("manifest", {}).get(rel) == sha:
            self.remote_paths[rel] = remote_path
            return "unchanged"
        payload = local.read_bytes() if kind == "file" else _tar_folder(local)
        self.helper("recv", self.b.workdir, rel, sha, kind, stdin=payload)
        self.remote_paths[rel] = remote_path
        return f"copied {len(payload) / 1e6:.2f} MB"

    remote_paths: dict[str, str]

    def _device_cmd(self, verb: str, *args: str) -> dict[str, Any]:
        assert self.conn is not None
        exe = str(Path(self.venv_python).parent / "edgeq-device")
        cmd = [self.venv_python, "-c", _remote.WATCH_SOURCE, exe, verb, *args, "--json", "-"]
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
            raise _RemoteFailureError(f"edgeq-device {verb} failed on the board: {reason}", kind,
                                 "run the same command on the board to see the whole message")
        return payload

    def _bench(self) -> str | None:
        payload = self._device_cmd("bench", self.remote_paths[f"models/{self.model.name}"])
        self.result.bench = payload
        p50 = _bench_p50_ms(payload)
        return None if p50 is None else f"p50 {p50:.3f} ms"

    def _eval(self) -> str | None:
        assert self.data is not None
        payload = self._device_cmd("eval", self.remote_paths[f"models/{self.model.name}"],
                                   self.remote_paths[f"data/{self.data.name}"])
        self.result.eval = payload
        top1 = _eval_top1(payload)
        return None if top1 is None else f"top-1 {top1:.4f}"


class _RemoteFailureError(Exception):
    def __init__(self, message: str, kind: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.kind, self.fix = message, kind, fix


# --------------------------------------------------------------------------- the fleet


_PRINT_LOCK = threading.Lock()


def _stderr_progress(label: str, text: str) -> None:
    with _PRINT_LOCK:
        print(f"[{label}] {text}", file=sys.stderr, flush=True)


def _as_boards(to: str | Board | Iterable[str | Board] | None, fleet: str | os.PathLike[str] | None,
               overrides: Mapping[str, Any]) -> list[Board]:
    boards: list[Board] = []
    if fleet is not None:
        boards += load_fleet(fleet)
    if to is not None:
        items = [to] if isinstance(to, (str, Board)) else list(to)
        for item in items:
            if isinstance(item, Board):
                boards.append(item)
            elif isinstance(item, str):
                boards.append(Board(item))
            else:
                raise InvalidArgumentError("a board must be a 'user@host' string or a Board", argument="to",
                                           received=item, fix="pass to='pi@raspberrypi.local'")
    if not boards:
        raise InvalidArgumentError("no board to deploy to", argument="to", received=to,
                                   fix="give to='user@host' (--to), or a devices.toml (--fleet)")
    out = []
    for b in boards:
        # A setting given for the whole run fills in what the board itself leaves at its default.
        changes = {k: v for k, v in overrides.items()
                   if v is not None and getattr(b, k) == getattr(Board(b.host), k)}
        out.append(replace(b, **changes) if changes else b)
    labels = [b.label for b in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InvalidArgumentError("two boards share a label", argument="to", received=dup,
                                   fix="give each board its own label (a devices.toml 'label' key)")
    return out


def deploy(
    model: str | os.PathLike[str],
    to: str | Board | Iterable[str | Board] | None = None,
    *,
    fleet: str | os.PathLike[str] | None = None,
    bench: bool = False,
    eval: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    runtime: str | None = None,
    python: str | None = None,
    parallel: int = 4,
    timeout: float | None = None,
    offline: bool | None = None,
    ssh_config: str | os.PathLike[str] | None = None,
    identity: str | os.PathLike[str] | None = None,
    workdir: str | None = None,
    db: str | os.PathLike[str] | None = None,
    store: bool = True,
    bench_args: Sequence[str] = (),
    progress: bool | ProgressFn = True,
) -> DeployReport:
    """Copy ``model`` to one or more boards over SSH, set them up, and optionally measure it there.

    Args:
        model: the ``.tflite`` file.
        to: ``"user@host"`` (``user@host:PORT``, a ssh-config alias), a :class:`Board`, or a list of them.
        fleet: a ``devices.toml`` naming boards (see :func:`load_fleet`); combined with ``to``.
        bench: run ``edgeq-device bench`` on each board.
        eval: an image folder (``<label>/*.png``) to evaluate on each board; copied when it changed.
        threads, runtime, python, timeout, offline, ssh_config, identity, workdir: settings for every board
            that does not set its own (a board's own setting in ``devices.toml`` wins).
        parallel: at most this many boards at once.
        db: the results store (default ``$EDGEQ_DB`` or ``~/.edgeq/results.db``).
        store: record bench/eval results (tagged with each board's label) when a board finishes.
        bench_args: extra arguments for ``edgeq-device bench`` (e.g. ``["--runs", "50"]``).
        progress: print one status line per step and board on stderr (or a callable(label, text)).

    Returns:
        A :class:`DeployReport`. A board that failed has ``ok=False`` and ``error``; this
        function raises only for bad arguments, never because one board failed.

    Raises:
        ModelFileError: ``model`` is missing or not a ``.tflite`` file.
        InvalidArgumentError: bad boards, fleet file, parallel, threads, runtime or eval folder.
        DeployError: the edgeq-device wheel cannot be built on this machine.
        KeyboardInterrupt: Ctrl-C; boards that had finished are stored, the others are not.
    """
    mpath = Path(model).expanduser()
    if not mpath.is_file():
        raise ModelFileError("no such model file", argument="model", received=str(model),
                             fix="give the path of a .tflite file")
    head = mpath.open("rb").read(8)
    if head[4:8] != b"TFL3":
        raise ModelFileError("not a .tflite flatbuffer (no TFL3 identifier)", argument="model",
                             received=str(model), fix="give a model written by edgeq convert or the TFLite converter")
    if not isinstance(parallel, int) or parallel < 1:
        raise InvalidArgumentError("parallel must be a positive integer", argument="parallel", received=parallel,
                                   fix="give e.g. parallel=4 (--parallel 4)")
    data: Path | None = None
    if eval is not None:
        data = Path(eval).expanduser()
        if not data.is_dir():
            raise InvalidArgumentError("the evaluation data must be an image folder", argument="eval",
                                       received=str(eval), fix="give a folder with one sub-folder of images per label")
    boards = _as_boards(to, fleet, {
        "threads": threads, "runtime": runtime, "python": python, "timeout": timeout, "offline": offline,
        "ssh_config": None if ssh_config is None else str(Path(ssh_config).expanduser()),
        "identity": None if identity is None else str(Path(identity).expanduser()),
        "workdir": workdir,
    })
    say: ProgressFn = progress if callable(progress) else (_stderr_progress if progress else (lambda a, b: None))

    t0 = time.perf_counter()
    wheel = build_device_wheel()
    wheel_sha = file_sha256(wheel)
    model_sha = file_sha256(mpath)
    data_sha = tree_sha256(data) if data is not None else None
    cancel = threading.Event()
    runs = [_BoardRun(b, mpath, model_sha, data, data_sha, wheel, wheel_sha, bench, data is not None,
                      bench_args, say, cancel) for b in boards]
    for r in runs:
        r.remote_paths = {}
    results: dict[str, BoardResult] = {}
    store_obj = None
    if store and (bench or data is not None):
        from edgeq.store.db import ResultsStore
        store_obj = ResultsStore(db)
    db_path = None if store_obj is None else str(getattr(store_obj, "path", db) or "")

    pool = ThreadPoolExecutor(max_workers=min(parallel, len(runs)), thread_name_prefix="edgeq-deploy")
    futures: dict[Future[BoardResult], _BoardRun] = {pool.submit(r.run): r for r in runs}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                run = futures[fut]
                res = fut.result()
                results[run.b.label] = res
                if res.ok and store_obj is not None:
                    _store(store_obj, res, mpath.stem, say)
    except KeyboardInterrupt:
        cancel.set()
        for fut in pending:
            fut.cancel()
        for run in runs:
            if run.conn is not None:
                run.conn.kill_running()
        pool.shutdown(wait=True, cancel_futures=True)
        if store_obj is not None:
            store_obj.close()
        raise
    pool.shutdown(wait=True)
    if store_obj is not None:
        store_obj.close()
    report = DeployReport(str(mpath), [results[b.label] for b in boards], round(time.perf_counter() - t0, 3),
                          db_path)
    return report


def _store(store_obj: Any, res: BoardResult, model_name: str, say: ProgressFn) -> None:
    for payload in (res.bench, res.eval):
        if payload is None:
            continue
        try:
            res.stored_ids.append(store_obj.add_device_result(payload, device=res.label, source="deploy",
                                                              model_name=model_name))
        except Exception as exc:  # a result the store rejects must not lose the others
            res.ok = False
            res.error = f"could not store the result: {exc}"
            res.error_kind = "store"
            say(res.label, f"FAILED: {res.error}")
