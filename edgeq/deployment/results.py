"""What a deploy returns: one :class:`BoardResult` per board in a :class:`DeployReport`.

Both are frozen dataclasses with ``to_dict``/``from_dict`` (a ``"schema"`` key:
``edgeq/board-result/2``, ``edgeq/deploy/1``), a plain-text ``__str__`` and
``_repr_html_`` for notebooks. The bench, eval and profile payloads are the boards'
``edgeq-device ... --json`` documents, kept as they came. A board result of version 1
(before ``profile``) still reads, with no profile.
"""

from __future__ import annotations

import html
import json
import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

from edgeq_device.measure.profile import ProfileResult
from edgeq_device.results.fileio import atomic_write_text
from edgeq_device.results.report_json import dumps_json

from edgeq.errors import InvalidArgumentError

__all__ = ["BOARD_RESULT_SCHEMA", "BOARD_STATES", "DEPLOY_REPORT_SCHEMA", "BoardResult", "DeployReport",
           "bench_p50_ms", "board_state", "eval_top1", "fidelity_sqnr"]

BOARD_RESULT_SCHEMA = "edgeq/board-result/4"
#: Older board-result schemas :meth:`BoardResult.from_dict` reads (version 1 had no ``profile``, version 2
#: no ``fidelity``, version 3 no ``step``, ``groups``, ``attempts``).
_OLD_BOARD_RESULT_SCHEMAS = ("edgeq/board-result/1", "edgeq/board-result/2", "edgeq/board-result/3")

#: The state every board of a deploy ends in, in the order summaries list them.
BOARD_STATES = ("ok", "failed", "unreachable", "timed-out", "interrupted")
_UNREACHABLE_KINDS = ("unreachable", "auth", "hostkey", "no-ssh")


def board_state(ok: bool, error_kind: str | None, step: str | None) -> str:
    """One of :data:`BOARD_STATES` for a board's outcome.

    ``unreachable``: no SSH connection (refused, unknown host, key or host key refused, a connect that
    timed out); ``timed-out``: a step ran past the board's timeout; ``interrupted``: Ctrl-C on the
    host; ``failed``: any other failure (its ``step`` and message say which and why).
    """
    if ok:
        return "ok"
    if error_kind == "interrupted":
        return "interrupted"
    if error_kind in _UNREACHABLE_KINDS or (error_kind == "timeout" and step in (None, "connect")):
        return "unreachable"
    if error_kind == "timeout":
        return "timed-out"
    return "failed"
DEPLOY_REPORT_SCHEMA = "edgeq/deploy/1"


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (NumPy's included, bool not), else None."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback: NumPy scalars as Python numbers, anything else as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def bench_p50_ms(payload: Mapping[str, Any] | None) -> float | None:
    """The median latency in ms of an ``edgeq-device bench --json`` payload (``latency.p50_us``)."""
    latency = (payload or {}).get("latency")
    value = latency.get("p50_us") if isinstance(latency, Mapping) else None
    us = _number(value)
    return None if us is None else us / 1000.0


def eval_top1(payload: Mapping[str, Any] | None) -> float | None:
    """The top-1 accuracy of an ``edgeq-device eval --json`` payload (``top1``)."""
    value = (payload or {}).get("top1")
    return _number(value)


def fidelity_sqnr(payload: Mapping[str, Any] | None) -> float | None:
    """The lowest output SQNR (dB) of an ``edgeq-device eval --inputs --reference --json`` payload."""
    outs = (payload or {}).get("outputs")
    values = [_number(o.get("sqnr_db")) for o in outs if isinstance(o, Mapping)] if isinstance(outs, list) else []
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _check_schema(data: Mapping[str, Any], schema: str, older: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidArgumentError("not a JSON object", argument="data", received=type(data).__name__,
                                   fix=f"give the dict that to_dict() returned ({schema})")
    got = data.get("schema", schema)
    if got != schema and got not in older:
        raise InvalidArgumentError("the dict holds another kind of result or schema version", argument="data",
                                   received=got, fix=f"give a {schema} document (upgrade edgeq if it is newer)")
    return {k: v for k, v in data.items() if k != "schema"}


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


@dataclass(frozen=True)
class BoardResult:
    """What happened on one board.

    Attributes:
        label: the board's label (results are stored under it).
        host: where it was reached (``user@host:port``).
        ok: every step succeeded.
        error: why it failed (one line with the fix), or None.
        error_kind: one of :data:`edgeq.errors.DEPLOY_ERROR_KINDS` (``unreachable``, ``auth``,
            ``hostkey``, ``timeout``, ``no-python``, ``no-venv``, ``no-runtime``, ``missing-deps``,
            ``setup``, ``transfer``, ``bench``, ``eval``, ``store``, ``interrupted``, ``remote``...).
        timings: seconds per step (``connect``, ``probe``, ``setup``, ``upload_model``,
            ``upload_data``, ``bench``, ``eval``, ``profile``, ``total``).
        actions: what each step did (``created``/``reused`` venv, ``copied``/``unchanged`` files).
        board: what the probe found (python version, machine, ...).
        bench: the ``edgeq-device bench --json`` payload, or None.
        eval: the ``edgeq-device eval --json`` payload, or None.
        profile: the ``edgeq-device profile --json`` payload, or None (read it with :attr:`profile_result`).
        fidelity: the ``edgeq-device eval --inputs --reference --json`` payload (the board's outputs
            against the float Keras model's), or None.
        stored_ids: row ids in the results store.
        step: the step that failed (``connect``, ``probe``, ``setup``, ``upload_model``, ``bench``...), or None.
        groups: the board's labels beside its own (an inventory's groups).
        attempts: how many times the board was run (more than 1 when its connection dropped and it was retried).
    """

    label: str
    host: str
    ok: bool = False
    error: str | None = None
    error_kind: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    board: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    stored_ids: tuple[int, ...] = ()
    fidelity: dict[str, Any] | None = None
    step: str | None = None
    groups: tuple[str, ...] = ()
    attempts: int = 1

    @property
    def state(self) -> str:
        """``ok``, ``failed``, ``unreachable``, ``timed-out`` or ``interrupted`` (see :func:`board_state`)."""
        return board_state(self.ok, self.error_kind, self.step)

    @property
    def p50_ms(self) -> float | None:
        """The board's median latency in ms (from ``bench``), or None."""
        return bench_p50_ms(self.bench)

    @property
    def top1(self) -> float | None:
        """The board's top-1 accuracy (from ``eval``), or None."""
        return eval_top1(self.eval)

    @property
    def profile_result(self) -> ProfileResult | None:
        """The board's per-operator profile, rebuilt from ``profile`` (None without one).

        Raises:
            InvalidArgumentError: the payload is not an ``edgeq-device/profile`` document this
                version reads.
        """
        return None if self.profile is None else ProfileResult.from_dict(self.profile)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``"schema"`` first."""
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["stored_ids"] = list(self.stored_ids)
        body["groups"] = list(self.groups)
        return {"schema": BOARD_RESULT_SCHEMA, **json.loads(json.dumps(body, default=_plain))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoardResult:
        """Rebuild from :meth:`to_dict`'s output.

        Reads version 1 too (no ``profile``).

        Raises:
            InvalidArgumentError: another schema, or keys this version does not know.
        """
        body = _check_schema(data, BOARD_RESULT_SCHEMA, _OLD_BOARD_RESULT_SCHEMAS)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown or "label" not in body or "host" not in body:
            raise InvalidArgumentError("not a board result", argument="data", received=unknown or sorted(body),
                                       fix=f"give a dict with label, host and only {', '.join(sorted(known))}")
        body["stored_ids"] = tuple(body.get("stored_ids") or ())
        body["groups"] = tuple(body.get("groups") or ())
        return cls(**body)

    def __str__(self) -> str:
        head = f"{self.label} ({self.host}): {'ok' if self.ok else self.state.upper()}"
        parts = []
        if self.p50_ms is not None:
            parts.append(f"p50 {self.p50_ms:.3f} ms")
        if self.top1 is not None:
            parts.append(f"top-1 {self.top1:.4f}")
        prof = self.profile_result
        if prof is not None:
            parts.append(f"profile {len(prof.timed)}/{len(prof.operators)} operators")
        sqnr = fidelity_sqnr(self.fidelity)
        if sqnr is not None:
            parts.append(f"SQNR {sqnr:.1f} dB vs Keras")
        parts.append(f"{self.timings.get('total', 0.0):.1f} s")
        text = head + ", " + ", ".join(parts)
        if self.error:
            text += f"\n  {self.error_kind}{' at ' + self.step if self.step else ''}: {self.error}"
        return text

    def _html_row(self) -> str:
        return (f"<tr><td>{html.escape(self.label)}</td><td>{self.state}</td>"
                f"<td>{_fmt(self.p50_ms, '.3f')}</td><td>{_fmt(self.top1, '.3f')}</td>"
                f"<td>{self.timings.get('total', 0.0):.1f}</td><td>{html.escape(self.error or '')}</td></tr>")

    def _repr_html_(self) -> str:  # notebooks
        return _HTML_HEAD + self._html_row() + "</table>"


_HTML_HEAD = ("<table><tr><th>board</th><th>status</th><th>p50 ms</th><th>top-1</th><th>total s</th>"
              "<th>error</th></tr>")


@dataclass(frozen=True)
class DeployReport:
    """One :class:`BoardResult` per board, in the order the boards were given.

    ``report["label"]`` is that board's result; iterating gives them in order.
    """

    model: str
    boards: tuple[BoardResult, ...]
    wall_seconds: float = 0.0
    db: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "boards", tuple(self.boards))

    @property
    def counts(self) -> dict[str, int]:
        """How many boards ended in each of :data:`BOARD_STATES` (every state listed, zeros included)."""
        out = dict.fromkeys(BOARD_STATES, 0)
        for b in self.boards:
            out[b.state] += 1
        return out

    def counts_line(self) -> str:
        """``100 boards: 90 ok, 3 failed, 4 unreachable, 2 timed-out, 1 interrupted``."""
        n = len(self.boards)
        return f"{n} board{'' if n == 1 else 's'}: " + ", ".join(f"{k} {state}" for state, k in self.counts.items())

    @property
    def ok(self) -> bool:
        """Every board succeeded."""
        return all(b.ok for b in self.boards)

    @property
    def failed(self) -> list[BoardResult]:
        """The boards that did not succeed."""
        return [b for b in self.boards if not b.ok]

    def __iter__(self) -> Iterator[BoardResult]:
        return iter(self.boards)

    def __len__(self) -> int:
        return len(self.boards)

    def __getitem__(self, label: str) -> BoardResult:
        for b in self.boards:
            if b.label == label:
                return b
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``"schema"`` first."""
        return {"schema": DEPLOY_REPORT_SCHEMA, "model": self.model, "wall_seconds": self.wall_seconds,
                "db": self.db, "run_id": self.run_id, "boards": [b.to_dict() for b in self.boards]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeployReport:
        """Rebuild from :meth:`to_dict`'s output (or a saved report's JSON).

        Raises:
            InvalidArgumentError: another schema, or no ``model``/``boards``.
        """
        body = _check_schema(data, DEPLOY_REPORT_SCHEMA)
        if "model" not in body or not isinstance(body.get("boards"), list):
            raise InvalidArgumentError("not a deploy report", argument="data", received=sorted(body),
                                       fix="give a dict with model and a list of boards")
        return cls(str(body["model"]), tuple(BoardResult.from_dict(b) for b in body["boards"]),
                   float(body.get("wall_seconds") or 0.0), body.get("db"), body.get("run_id"))

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the report as JSON, atomically; refuse to overwrite unless asked."""
        return atomic_write_text(path, dumps_json(self.to_dict(), indent=2, default=_plain) + "\n",
                                 overwrite=overwrite, argument="path")

    def summary(self, every_board: bool | None = None) -> str:
        """A plain-text table, then the count of boards in each state, the wall time and the run id.

        Args:
            every_board: one line per board (True), or only for the boards that did not end ok (False);
                None: every board up to 12 boards.
        """
        many = len(self.boards) > 12 if every_board is None else not every_board
        lines = [f"{'board':<18} {'status':<11} {'p50 ms':>8} {'top1':>6} {'total s':>8}  detail"]
        for b in self.boards:
            if many and b.ok:
                continue
            detail = (f"{b.step}: {b.error}" if b.step else b.error) if b.error else b.board.get("machine", "")
            if b.groups:
                detail = f"[{','.join(b.groups)}] {detail}"
            lines.append(f"{b.label:<18} {b.state:<11} "
                         f"{_fmt(b.p50_ms, '.3f'):>8} {_fmt(b.top1, '.3f'):>6} "
                         f"{b.timings.get('total', 0.0):>8.1f}  {detail}")
        if many and len(lines) == 1:
            lines = []
        run = f" (run {self.run_id})" if self.run_id else ""
        lines.append(f"{self.counts_line()} in {self.wall_seconds:.1f} s{run}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:  # notebooks
        return _HTML_HEAD + "".join(b._html_row() for b in self.boards) + "</table>"
