"""fd 2 is swapped in one place (edgeq_device.run.nativelog): runners built in many threads at once leave it restored.

Each case runs in a fresh interpreter whose standard error is a pipe, so the runtime's
one-time XNNPACK banner has not been seen yet and every thread's runner swaps fd 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
import os, sys, threading
from edgeq_device import runtime
from edgeq_device.run.nativelog import quiet_native_logs, redirect_depth
from edgeq_device.run.runtime import ModelRunner

model = open(sys.argv[1], "rb").read()
before = os.fstat(2)
errors = []

def build(barrier, quiet):
    try:
        barrier.wait()
        if quiet:
            with quiet_native_logs():
                os.write(2, b"native line inside a quiet block\\n")
                ModelRunner(model, probe=False)
        else:
            ModelRunner(model, probe=False).run([__import__("numpy").zeros((1, 28, 28, 1), "float32")])
    except BaseException as exc:
        errors.append(repr(exc))

for round_ in range(6):
    runtime._banner_seen = False  # every round builds its first runners again
    quiet_in = {0, 3} if round_ % 2 else set()
    barrier = threading.Barrier(8)
    threads = [threading.Thread(target=build, args=(barrier, i in quiet_in)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino), f"round {round_}: fd 2 moved"
    assert after.st_nlink > 0, f"round {round_}: fd 2 is a deleted file"
    assert redirect_depth() == 0
assert not errors, errors
os.write(2, b"fd 2 reaches the pipe\\n")
print("ok")
"""


def test_runners_built_in_threads_leave_fd2_restored(models, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEQ_VERBOSE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "device"), env.get("PYTHONPATH", "")])
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_SCRIPT), str(models["float32"])],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    lines = proc.stderr.splitlines()
    assert lines[-1] == "fd 2 reaches the pipe"
    assert not any("Created TensorFlow Lite" in line for line in lines)  # the banner is dropped
    assert not any("inside a quiet block" in line for line in lines)  # the quiet blocks' lines went to their log
    assert list(tmp_path.glob("edgeq-tf-*.log")) == []  # every temporary log deleted
