"""``deploy(resume=RUN_ID)``: which boards of a recorded run to run again (:func:`resume_plan`).

A run's boards are recorded in the results store with their settings (:func:`board_settings`)
and the state each ended in; a board recorded ``pending`` never finished (the host process
stopped). Resuming runs every board that did not end ``ok``, under the same run id; the
boards that did are reported as they were recorded.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Sequence

from edgeq.deployment.fleet import Board
from edgeq.deployment.results import BoardResult
from edgeq.errors import InvalidArgumentError
from edgeq.store.db import ResultsStore

__all__ = ["board_settings", "resume_plan"]


def board_settings(board: Board) -> dict[str, Any]:
    """A board's settings as plain JSON values (how to reach it again)."""
    d = asdict(board)
    d["ssh_options"] = list(board.ssh_options)
    d["groups"] = list(board.groups)
    return d


def _board(settings: dict[str, Any], label: str) -> Board:
    known = {f.name for f in fields(Board)}
    try:
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items() if k in known}
        return Board(**kw)
    except (TypeError, InvalidArgumentError) as exc:
        raise InvalidArgumentError(f"the stored settings of board {label!r} do not make a board: {exc}",
                                   argument="resume", received=settings,
                                   fix="give the boards again (--inventory/--fleet/--to) with --resume") from exc


def resume_plan(store: ResultsStore, run_id: str, model_sha256: str, given: Sequence[Board],
                boards_given: bool) -> tuple[list[Board], dict[str, BoardResult]]:
    """(the boards to run again, the results of those that finished ``ok``, by label).

    Raises:
        InvalidArgumentError: no such run in the store, or the run deployed another model.
    """
    run = store.deploy_run(run_id)
    if run is None:
        recent = ", ".join(r["run_id"] for r in store.deploy_runs(5)) or "none recorded"
        raise InvalidArgumentError("no such deploy run in the results store", argument="resume", received=run_id,
                                   fix=f"give a run id edgeq deploy printed (latest: {recent}), and the same --db")
    if run["model_sha256"] != model_sha256:
        raise InvalidArgumentError("the run deployed another model (its sha256 differs)", argument="resume",
                                   received=run_id, fix=f"resume with the run's model ({run['settings'].get('model')})")
    recorded: dict[str, dict[str, Any]] = run["boards"]
    finished = {label: BoardResult(label, row["host"], ok=True, stored_ids=tuple(row["stored_ids"]),
                                   groups=tuple(row["groups"]), attempts=int(row["attempts"]),
                                   actions={"resume": f"finished earlier in run {run_id}"})
                for label, row in recorded.items() if row["state"] == "ok"}
    todo = [label for label, row in recorded.items() if row["state"] != "ok"]
    if boards_given:
        by_label = {b.label: b for b in given}
        boards = [by_label[label] for label in todo if label in by_label]
    else:
        boards = [_board(recorded[label]["board"], label) for label in todo]
    return boards, finished
