"""Deploy runs in the results store: a run id per deploy and the state each board ended in.

:class:`DeployRunsMixin` gives :class:`~edgeq.store.db.ResultsStore` its deploy-run methods:
:meth:`~DeployRunsMixin.start_deploy_run` when a deploy starts, :meth:`~DeployRunsMixin.record_deploy_board`
as each board finishes (so a crash of the host loses no finished board), and
:meth:`~DeployRunsMixin.deploy_run` / :meth:`~DeployRunsMixin.deploy_runs` to read them back (``--resume``
reruns the boards of a run that did not end ``ok``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgeq.errors import StoreError
from edgeq.store.backend import Backend, db_errors

__all__ = ["DeployRunsMixin", "new_run_id"]


def new_run_id() -> str:
    """A new run id: the UTC time and a random suffix, ``20261207T012233Z-3f9a1c``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class DeployRunsMixin:
    """Deploy-run bookkeeping (see the module docs); mixed into ``ResultsStore``."""

    _db: Backend

    @property
    def location(self) -> str:
        """The file path, or the server's URL without its password."""
        return self._db.display

    def _retry(self, fn: Callable[[], Any]) -> Any:  # ResultsStore's
        raise NotImplementedError

    def _write(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return self._retry(fn)
        except db_errors() as exc:
            raise StoreError(f"cannot record the {what}: {exc}", argument="db", received=self.location,
                             fix="check the database is writable and reachable") from exc

    def start_deploy_run(self, run_id: str, *, model_sha256: str, model_name: str,
                         settings: Mapping[str, Any]) -> None:
        """Record a new deploy run (nothing happens when ``run_id`` is already recorded: a resumed run)."""
        def write() -> None:
            with self._db.transaction() as db:
                db.execute("INSERT INTO deploy_runs (run_id, created, model_sha256, model_name, settings) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                           (run_id, _now(), model_sha256, model_name, json.dumps(dict(settings), default=str)))
        self._write("deploy run", write)

    def record_deploy_board(self, run_id: str, label: str, *, host: str, state: str, error_kind: str | None,
                            step: str | None, error: str | None, groups: Sequence[str],
                            board: Mapping[str, Any], stored_ids: Sequence[int], attempts: int) -> None:
        """Record (or, on a resumed run, replace) the state one board of ``run_id`` ended in."""
        row = (host, state, error_kind, step, error, json.dumps(list(groups)), json.dumps(dict(board), default=str),
               json.dumps(list(stored_ids)), int(attempts), _now())

        def write() -> None:
            with self._db.transaction() as db:
                db.execute("DELETE FROM deploy_boards WHERE run_id = ? AND label = ?", (run_id, label))
                db.execute("INSERT INTO deploy_boards (run_id, label, host, state, error_kind, step, error, "
                           "groups_json, board, stored_ids, attempts, finished) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (run_id, label, *row))
        self._write("board's state", write)

    def deploy_run(self, run_id: str) -> dict[str, Any] | None:
        """One run: ``run_id``, ``created``, ``model_sha256``, ``model_name``, ``settings`` and its
        ``boards`` (label -> state, error_kind, step, error, groups, board settings, stored_ids, attempts);
        None when no such run is recorded."""
        runs = self._db.execute("SELECT run_id, created, model_sha256, model_name, settings FROM deploy_runs "
                                "WHERE run_id = ?", (run_id,))
        if not runs:
            return None
        rid, created, sha, name, settings = runs[0]
        boards = {}
        for r in self._db.execute("SELECT label, host, state, error_kind, step, error, groups_json, board, "
                                  "stored_ids, attempts, finished FROM deploy_boards WHERE run_id = ? "
                                  "ORDER BY label", (run_id,)):
            boards[r[0]] = {"host": r[1], "state": r[2], "error_kind": r[3], "step": r[4], "error": r[5],
                            "groups": json.loads(r[6]), "board": json.loads(r[7]), "stored_ids": json.loads(r[8]),
                            "attempts": r[9], "finished": r[10]}
        return {"run_id": rid, "created": created, "model_sha256": sha, "model_name": name,
                "settings": json.loads(settings), "boards": boards}

    def deploy_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first: run_id, created, model_name and the count of boards per state."""
        out = []
        for rid, created, name in self._db.execute(
                "SELECT run_id, created, model_name FROM deploy_runs ORDER BY created DESC, run_id DESC LIMIT ?",
                (int(limit),)):
            counts = {state: int(n) for state, n in self._db.execute(
                "SELECT state, COUNT(*) FROM deploy_boards WHERE run_id = ? GROUP BY state", (rid,))}
            out.append({"run_id": rid, "created": created, "model_name": name, "states": counts})
        return out
