"""Many boards at bounded parallelism: :func:`run_boards`, :class:`FleetProgress`.

At most ``forks`` boards run at once (each one SSH control master, so at most that many
SSH connections); a board whose connection drops in the middle of its run (ssh's
connection closed, reset, or a copy that arrived cut short) is run again up to
``retries`` times, its steps skipping what already arrived; every board's
:class:`~edgeq.deployment.results.BoardResult` goes to ``on_finished`` (which stores it)
the moment it ends, so a crash of the host process loses no finished board. With many
boards, :class:`FleetProgress` prints counts (finished / running / ok / failed /
unreachable / timed out) instead of one line per step and board.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Callable, Sequence

from edgeq.deployment.board_run import BoardRun, ProgressFn
from edgeq.deployment.fleet import Board
from edgeq.deployment.results import BOARD_STATES, BoardResult

__all__ = ["MANY_BOARDS", "FleetProgress", "retryable", "run_boards"]

#: Above this many boards, progress is counts, not lines per board and step.
MANY_BOARDS = 8


def retryable(res: BoardResult) -> bool:
    """A board worth running again: its connection dropped after it was made, or a copy arrived cut short."""
    if res.ok or res.error_kind == "interrupted":
        return False
    dropped = res.state == "unreachable" and res.step not in (None, "connect")
    return dropped or res.error_kind == "transfer"


class FleetProgress:
    """Counts of a many-board deploy, printed through ``say("fleet", ...)`` at most every ``every`` seconds.

    Per-board lines reach ``say`` only for failures and retries (:meth:`board_line`), so a hundred
    boards print a few lines, not hundreds.
    """

    def __init__(self, total: int, say: ProgressFn, every: float = 2.0) -> None:
        self.total, self.say, self.every = total, say, every
        self.running: set[str] = set()
        self.states = dict.fromkeys(BOARD_STATES, 0)
        self._lock = threading.Lock()
        self._last = 0.0

    def board_line(self, label: str, text: str) -> None:
        """A board's progress line: passed on only when it failed, stopped or is retried."""
        if text.startswith(("FAILED", "retrying")):
            self.say(label, text)

    def started(self, label: str) -> None:
        with self._lock:
            self.running.add(label)
        self.tick()

    def finished(self, res: BoardResult) -> None:
        with self._lock:
            self.running.discard(res.label)
            self.states[res.state] += 1
        self.tick(force=sum(self.states.values()) == self.total)

    def line(self) -> str:
        """``37/100 finished (30 ok, 3 failed, 4 unreachable, 0 timed-out, 0 interrupted), 20 running``."""
        done = sum(self.states.values())
        counts = ", ".join(f"{n} {s}" for s, n in self.states.items())
        return f"{done}/{self.total} finished ({counts}), {len(self.running)} running"

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self.say("fleet", self.line())


def run_boards(boards: Sequence[Board], make_run: Callable[[Board], BoardRun], *, forks: int, retries: int,
               cancel: threading.Event, on_finished: Callable[[BoardResult], BoardResult],
               say: ProgressFn, counts: FleetProgress | None = None) -> dict[str, BoardResult]:
    """Run every board, at most ``forks`` at once; their results by label, as ``on_finished`` returned them.

    Raises:
        KeyboardInterrupt: Ctrl-C; the running boards are stopped (their commands killed), each ends
            ``interrupted`` and goes through ``on_finished`` before this raises.
    """
    active: dict[str, BoardRun] = {}
    lock = threading.Lock()

    def attempt(board: Board) -> BoardResult:
        if counts is not None:
            counts.started(board.label)
        tries = 0
        while True:
            run = make_run(board)
            with lock:
                active[board.label] = run
            res = run.run()
            tries += 1
            with lock:
                active.pop(board.label, None)
            if tries > retries or cancel.is_set() or not retryable(res):
                return replace(res, attempts=tries)
            say(board.label, f"retrying ({tries}/{retries}): the connection dropped at {res.step}: {res.error}")

    results: dict[str, BoardResult] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(forks, len(boards))), thread_name_prefix="edgeq-deploy")
    futures: dict[Future[BoardResult], Board] = {pool.submit(attempt, b): b for b in boards}
    pending = set(futures)

    def collect(done: set[Future[BoardResult]]) -> None:
        for fut in done:
            board = futures[fut]
            if fut.cancelled():
                res = BoardResult(board.label, board.describe(), error="interrupted before this board started",
                                  error_kind="interrupted", groups=board.groups, attempts=0)
            else:
                res = fut.result()
            if counts is not None:
                counts.finished(res)
            results[board.label] = on_finished(res)

    try:
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            collect(done)
    except KeyboardInterrupt:
        cancel.set()
        for fut in pending:
            fut.cancel()
        with lock:
            running = list(active.values())
        for run in running:
            run.kill_running()
        pool.shutdown(wait=True, cancel_futures=True)
        collect({f for f in pending})
        raise
    pool.shutdown(wait=True)
    return results
