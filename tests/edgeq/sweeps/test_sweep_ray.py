"""A sweep of 3 tiny models × 2 modes on a real two-node Ray cluster started here: the same figures as the
same sweep run in this process; a worker node killed mid-sweep loses no finished cell, and the resume
runs only the cells that did not finish."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

import edgeq

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

from ray_cluster import two_node_cluster  # noqa: E402

MODES = ["float32", "int8"]  # a float and an integer model: 6 cells


def _common(mnist_train: Path, mnist_test: Path) -> dict:
    return dict(modes=MODES, calibration=str(mnist_train), evaluation=str(mnist_test), samples=50, eval_samples=100,
                runs=20, min_secs=0.05, max_secs=2.0, progress=False)


def test_ray_sweep_matches_local_and_resumes_after_a_node_dies(tiny_models, mnist_train, mnist_test, tmp_path):
    common = _common(mnist_train, mnist_test)
    local = edgeq.sweep(tiny_models, output=tmp_path / "local", workers=0, **common)  # in this process
    assert local.ran == 6 and local.failed == 0
    with two_node_cluster(tmp_path / "ray") as (address, _head, worker):
        on_ray = edgeq.sweep(tiny_models, output=tmp_path / "on_ray", ray=address, ray_memory="1GB", **common)
        assert on_ray.ran == 6 and on_ray.failed == 0, [c["error"] for c in on_ray.report.cells]
        nodes = {c["node"] for c in on_ray.report.cells}
        assert len(nodes) == 2, nodes  # both nodes ran cells
        ratios = []
        for cell in local.report.cells:
            a, b = cell["figures"], on_ray.report.cell(cell["name"])["figures"]
            assert a["size_bytes"] == b["size_bytes"], cell["name"]
            assert a["top1"] == b["top1"] and a["agreement"] == b["agreement"], cell["name"]
            assert a["eval_images"] == b["eval_images"] == 100
            ratios.append(b["latency_p50_us"] / a["latency_p50_us"])
        # latency within noise: every cell within 3x (two busy shared cores), the typical cell within 1.5x
        assert all(1 / 3 < r < 3 for r in ratios), ratios
        assert 1 / 1.5 < sorted(ratios)[len(ratios) // 2] < 1.5, ratios
        assert local.report.front_size == on_ray.report.front_size

        # A node lost mid-sweep: once 3 cells have finished, kill the worker node's processes while it runs one.
        seen: list[str] = []
        busy: list[bool] = []

        def log(line: str) -> None:
            seen.append(line)
            if sum(1 for s in seen if s.startswith("[")) == 3:
                deadline = time.monotonic() + 60
                while not worker.running("ray_cell") and time.monotonic() < deadline:
                    time.sleep(0.05)
                busy.append(worker.running("ray_cell"))
                worker.kill()

        out = tmp_path / "killed"
        killed = edgeq.sweep(tiny_models, output=out, ray=address, ray_memory="1GB", log=log, **common)
        assert busy == [True], "the worker node ran no cell to kill"
        failed = [c for c in killed.report.cells if c["status"] == "failed"]
        done = {c["name"]: c for c in killed.report.cells if c["status"] == "ok"}
        assert failed, "the node was killed while it ran a cell: that cell must be recorded failed"
        assert len(failed) + len(done) == 6
        assert all(c["error"] for c in failed)
        for c in done.values():  # every finished cell was written as it arrived
            assert (out / "cells" / c["folder"] / "model.tflite").exists()

        # Resume on the head alone: only the unfinished cells run; the finished ones come from the store.
        resumed = edgeq.sweep(tiny_models, output=out, ray=address, ray_memory="1GB", **common)
        assert resumed.ran == len(failed) and resumed.reused == len(done) and resumed.failed == 0
        for name, c in done.items():
            again = resumed.report.cell(name)
            assert again["reused"] and again["figures"] == c["figures"]
        for c in failed:
            assert resumed.report.cell(c["name"])["status"] == "ok"
            assert resumed.report.cell(c["name"])["figures"]["size_bytes"] == \
                local.report.cell(c["name"])["figures"]["size_bytes"]
    assert math.isfinite(resumed.seconds)
