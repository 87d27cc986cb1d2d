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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.task_inputs import load_reference, load_samples

from edgeq.deployment.board_run import BoardRun, ProgressFn
from edgeq.deployment.fleet import Board, boards_for
from edgeq.deployment.payload import file_sha256, tree_sha256
from edgeq.deployment.results import BoardResult, DeployReport
from edgeq.deployment.wheel import build_device_wheel
from edgeq.deprecation import renamed_arguments
from edgeq.errors import InvalidArgumentError, ModelFileError
from edgeq.store.db import ResultsStore
from edgeq.store.resolve import StoreLike, resolve_store

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
    parallel: int = 4,
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
        parallel: at most this many boards at once.
        store: where bench/eval/profile results are recorded (tagged with each board's label) when a board
            finishes: True for the default store (``$EDGEQ_DB`` or ``~/.edgeq/results.db``), a
            :class:`~edgeq.ResultsStore` or a database path, False for none.
        db: the old way to give the store's path (``store=PATH``), accepted for one release.
        bench_args: extra arguments for ``edgeq-device bench`` (e.g. ``["--runs", "50"]``).
        progress: print one status line per step and board on stderr (or a callable(label, text)).
        profile: run ``edgeq-device profile`` on each board: every operator timed alone beside the
            whole model (``BoardResult.profile``; stored as a measurement of kind ``"profile"``).
        inputs, reference: measure each board's fidelity to the float Keras model: ``reference`` an
            ``.npz`` of expected outputs, or the folder ``edgeq compare`` wrote (its ``reference.npz``,
            and its ``inputs.npz`` unless ``inputs`` is given); ``inputs`` the ``.npz``/``.npy`` they
            answer. Both are checked against the model here, copied when they changed, and the board
            runs ``edgeq-device eval MODEL --inputs --reference`` (``BoardResult.fidelity``; stored as an
            eval measurement of task ``fidelity`` with its SQNR).

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
    if evaluation is not None:
        data = Path(evaluation).expanduser()
        if not data.is_dir():
            raise InvalidArgumentError("the evaluation data must be an image folder", argument="evaluation",
                                       received=str(evaluation), fix="give a folder with one sub-folder of images per label")
    fidelity = _fidelity_files(mpath, inputs, reference)
    boards = boards_for(to, fleet, {
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
    runs = [BoardRun(b, mpath, model_sha, data, data_sha, wheel, wheel_sha, bench, data is not None,
                     bench_args, say, cancel, want_profile=profile, fidelity=fidelity) for b in boards]
    results: dict[str, BoardResult] = {}
    if db is not None:
        warnings.warn("deploy(db=...) is replaced by store=PATH; db= goes in the next release",
                      DeprecationWarning, stacklevel=2)
        if store is True:
            store = db
    measures = bench or profile or data is not None or fidelity is not None
    store_obj, opened = resolve_store(store) if measures else (None, False)
    db_path = None if store_obj is None else str(store_obj.path)

    pool = ThreadPoolExecutor(max_workers=min(parallel, len(runs)), thread_name_prefix="edgeq-deploy")
    futures: dict[Future[BoardResult], BoardRun] = {pool.submit(r.run): r for r in runs}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                run = futures[fut]
                res = fut.result()
                if res.ok and store_obj is not None:
                    res = _store(store_obj, res, mpath.stem, say)
                results[run.b.label] = res
    except KeyboardInterrupt:
        cancel.set()
        for fut in pending:
            fut.cancel()
        for run in runs:
            run.kill_running()
        pool.shutdown(wait=True, cancel_futures=True)
        if store_obj is not None and opened:
            store_obj.close()
        raise
    pool.shutdown(wait=True)
    if store_obj is not None and opened:
        store_obj.close()
    return DeployReport(str(mpath), tuple(results[b.label] for b in boards), round(time.perf_counter() - t0, 3),
                        db_path)


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


def _store(store_obj: ResultsStore, res: BoardResult, model_name: str, say: ProgressFn) -> BoardResult:
    """Record a finished board's bench/eval/profile payloads under its label; the result with their row ids."""
    ids: list[int] = []
    for payload in (res.bench, res.eval, res.profile, res.fidelity):
        if payload is None:
            continue
        try:
            ids.append(store_obj.add_device_result(payload, device=res.label, source="deploy",
                                                   model_name=model_name))
        except Exception as exc:  # a result the store rejects must not lose the others
            error = f"could not store the result: {exc}"
            say(res.label, f"FAILED: {error}")
            return replace(res, ok=False, error=error, error_kind="store", stored_ids=tuple(ids))
    return replace(res, stored_ids=tuple(ids))
