"""Run a command on the board and stop it when standard input closes.

``python3 -c TEXT COMMAND ARGS...`` (the host sends this file's text) runs
``COMMAND ARGS...`` as a child and passes on its exit status. The host keeps the
SSH session's standard input open while the command runs, so when the session
goes away (Ctrl-C on the host, a time-out) standard input closes and the
measurement on the board stops too instead of running on. Standard library
only, Python >= 3.7, like :mod:`edgeq.deployment.agent`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import List, NoReturn

GRACE_SECONDS = 5


def stop_when_stdin_closes(child: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Read standard input until it closes, then terminate ``child`` (kill it after a grace period)."""
    try:
        while os.read(0, 4096):  # unbuffered: no lock held at interpreter exit
            pass
    except OSError:
        pass
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()


def exit_status(code: int) -> int:
    """The shell's exit status for a child's return code (a signal N becomes 128 + N)."""
    return code if code >= 0 else 128 - code


def main(argv: List[str]) -> NoReturn:
    """Run ``argv`` as a child under the watch and exit with its status."""
    child = subprocess.Popen(argv)
    threading.Thread(target=stop_when_stdin_closes, args=(child,), daemon=True).start()
    code = child.wait()
    os._exit(exit_status(code))  # do not wait for the watcher's read


if __name__ == "__main__":
    main(sys.argv[1:])
