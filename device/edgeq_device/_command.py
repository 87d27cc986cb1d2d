"""What the ``edgeq-device`` command sets for its process before numpy is imported.

The command measures a TFLite interpreter, whose threads are its own (``--threads``). numpy's
OpenBLAS starts one thread per core when numpy is imported, and each spins, waiting for work,
until its timeout (2**28 ticks of its cycle counter by default) before it sleeps, and again
after every BLAS call: seconds on an ARM board, whose counter is slow (a Pi 4's runs at 54 MHz).
Those spinning threads take the cores the interpreter's threads are timed on. Measured on the
emulated Pi 4: ``python -c "import numpy, time; time.sleep(6)"`` takes 7.2 CPU-seconds, 0.7
with one OpenBLAS thread; ``edgeq-device bench`` of a small model 8.6, now 3.5.
So the command runs OpenBLAS on one thread unless ``OPENBLAS_NUM_THREADS`` is set already;
importing ``edgeq_device`` as a library changes nothing. Done on import (``edgeq_device`` imports
this module first).
"""

from __future__ import annotations

import os
import sys

__all__ = ["is_the_command", "limit_blas_threads"]

COMMAND = "edgeq-device"


def is_the_command(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> bool:
    """True in the ``edgeq-device`` console script and in ``python -m edgeq_device...``."""
    argv = sys.argv if argv is None else argv
    orig = list(getattr(sys, "orig_argv", ()) if orig_argv is None else orig_argv)
    if argv and os.path.basename(argv[0]).removesuffix(".exe") == COMMAND:
        return True
    if "-m" in orig:
        at = orig.index("-m") + 1
        return at < len(orig) and (orig[at] == "edgeq_device" or orig[at].startswith("edgeq_device."))
    return False


def limit_blas_threads() -> None:
    """Set ``OPENBLAS_NUM_THREADS=1`` for the command's process (and its workers) unless it is set."""
    if is_the_command():
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


limit_blas_threads()
