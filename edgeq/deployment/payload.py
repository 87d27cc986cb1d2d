"""What travels to a board, and how the host and the board agree it arrived whole.

- The programs the board runs with its own Python before anything is
  installed: :func:`agent_program` (probe, recv, setup) and
  :func:`watch_program` (stops a measurement when the SSH session goes away).
  They are the text of the stdlib-only modules :mod:`edgeq.deployment.agent`
  and :mod:`edgeq.deployment.watch`, sent as their files' text.
- sha256 of the model file and of the evaluation folder, computed by the agent's
  own functions, so the host and the board cannot hash differently
  (:func:`file_sha256`, :func:`tree_sha256`).
- the folder as an uncompressed tar stream (:func:`tar_folder`).
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from importlib import resources
from pathlib import Path

from edgeq.deployment import agent

__all__ = ["agent_program", "file_sha256", "tar_folder", "tree_sha256", "watch_program"]


@functools.cache
def _module_text(name: str) -> str:
    return resources.files("edgeq.deployment").joinpath(name).read_text(encoding="utf-8")


def agent_program() -> str:
    """The text of ``edgeq/deployment/agent.py``, for ``python3 -c TEXT OP WORKDIR ...`` on a board."""
    return _module_text("agent.py")


def watch_program() -> str:
    """The text of ``edgeq/deployment/watch.py``, for ``python3 -c TEXT COMMAND ...`` on a board."""
    return _module_text("watch.py")


def file_sha256(path: Path) -> str:
    """sha256 of a file (hex): the agent's own function, so host and board hash alike."""
    return agent.file_sha(os.fspath(path))


def tree_sha256(root: Path) -> str:
    """sha256 over a folder (relative paths, file hashes, empty folders, sorted): the agent's own function."""
    return agent.tree_sha(os.fspath(root))


def tar_folder(root: Path) -> bytes:
    """The folder as an uncompressed tar (sorted, owner-less entries; empty folders included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if not dirnames and not filenames and Path(dirpath) != root:  # empty class folders travel too
                info = tf.gettarinfo(dirpath, arcname=Path(dirpath).relative_to(root).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tf.addfile(info)
            for name in sorted(filenames):
                full = Path(dirpath) / name
                info = tf.gettarinfo(str(full), arcname=full.relative_to(root).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(full, "rb") as fh:
                    tf.addfile(info, fh)
    return buf.getvalue()
