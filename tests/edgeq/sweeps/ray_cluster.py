"""A two-node Ray cluster on this machine for the sweep tests: a head and a worker node, each a
``ray start --block`` process in its own session and ``--temp-dir``, stopped by killing their own
process groups (``ray stop`` would stop every Ray of the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray() -> str:
    found = Path(sys.executable).parent / "ray"
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (Ray's workers leave their node's process group, not its tree)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Node:
    """One ``ray start --block`` process group."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.proc = subprocess.Popen([_ray(), "start", "--block", "--disable-usage-stats", *args],
                                     stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _kill_all(self, known: list[int] | None = None) -> None:
        for pid in [self.proc.pid, *descendants(self.proc.pid), *(known or [])]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def running(self, task: str) -> bool:
        """Whether a worker of this node is running ``task`` now (Ray titles such a process ``ray::<task>``)."""
        for pid in descendants(self.proc.pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(f"ray::{task}".encode()):
                    return True
            except OSError:
                continue
        return False

    def kill(self, known: list[int] | None = None) -> None:
        """SIGKILL every process of the node (raylet, its workers, and ``known`` pids): a machine lost,
        not a clean stop."""
        self._kill_all(known)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left after 2 s: a head's ``ray start --block`` outlives a
        SIGTERM by 20 s and more, and a throwaway cluster has nothing to save."""
        known = descendants(self.proc.pid)  # before they are orphaned
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=2)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill(known)  # whatever the node left behind


def _wait_nodes(address: str, count: int, env: dict[str, str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    while time.monotonic() < deadline:
        try:
            res = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, env=env,
                                 timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} nodes")


@contextmanager
def two_node_cluster(root: Path, head_cpus: int = 1, worker_cpus: int = 1,
                     memory: int = 3 * 10**9) -> Iterator[tuple[str, Node, Node]]:
    """``(address, head, worker)`` of a fresh two-node cluster; both nodes stopped at the end."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    root.mkdir(parents=True, exist_ok=True)
    short = Path(tempfile.mkdtemp(prefix="rq", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    head = Node(["--head", f"--port={port}", f"--num-cpus={head_cpus}", f"--memory={memory}",
                 f"--temp-dir={short / 'h'}", "--include-dashboard=false"],
                root / "head.log", env)
    worker = None
    try:
        _wait_nodes(address, 1, env)
        worker = Node([f"--address={address}", f"--num-cpus={worker_cpus}", f"--memory={memory}",
                       f"--temp-dir={short / 'w'}"], root / "worker.log", env)
        _wait_nodes(address, 2, env)
        yield address, head, worker
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
        shutil.rmtree(short, ignore_errors=True)
