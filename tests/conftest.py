"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from postgres_server import postgres_server  # noqa: F401  (a session fixture: the real PostgreSQL server)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EDGEQ_PROGRESS", "0")

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "datasets" / "mnist5k"
SHAPES = REPO / "datasets" / "shapes"


# --- CI=true: no silent skips ------------------------------------------------------------------
# The suite installs what it needs itself (the emulated Pi, sshd, Chromium, the pinned packages):
# under CI=true (.ci/run) a test skipped for want of one of them fails, with the skip's reason.
# Only what cannot be had on this machine stays a skip, and the summary lists it (-ra).
CANNOT_BE_HAD_HERE = re.compile(
    r"Edge TPU|edgetpu"                      # a real Edge TPU, its runtime and its compiler (x86 Linux only)
    r"|POSIX permissions|fork is chosen on Linux only"  # another operating system's tests
    r"|with load average",                   # a timing comparison on a machine too busy to time
    re.IGNORECASE)


def in_ci() -> bool:
    """True under CI=true (also 1/yes), as CI services and .ci/run set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true, turn a skip for want of something the suite installs into a failure."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail") or not in_ci():
        return
    reason = str(rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr).removeprefix("Skipped: ")
    if CANNOT_BE_HAD_HERE.search(reason):
        return
    rep.outcome = "failed"
    rep.longrepr = (f"skipped under CI=true, where the suite installs what it needs itself: {reason} "
                    "(tests/conftest.py CANNOT_BE_HAD_HERE lists the skips that stay)")


# The host files that take longest (measured with --durations=0 in `make test`, 2 workers), longest first;
# notebook 04 last: it loads the models test_shapes_models.py trains, rather than wait for them.
LONG_FILES = ("tests/edgeq/quantize/test_qat.py", "tests/edgeq/quantize/test_sparsity.py",
              "tests/edgeq/sweeps/test_sweep_ray.py", "tests/edgeq/quantize/test_ranges.py",
              "tests/edgeq/quantize/test_sensitivity.py", "tests/ssh/test_deploy.py",
              "tests/edgeq/quantize/test_int4.py", "tests/edgeq/quantize/test_mixed.py",
              "tests/examples/test_shapes_models.py", "tests/edgeq/quantize/test_budget_qat.py",
              "tests/edgeq/test_notebook_05.py", "tests/ssh/test_notebook_03.py", "tests/ssh/test_fleet_faults.py",
              "tests/edgeq/targets/test_mcu_models.py", "tests/edgeq/measure/test_profile_compare.py",
              "tests/edgeq/test_notebook_06.py", "tests/edgeq/test_notebook_07.py", "tests/edgeq/test_notebook_02.py",
              "tests/test_notebook_01.py", "tests/examples/test_notebook_04.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first (:data:`LONG_FILES`), then the rest in their order; tests within a file keep theirs.

    ``make test``'s workers take whole files in this order (``--dist loadfile``): the long files
    start early and the short ones fill the end, so the workers finish together. Only the order
    changes: a file missing from the list runs as before.
    """
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.nodeid.split("::")[0], len(rank)), order[item.nodeid]))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return REPO


@pytest.fixture(scope="session")
def mnist_train() -> Path:
    """The bundled MNIST digits, training split (4,000 images in class folders)."""
    return MNIST / "train"


@pytest.fixture(scope="session")
def mnist_test() -> Path:
    """The bundled MNIST digits, test split (1,000 images in class folders)."""
    return MNIST / "test"


@pytest.fixture(scope="session")
def digits_train_arrays(mnist_train: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 4,000 training digits as arrays ``([N, 28, 28, 1] float32 in [0, 1], [N] int64)``, seeded order."""
    from fixtures.models import load_digits

    return load_digits(mnist_train)


@pytest.fixture(scope="session")
def digits_test_arrays(mnist_test: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 test digits as arrays, as :func:`digits_train_arrays`."""
    from fixtures.models import load_digits

    return load_digits(mnist_test)


# The shapes trainers of examples/ keep what they train under EDGEQ_EXAMPLES_CACHE: under `make test`
# a folder of the run's cache, so notebook 04's kernel loads the detector and segmenter the fixtures
# below trained (or trains them for the others), instead of training them once more.
if os.environ.get("EDGEQ_TEST_CACHE"):
    os.environ.setdefault("EDGEQ_EXAMPLES_CACHE", str(Path(os.environ["EDGEQ_TEST_CACHE"]) / "examples"))


def shared_keras(name: str, train: Any, sources: tuple[str, ...]) -> Any:
    """``train()``'s Keras model, trained once per ``make test`` run.

    Under ``EDGEQ_TEST_CACHE`` the first process (a host worker or the emulated Pi's session) trains
    it and saves it as ``.keras`` under a key of ``sources`` (the code that trains it); the others
    wait on the lock and load it: the same layers and weights, without training again. Without the
    variable each session trains its own.
    """
    shared = os.environ.get("EDGEQ_TEST_CACHE")
    if not shared:
        return train()
    from keep import keep_trained  # examples/keep.py

    return keep_trained(Path(shared) / f"keras-{name}-{source_key(sources)}", name, train)


@pytest.fixture(scope="session")
def digits_cnn(digits_train_arrays: tuple[np.ndarray, np.ndarray]):  # type: ignore[no-untyped-def]
    """The seeded Keras 3 digits CNN (``digits``, layers ``hidden`` and ``classifier``), trained once per run.

    Shared: a test must not train it further or change its weights (clone it for that).
    """
    from fixtures.models import train_digits_cnn

    return shared_keras("digits_cnn", lambda: train_digits_cnn(*digits_train_arrays),
                        ("tests/fixtures/models.py",))


@pytest.fixture(scope="session")
def resnet8(digits_train_arrays: tuple[np.ndarray, np.ndarray]) -> Any:
    """A function giving ``fixtures.models.train_resnet8`` on the training digits (its defaults), trained
    once per run; each call gives a model of its own (loaded from the run's cache), the caller's to change."""
    from fixtures.models import train_resnet8

    return lambda: shared_keras("resnet8", lambda: train_resnet8(*digits_train_arrays), ("tests/fixtures/models.py",))


@pytest.fixture(scope="session")
def demo_cnn(mnist_train: Path):  # type: ignore[no-untyped-def]
    """The demo's CNN (examples/demo.py ``train_cnn``, ``mnist_cnn``) trained one epoch, once per session.

    Bigger than :func:`digits_cnn` (a 64-unit dense layer): its int8 file is over 3x smaller than
    its float32 one, as a user's model would be. Shared: a test must not change it.
    """
    from demo import train_cnn

    return shared_keras("demo_cnn", lambda: train_cnn(mnist_train, epochs=1, verbose=0), ("examples/demo.py",))


@pytest.fixture(scope="session")
def digits_plain_tflite(digits_cnn, digits_train_arrays, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
                        ) -> dict[str, Path]:
    """:func:`digits_cnn` converted with a plain TFLiteConverter in every mode of ``fixtures.models.PLAIN_MODES``."""
    from fixtures.models import plain_tflite_files

    return plain_tflite_files(digits_cnn, digits_train_arrays[0], tmp_path_factory.mktemp("plain-tflite"))


@pytest.fixture(scope="session")
def pm1_models(digits_cnn, digits_train_arrays: tuple[np.ndarray, np.ndarray],  # type: ignore[no-untyped-def]
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN behind a [-1, 1] input, plain-converted: ``float``, ``uint8`` and ``int8`` I/O, no metadata."""
    from fixtures.elsewhere import minus_one_to_one_files

    return minus_one_to_one_files(digits_cnn, digits_train_arrays[0], tmp_path_factory.mktemp("pm1"))


@pytest.fixture(scope="session")
def digits_edgeq_tflite(digits_cnn, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """:func:`digits_cnn` converted by edgeq.convert as float32, int8 and int8-io (int8 I/O), metadata inside."""
    from fixtures.models import edgeq_tflite_files

    return edgeq_tflite_files(digits_cnn, tmp_path_factory.mktemp("edgeq-tflite"), ("float32", "int8", "int8-io"))


def _execute_notebook(name: str, timeout: int = 600) -> list[dict]:
    """Run notebooks/<name> top to bottom in a kernel of this Python; return its code outputs.

    jupyter_client starts the "python3" kernel with the Python running the tests
    (sys.executable), so the notebook sees the same packages. Fails on any cell error.
    """
    import nbclient
    import nbformat

    path = REPO / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    return outputs


@pytest.fixture
def execute_notebook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The notebook runner, with progress bars off and TensorFlow's logging quiet.

    A notebook writes its files under ``$EDGEQ_NOTEBOOK_OUT`` (default ``out/``): here the
    test's ``tmp_path / "notebooks"``, so no run leaves files for the next.
    """
    monkeypatch.setenv("EDGEQ_NOTEBOOK_OUT", str(tmp_path / "notebooks"))
    monkeypatch.setenv("EDGEQ_PROGRESS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return _execute_notebook


# A line only the installed copy of edgeq_device has: tells its bytes from the source tree's.
INSTALLED_MARK = "# edgeq-device installed by the test fixture, not the source tree\n"


@pytest.fixture(scope="session")
def installed_device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgeq-device installed non-editable (``pip install --no-deps --target DIR``) from a copy of ./device.

    The copy's ``__init__.py`` ends with :data:`INSTALLED_MARK`, so the installed files differ from
    the source tree's and a test can tell which of the two reached a board. Returns DIR, which holds
    ``edgeq_device/`` and ``edgeq_device-*.dist-info`` (with its RECORD).
    """
    import shutil
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("installed-device")
    src = tmp / "src"
    shutil.copytree(REPO / "device", src, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info",
                                                                          "__pycache__", "*.pyc"))
    init = src / "edgeq_device" / "__init__.py"
    init.write_text(init.read_text() + INSTALLED_MARK)
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--target", str(target), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:  # no setuptools in this venv: let pip isolate the build
        cmd.remove("--no-build-isolation")
        res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return target


# --- the shapes detector and segmenter (examples/shapes.py), once per session, and their .tflite files ---
# `make test` sets EDGEQ_TEST_CACHE to a folder of its own for the run: the host's workers and the
# emulated Pi's session then train and convert each model once between them (the first takes a
# lock and writes the files; the others wait and read them). Without it, each session trains its own.
# The files sit under a key, the hash of the sources that train and convert them (source_key), so a
# cache kept across runs never hands out models made by other code.
@pytest.fixture(scope="session")
def shapes_detector() -> Any:
    """The grid detector of examples/shapes.py, trained with its defaults (seeded). Shared: do not change it."""
    from shapes import train_detector

    return train_detector()  # kept under EDGEQ_EXAMPLES_CACHE (set from EDGEQ_TEST_CACHE above)


@pytest.fixture(scope="session")
def shapes_segmenter() -> Any:
    """The segmenter of examples/shapes.py, trained with its defaults (seeded). Shared: do not change it."""
    from shapes import train_segmenter

    return train_segmenter()  # kept under EDGEQ_EXAMPLES_CACHE, as the detector


# What the cached .tflite files are made by: a change to any of these makes new files under a new key.
CACHE_SOURCES = ("edgeq/quantize", "edgeq/inputs", "edgeq/_version.py", "edgeq/nativelog.py", "device/edgeq_device",
                 "examples/shapes.py", "tests/conftest.py", "datasets/shapes/labels.txt")


def source_key(sources: tuple[str, ...] = CACHE_SOURCES, root: Path = REPO) -> str:
    """A hash of the code that trains and converts the cached models (every ``.py`` under ``sources``)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sources:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _convert_shapes(request: pytest.FixtureRequest, model_fixture: str, folder: Path, modes: tuple[str, ...],
                    task: str, settings: dict[str, Any]) -> dict[str, Path]:
    import fcntl

    shared = os.environ.get("EDGEQ_TEST_CACHE")
    if shared:
        folder = Path(shared) / f"shapes-{task}-{source_key()}"
        folder.mkdir(parents=True, exist_ok=True)
    expected = {m: folder / f"{task}_{m}.tflite" for m in modes}
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process writing these files finishes first
        if all(p.is_file() for p in expected.values()) and (folder / ".done").is_file():
            return expected
        import edgeq

        model = request.getfixturevalue(model_fixture)
        for r in edgeq.convert_all(model, modes, calibration=SHAPES / "train", samples=64, task=task,
                                   task_settings=settings,
                                   labels=SHAPES / "labels.txt" if task == "detection" else None):
            r.save(expected[r.mode.value], overwrite=True)
        (folder / ".done").write_text("")
    return expected


@pytest.fixture(scope="session")
def shapes_detector_files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The detector converted in every mode with ``task="detection"`` recorded (labels: circle, square, triangle)."""
    from shapes import DETECTION_SETTINGS

    return _convert_shapes(request, "shapes_detector", tmp_path_factory.mktemp("shapes-det"),
                           ("float32", "dynamic", "float16", "int8", "int16x8"), "detection", DETECTION_SETTINGS)


@pytest.fixture(scope="session")
def shapes_segmenter_files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The segmenter converted as float32 and int8 with ``task="segmentation"`` recorded."""
    from shapes import SEGMENTATION_SETTINGS

    return _convert_shapes(request, "shapes_segmenter", tmp_path_factory.mktemp("shapes-seg"), ("float32", "int8"),
                           "segmentation", SEGMENTATION_SETTINGS)
