"""Deploy a ``.tflite`` model to boards over SSH and measure it there: :func:`deploy`.

``edgeq.deploy("model.tflite", to="pi@raspberrypi.local", bench=True)`` does, for
each board, concurrently (at most ``parallel`` at once):

1. **connect** with the system ``ssh`` (the user's ``~/.ssh/config``, keys,
   agent, ``ProxyJump`` and ``known_hosts`` apply); one control master per board
   carries every later step; ``BatchMode=yes``, so nothing prompts.
2. **probe** the board's Python: version, machine, which modules it has.
3. **setup**: the edgeq-device wheel, the very ``edgeq_device`` code this host
   runs (see :func:`~edgeq.deployment.wheel.build_device_wheel`: from the source tree of an editable
   install, or packed from the installed distribution's files checked against its
   ``RECORD``; never fetched from an index by name), goes into a
   venv under the board's ``~/.edgeq-device/``, made with
   ``--system-site-packages`` so Debian's numpy serves on a board without
   internet. When the board already has numpy, pillow, flatbuffers, click and a
   TFLite runtime it is installed with ``--no-deps``; otherwise pip resolves
   them. A venv with the same wheel is reused as it is.
4. **upload** the model (and with ``eval=`` the dataset folder) only when its
   sha256 differs from the board's manifest; files land atomically.
5. **bench** / **eval** / **profile** with ``edgeq-device ... --json -``.

Each board runs as a :class:`~edgeq.deployment.board_run.BoardRun` and ends with a
:class:`~edgeq.deployment.results.BoardResult`; a board that cannot be reached,
rejects the key, has no Python or no runtime, or times out fails alone with a
clear reason while the others finish. Results go to the results store only
when a board has finished, tagged with the board's label.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.task_inputs import load_reference, load_samples

from edgeq.deployment.board_run import BoardRun, ProgressFn
from edgeq.deployment.fleet import Board, boards_for
from edgeq.deployment.fleetrun import MANY_BOARDS, FleetProgress, run_boards
from edgeq.deployment.inventory import inventory_boards
from edgeq.deployment.payload import file_sha256, tree_sha256
from edgeq.deployment.results import BoardResult, DeployReport
from edgeq.deployment.resume import board_settings, resume_plan
from edgeq.deployment.wheel import build_device_wheel
from edgeq.deprecation import renamed_arguments
from edgeq.errors import InvalidArgumentError, ModelFileError
from edgeq.store.db import ResultsStore
from edgeq.store.resolve import StoreLike, resolve_store
from edgeq.store.runs import new_run_id

__all__ = ["deploy"]

_PRINT_LOCK = threading.Lock()


def _stderr_progress(label: str, text: str) -> None:
    with _PRINT_LOCK:
        print(f"[{label}] {text}", file=sys.stderr, flush=True)


@renamed_arguments(eval="evaluation")
def deploy(
    model: str | os.PathLike[str],
    to: str | Board | Iterable[str | Board] | None = None,
    *,
    fleet: str | os.PathLike[str] | None = None,
    bench: bool = False,
    evaluation: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    runtime: str | None = None,
    python: str | None = None,
    parallel: int | None = None,
    timeout: float | None = None,
    offline: bool | None = None,
    ssh_config: str | os.PathLike[str] | None = None,
    identity: str | os.PathLike[str] | None = None,
    workdir: str | None = None,
    store: StoreLike = True,
    db: str | os.PathLike[str] | None = None,
    bench_args: Sequence[str] = (),
    progress: bool | ProgressFn = True,
    profile: bool = False,
    inputs: str | os.PathLike[str] | None = None,
    reference: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
    limit: str | None = None,
    forks: int = 5,
    retries: int = 1,
    resume: str | None = None,
) -> DeployReport:
    """Copy ``model`` to one or more boards over SSH, set them up, and optionally measure it there.

    Args:
        model: the ``.tflite`` file.
        to: ``"user@host"`` (``user@host:PORT``, a ssh-config alias), a :class:`Board`, or a list of them.
        fleet: a ``devices.toml`` naming boards (see :func:`load_fleet`); combined with ``to``.
        bench: run ``edgeq-device bench`` on each board.
        evaluation: an image folder (``<label>/*.png``) to evaluate on each board; copied when it
            changed (``eval=`` is its old name, accepted for one release).
        threads, runtime, python, timeout, offline, ssh_config, identity, workdir: settings for every board
            that does not set its own (a board's own setting in ``devices.toml`` wins).
        inventory: an Ansible inventory (file or folder; see :func:`~edgeq.deployment.inventory.load_inventory`):
            its hosts are boards, their ``ansible_*``/``edgeq_*`` variables the boards' settings, their
            groups the boards' labels in the store and reports. Combined with ``fleet`` and ``to``.
        limit: an Ansible host pattern choosing the inventory's boards (``kitchen``, ``pis:!pi-3``,
            ``pis:&lab``, ``pi-*``).
        forks: at most this many boards (SSH connections) at once, as Ansible's ``forks`` (default 5).
        parallel: the old name of ``forks``.
        retries: run a board again (at most this many times) when its connection drops in the middle
            of its run or a copy arrives cut short; its steps skip what already arrived.
        resume: a run id (``DeployReport.run_id``, ``edgeq deploy`` prints it): run only the boards of
            that run that did not end ``ok``, under the same run id. Their settings come from the store
            unless boards are given (``to``/``fleet``/``inventory``); the model must be the run's.
        store: where the run (its id, each board's state) and the bench/eval/profile results (tagged with
            each board's label) are recorded as each board finishes: True for the default store
            (``$EDGEQ_DB`` or ``~/.edgeq/results.db``), a :class:`~edgeq.ResultsStore`, a database path or
            a ``postgresql://`` URL, False for none.
        db: the old way to give the store's path (``store=PATH``), accepted for one release.
        bench_args: extra arguments for ``edgeq-device bench`` (e.g. ``["--runs", "50"]``).
        progress: print one status line per step and board on stderr (or a callable(label, text)); with
            more than 8 boards, counts of finished/running/failed boards (label ``"fleet"``) and only the
            failing boards' lines.
        profile: run ``edgeq-device profile`` on each board: every operator timed alone beside the
            whole model (``BoardResult.profile``; stored as a measurement of kind ``"profile"``).
        inputs, reference: measure each board's fidelity to the float Keras model: ``reference`` an
            ``.npz`` of expected outputs, or the folder ``edgeq compare`` wrote (its ``reference.npz``,
            and its ``inputs.npz`` unless ``inputs`` is given); ``inputs`` the ``.npz``/``.npy`` they
            answer. Both are checked against the model here, copied when they changed, and the board
            runs ``edgeq-device eval MODEL --inputs --reference`` (``BoardResult.fidelity``; stored as an
            eval measurement of task ``fidelity`` with its SQNR).

    Returns:
        A :class:`DeployReport` with every board in one state (``ok``, ``failed`` with its step and
        message, ``unreachable``, ``timed-out``, ``interrupted``: ``BoardResult.state``, ``counts``) and
        its ``run_id``. This function raises only for bad arguments, never because one board failed.

    Raises:
        ModelFileError: ``model`` is missing or not a ``.tflite`` file.
        InvalidArgumentError: bad boards, fleet file, parallel, threads, runtime or eval folder.
        DeployError: the edgeq-device wheel cannot be built on this machine.
        KeyboardInterrupt: Ctrl-C; boards that had finished are stored, the others are recorded
            ``interrupted`` (``resume=`` the run id reruns them).
    """
    mpath = Path(model).expanduser()
    if not mpath.is_file():
        raise ModelFileError("no such model file", argument="model", received=str(model),
                             fix="give the path of a .tflite file")
    head = mpath.open("rb").read(8)
    if head[4:8] != b"TFL3":
        raise ModelFileError("not a .tflite flatbuffer (no TFL3 identifier)", argument="model",
                             received=str(model), fix="give a model written by edgeq convert or the TFLite converter")
    if parallel is not None:
        forks = parallel
    for name, value, low in (("forks", forks, 1), ("retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgumentError(f"{name} must be an integer >= {low}", argument=name, received=value,
                                       fix=f"give e.g. {name}={5 if name == 'forks' else 1} (--{name})"
                                           + (" (parallel= is its old name)" if name == "forks" else ""))
    data: Path | None = None
    if evaluation is not None:
        data = Path(evaluation).expanduser()
        if not data.is_dir():
            raise InvalidArgumentError("the evaluation data must be an image folder", argument="evaluation",
                                       received=str(evaluation), fix="give a folder with one sub-folder of images per label")
    fidelity = _fidelity_files(mpath, inputs, reference)
    if limit is not None and inventory is None:
        raise InvalidArgumentError("limit selects hosts of an inventory", argument="limit", received=limit,
                                   fix="also give inventory= (--inventory hosts.yml)")
    if db is not None:
        warnings.warn("deploy(db=...) is replaced by store=PATH; db= goes in the next release",
                      DeprecationWarning, stacklevel=2)
        if store is True:
            store = db
    if resume is not None and (store is False or store is None):
        raise InvalidArgumentError("resume reads the run from the results store", argument="resume",
                                   received=resume, fix="leave the store on (drop --no-store)")
    overrides = {
        "threads": threads, "runtime": runtime, "python": python, "timeout": timeout, "offline": offline,
        "ssh_config": None if ssh_config is None else str(Path(ssh_config).expanduser()),
        "identity": None if identity is None else str(Path(identity).expanduser()),
        "workdir": workdir,
    }
    given = to is not None or fleet is not None or inventory is not None
    if not given and resume is None:
        boards_for(None, None, overrides)  # raises: no board
    boards = boards_for(to, fleet, overrides, inventory_boards(inventory, limit) if inventory is not None else ()) \
        if given else []
    say: ProgressFn = progress if callable(progress) else (_stderr_progress if progress else (lambda a, b: None))

    t0 = time.perf_counter()
    model_sha = file_sha256(mpath)
    store_obj, opened = resolve_store(store)
    try:
        finished: dict[str, BoardResult] = {}
        if resume is not None:
            assert store_obj is not None
            boards, finished = resume_plan(store_obj, resume, model_sha, boards, given)
            run_id = resume
        else:
            run_id = new_run_id()
        if store_obj is not None:
            store_obj.start_deploy_run(run_id, model_sha256=model_sha, model_name=mpath.stem, settings={
                "model": str(mpath), "bench": bench, "profile": profile, "evaluation": str(data) if data else None,
                "bench_args": list(bench_args), "forks": forks, "retries": retries,
                "inventory": str(inventory) if inventory else None, "limit": limit})
            for b in boards:  # "pending" until it finishes: a crash of this process leaves them to --resume
                store_obj.record_deploy_board(run_id, b.label, host=b.describe(), state="pending", error_kind=None,
                                              step=None, error=None, groups=b.groups, board=board_settings(b),
                                              stored_ids=(), attempts=0)
        many = len(boards) > MANY_BOARDS
        counts = FleetProgress(len(boards), say) if many else None
        board_say: ProgressFn = counts.board_line if counts is not None else say
        wheel = build_device_wheel() if boards else None
        wheel_sha = file_sha256(wheel) if wheel else ""
        data_sha = tree_sha256(data) if data is not None else None
        cancel = threading.Event()

        def make_run(b: Board) -> BoardRun:
            assert wheel is not None
            return BoardRun(b, mpath, model_sha, data, data_sha, wheel, wheel_sha, bench, data is not None,
                            bench_args, board_say, cancel, want_profile=profile, fidelity=fidelity)

        def on_finished(res: BoardResult) -> BoardResult:
            if res.ok and store_obj is not None:
                res = _store(store_obj, res, mpath.stem, say, run_id)
            if store_obj is not None:
                board = next(b for b in boards if b.label == res.label)
                store_obj.record_deploy_board(run_id, res.label, host=res.host, state=res.state,
                                              error_kind=res.error_kind, step=res.step, error=res.error,
                                              groups=res.groups, board=board_settings(board),
                                              stored_ids=res.stored_ids, attempts=res.attempts)
            return res

        results = run_boards(boards, make_run, forks=forks, retries=retries, cancel=cancel,
                             on_finished=on_finished, say=say, counts=counts)
    finally:
        if store_obj is not None and opened:
            store_obj.close()
    order = list(finished) + [b.label for b in boards]
    every = {**finished, **results}
    return DeployReport(str(mpath), tuple(every[label] for label in order), round(time.perf_counter() - t0, 3),
                        None if store_obj is None else store_obj.location, run_id)


def _fidelity_files(model: Path, inputs: str | os.PathLike[str] | None,
                    reference: str | os.PathLike[str] | None) -> tuple[Path, str, Path, str] | None:
    """The inputs and reference to ship, checked against the model here (keys, shapes, sample counts)."""
    if reference is None:
        if inputs is not None:
            raise InvalidArgumentError("inputs without a reference measure nothing", argument="inputs",
                                       received=str(inputs), fix="also give --reference (reference=)")
        return None
    ref = Path(reference).expanduser()
    if ref.is_dir():  # a compare results folder
        x = Path(inputs).expanduser() if inputs is not None else ref / "inputs.npz"
        ref = ref / "reference.npz"
    elif inputs is None:
        raise InvalidArgumentError("a reference needs the inputs it answers", argument="inputs", received=None,
                                   fix="give --inputs X.npz, or --reference the folder edgeq compare wrote")
    else:
        x = Path(inputs).expanduser()
    for path, arg in ((x, "inputs"), (ref, "reference")):
        if not path.is_file() or path.suffix.lower() not in (".npz", ".npy"):
            raise InvalidArgumentError("no such .npz/.npy file", argument=arg, received=str(path),
                                       fix="give the inputs.npz and reference.npz that edgeq compare wrote")
    flat = read_flat_model(model.read_bytes())
    samples = load_samples(x, flat, Preprocess(), argument="inputs")
    load_reference(ref, flat, samples.n)
    return x, file_sha256(x), ref, file_sha256(ref)


def _store(store_obj: ResultsStore, res: BoardResult, model_name: str, say: ProgressFn,
           run_id: str | None = None) -> BoardResult:
    """Record a finished board's bench/eval/profile payloads under its label and groups; the result with their
    row ids."""
    ids: list[int] = []
    for payload in (res.bench, res.eval, res.profile, res.fidelity):
        if payload is None:
            continue
        try:
            ids.append(store_obj.add_device_result(payload, device=res.label, source="deploy",
                                                   model_name=model_name, run_id=run_id, groups=res.groups))
        except Exception as exc:  # a result the store rejects must not lose the others
            error = f"could not store the result: {exc}"
            say(res.label, f"FAILED: {error}")
            return replace(res, ok=False, error=error, error_kind="store", stored_ids=tuple(ids))
    return replace(res, stored_ids=tuple(ids))
