"""The edgeq-device command runs numpy's OpenBLAS on one thread; edgeq_device imported as a library leaves it alone.

OpenBLAS's spare threads spin after numpy's import, on the cores the interpreter's threads are
timed on (``edgeq_device._command`` says how long, and what was measured).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq_device._command import is_the_command

# What the console script does: its own path in argv[0] while it imports edgeq_device.
PROBE = """
import sys
sys.argv[0] = {argv0!r}
import edgeq_device, numpy, os
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


def _probe(argv0: str, **env: str) -> tuple[str, int]:
    # OpenBLAS also takes its thread count from these (make test sets OMP_NUM_THREADS=1)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", PROBE.format(argv0=argv0)], capture_output=True, text=True,
                         env={**clean, **env}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    value, threads = res.stdout.split()
    return value, int(threads)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_the_command_runs_openblas_on_one_thread_and_a_library_import_does_not():
    script = str(Path(sys.executable).parent / "edgeq-device")
    assert Path(script).exists()
    assert _probe(script) == ("1", 1)  # numpy loaded, no OpenBLAS thread beside the main one
    value, threads = _probe("/srv/app/serve.py")  # any other program importing edgeq_device
    assert value == "None"
    if (os.cpu_count() or 1) > 1:
        assert threads > 1  # OpenBLAS's own threads: what the command keeps out
    # the user's setting wins (OpenBLAS takes at most one thread per core)
    assert _probe(script, OPENBLAS_NUM_THREADS="2") == ("2", min(2, os.cpu_count() or 1))


def test_the_command_is_known_by_its_script_or_by_python_m():
    assert is_the_command(["/usr/local/bin/edgeq-device", "bench"], [])
    assert is_the_command(["/venv/Scripts/edgeq-device.exe"], [])
    assert is_the_command(["-m"], ["python3", "-m", "edgeq_device.cli", "bench"])
    assert is_the_command(["-m"], ["python3", "-X", "importtime", "-m", "edgeq_device"])
    assert not is_the_command(["-m"], ["python3", "-m", "edgeq.cli", "deploy"])
    assert not is_the_command(["/usr/bin/pytest"], ["python3", "/usr/bin/pytest"])
    assert not is_the_command(["-c"], ["python3", "-c", "import edgeq_device"])
