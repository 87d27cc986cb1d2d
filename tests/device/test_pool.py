"""The evaluation pool in worker processes: the plain loop's results, its errors, nothing left behind."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgeq_device import DataError, InferenceError, evaluate, list_image_folder, predict
from edgeq_device.errors import InvalidArgumentError
from edgeq_device.run.pool_worker import start_method
from test_evaluate import MNIST_PRE, reference_outputs

START_METHODS = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _no_new_shm(before: set[str], wait_s: float = 10.0) -> bool:
    """True once /dev/shm holds nothing that was not there ``before``.

    Other processes (another pytest worker's pool) create and remove their own semaphores
    meanwhile: a name this pool leaked never goes, theirs do, so wait for a moment without them.
    """
    import gc
    import time

    gc.collect()
    deadline = time.monotonic() + wait_s
    while not _shm() <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("mode", ["int8_io_uint8", "float32"])
def test_pooled_outputs_equal_the_plain_loop(models, small_test_dir, mode, workers):
    ref_out, ref_labels, ref_files = reference_outputs(models[mode], small_test_dir)
    out, labels = predict(models[mode], list_image_folder(small_test_dir), MNIST_PRE, workers=workers)
    assert out.shape == ref_out.shape == (200, 10)
    assert np.array_equal(labels, ref_labels)
    assert np.array_equal(out.argmax(axis=1), ref_out.argmax(axis=1))
    np.testing.assert_allclose(out, ref_out, atol=0 if mode.startswith("int8") else 1e-5, rtol=0)
    r = evaluate(models[mode], small_test_dir, workers=workers, keep_predictions=True)
    assert r.workers == workers and r.files == tuple(str(f) for f in ref_files)
    assert r.predictions == tuple(int(p) for p in ref_out.argmax(axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("method", START_METHODS)
def test_every_start_method_gives_the_same_outputs(models, small_test_dir, method, monkeypatch):
    listing = list_image_folder(small_test_dir)
    one, _ = predict(models["int8"], listing, MNIST_PRE, workers=1)
    monkeypatch.setenv("EDGEQ_POOL_START", method)
    assert start_method() == method
    before = _shm()
    seen: list[tuple[int, int]] = []
    two, _ = predict(models["int8"], listing, MNIST_PRE, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert np.array_equal(one, two)
    assert seen[-1] == (200, 200) and all(t == 200 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert not multiprocessing.active_children() and _no_new_shm(before)


@pytest.mark.skipif(sys.platform != "linux", reason="fork is chosen on Linux only")
def test_fork_only_for_a_single_threaded_caller_with_one_thread_interpreters():
    code = ("import threading, time\n"
            "from edgeq_device.run.pool_worker import start_method\n"
            "a, b = start_method(1), start_method(2)\n"
            "threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
            "print(a, b, start_method(1))\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGEQ_POOL_START"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["fork", "forkserver", "forkserver"]


def test_tensorflow_in_the_caller_means_no_fork(monkeypatch):
    monkeypatch.delenv("EDGEQ_POOL_START", raising=False)
    import tensorflow  # noqa: F401 - loaded by the session's model fixtures already

    assert start_method() in ("forkserver", "spawn")
    monkeypatch.setenv("EDGEQ_POOL_START", "threads")
    with pytest.raises(InvalidArgumentError, match="EDGEQ_POOL_START"):
        start_method()


@pytest.mark.parametrize("workers", [2, 4])
def test_unreadable_files_skipped_as_in_the_plain_loop(models, small_test_dir, tmp_path, workers):
    data = tmp_path / "data"
    shutil.copytree(small_test_dir, data)
    bad = [data / "0" / "aaa_broken.png", data / "4" / "broken.png", data / "9" / "zzz_broken.png"]
    for b in bad:
        b.write_bytes(b"\x89PNG not really")
    clean, clean_labels = predict(models["int8"], small_test_dir, MNIST_PRE, workers=1)
    skipped: list[Path] = []
    out, labels = predict(models["int8"], data, MNIST_PRE, workers=workers, skip_unreadable=True, skipped=skipped)
    assert skipped == bad
    assert np.array_equal(out, clean) and np.array_equal(labels, clean_labels)
    with pytest.raises(DataError, match=r"broken\.png.*--skip-unreadable"):
        predict(models["int8"], data, MNIST_PRE, workers=workers)
    assert not multiprocessing.active_children()


def test_no_readable_image_at_all(models, tmp_path):
    for d in range(3):
        (tmp_path / str(d)).mkdir()
        for i in range(5):
            (tmp_path / str(d) / f"{i}.png").write_bytes(b"not an image")
    skipped: list[Path] = []
    with pytest.raises(DataError, match="none of the 15 image files could be read"):
        predict(models["int8"], tmp_path, MNIST_PRE, workers=2, skip_unreadable=True, skipped=skipped)
    assert len(skipped) == 15


def test_a_worker_that_dies_is_an_error(models, small_test_dir):
    killed: list[int] = []

    def kill_a_worker(done: int, total: int) -> None:
        for child in multiprocessing.active_children():
            if child.name.startswith("edgeq-eval") and not killed:
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    with pytest.raises(InferenceError, match=r"worker process stopped unexpectedly \(exit code -9"):
        predict(models["int8"], small_test_dir, MNIST_PRE, workers=2, progress=kill_a_worker)
    assert killed and not multiprocessing.active_children()


def test_interrupt_stops_the_workers(models, small_test_dir):
    before = _shm()

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict(models["int8"], small_test_dir, MNIST_PRE, workers=4, progress=interrupt)
    assert not multiprocessing.active_children() and _no_new_shm(before)


def test_wrong_input_size_is_found_before_workers_start(models, small_test_dir):
    from edgeq_device import Preprocess

    with pytest.raises(DataError, match=r"preprocessing gives samples of shape \(32, 32, 1\)"):
        predict(models["int8"], small_test_dir, Preprocess(size=(32, 32), color="l"), workers=2)
    assert not multiprocessing.active_children()
