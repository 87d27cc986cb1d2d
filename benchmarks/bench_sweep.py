"""A sweep's local parallelism: the wall time of 3 models × 5 modes (15 cells) in 2 local worker processes
as a ratio to the same cells one after another in one process (``workers=0``), each run in a fresh Python
(imports included, TensorFlow's in every worker), the models the demo's digits CNN at three widths.
Also the CPU seconds each used: the ratio only reaches its goal when two cores are free for the workers.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODES = ["float32", "dynamic", "float16", "int8", "int16x8"]
WIDTHS = ((4, 16), (8, 32), (16, 64))

_SWEEP = """
import sys, edgeq
models, out, workers = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
r = edgeq.sweep(models, modes={modes!r}, calibration={calib!r}, evaluation={evaluation!r}, output=out,
                workers=workers, samples=200, progress=False)
assert r.ran == len(r.report.cells) and r.failed == 0, [c["error"] for c in r.report.cells]
"""


def _timed(models: list[Path], out: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the sweep's processes)."""
    code = _SWEEP.format(modes=MODES, calib=str(REPO / "datasets/mnist5k/train"),
                         evaluation=str(REPO / "datasets/mnist5k/test"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, ",".join(map(str, models)), str(out), str(workers)], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run() -> dict[str, object]:
    sys.path.insert(0, str(REPO / "examples"))
    from sweep_models import digits_cnn

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = []
        for width, dense in WIDTHS:
            p = root / f"digits_w{width}.keras"
            digits_cnn(width=width, dense=dense, epochs=1, images=1000).save(p)
            models.append(p)
        serial, serial_cpu = _timed(models, root / "serial", 0)
        parallel, parallel_cpu = _timed(models, root / "parallel", 2)
    # cores_used: CPU seconds / wall seconds; on a machine whose cores others keep busy, under 2 for both
    return {"cells": len(models) * len(MODES), "serial_s": round(serial, 1), "two_workers_s": round(parallel, 1),
            "ratio_two_workers_to_serial": round(parallel / serial, 3), "goal": "<= 0.7",
            "serial_cores_used": round(serial_cpu / serial, 2), "two_workers_cores_used": round(parallel_cpu / parallel, 2),
            "cpu_ratio_two_workers_to_serial": round(parallel_cpu / serial_cpu, 3)}


if __name__ == "__main__":
    print(run())
