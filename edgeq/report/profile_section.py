"""The per-operator sections of the compare report, and the side-by-side table of ``edgeq profile``.

Rendered from the comparison's schema dict:

- ``profile`` (``compare(..., profile=True)``) holds the modes' profiles on the host as an
  ``edgeq/profile-comparison`` document, read back through
  :class:`~edgeq.measure.profile.ProfileComparison`: the modes side by side per operator
  (:func:`profile_rows`);
- ``board_profiles`` holds, per board and mode, the ``edgeq-device/profile`` document the board
  wrote (``edgeq deploy --profile``), read back through
  :class:`edgeq_device.measure.profile.ProfileResult` (its own schema, older versions included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeq_device.measure.profile import ProfileResult

from edgeq.measure.profile import ProfileComparison

__all__ = ["TOP_OPERATORS", "ProfileBlock", "board_profile_blocks", "mode_profile_comparison", "mode_profile_rows",
           "mode_profile_totals", "profile_block", "profile_rows"]

#: How many of the slowest operators a profile section lists (the others are summed on one row).
TOP_OPERATORS = 10


@dataclass(frozen=True)
class ProfileBlock:
    """One profile as a report section: a title, a line of totals, and the table's cells."""

    title: str
    summary: str
    header: list[str]
    rows: list[list[str]]


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} µs"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def _share(us: float | None, total: float | None) -> str:
    return "-" if us is None or not total else f"{us / total:.1%}"


def _g(v: float | None) -> str:
    return "-" if not v else f"{v / 1e9:.2f} G"


def profile_block(title: str, prof: ProfileResult, top: int = TOP_OPERATORS) -> ProfileBlock:
    """The ``top`` slowest operators of ``prof``, the rest on one row, then the invoke overhead and the residual.

    Shares are of the whole model's p50 (of the operators' sum when the whole model was not timed),
    so the rows with the residual add up to 100%.
    """
    total = prof.whole_p50_us if prof.whole_p50_us else prof.sum_us
    timed = sorted(prof.timed, key=lambda o: -(o.p50_us or 0.0))
    header = ["#", "operator", "output", "MACs", "p50 ms", "share", "MAC/s"]
    rows = [[str(o.index), o.op, "x".join(str(d) for d in o.output_shape) or "-", f"{o.macs / 1e6:.2f} M",
             _ms(o.p50_us), _share(o.p50_us, total), _g(o.macs_per_second)] for o in timed[:top]]
    rest = timed[top:]
    if rest:
        us = float(sum(o.p50_us or 0.0 for o in rest))
        rows.append(["", f"{len(rest)} other operators", "", "", _ms(us), _share(us, total), ""])
    if prof.invoke_overhead_us is not None and timed:
        rows.append(["", "invoke (once per run)", "", "", _ms(prof.invoke_overhead_us),
                     _share(prof.invoke_overhead_us, total), ""])
    if prof.residual_us is not None:
        rows.append(["", "residual (not seen alone)", "", "", _ms(prof.residual_us),
                     _share(prof.residual_us, total), ""])
    n = len(prof.operators)
    summary = (f"{len(prof.timed)} of {n} operators timed alone; their sum {_ms(prof.sum_us)} ms, "
               + (f"the whole model's p50 {_ms(prof.whole_p50_us)} ms" if prof.whole_p50_us is not None
                  else f"the whole model not timed ({prof.whole_note})")
               + f"; {prof.runtime} {prof.runtime_version}, {prof.threads or 'default'} thread(s), "
               f"XNNPACK {'on' if prof.xnnpack else 'off'}.")
    untimed = [o for o in prof.operators if o.p50_us is None and o.inputs != "constant"]
    if untimed:
        summary += " Not isolated: " + "; ".join(f"#{o.index} {o.op} ({o.note or 'no reason given'})"
                                                for o in untimed[:5]) + ("; ..." if len(untimed) > 5 else "")
    return ProfileBlock(title, summary, header, rows)


def board_profile_blocks(data: Mapping[str, Any], top: int = TOP_OPERATORS) -> list[ProfileBlock]:
    """One :class:`ProfileBlock` per entry of the comparison dict's ``board_profiles``."""
    blocks = []
    for entry in data.get("board_profiles") or []:
        prof = ProfileResult.from_dict(entry["profile"])
        title = f"{entry['board']}: {entry['mode']}"
        blocks.append(profile_block(title, prof, top))
    return blocks


def profile_rows(comp: ProfileComparison, top: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: header and rows (the ``top`` slowest rows only, if given)."""
    names = comp.names
    header = ["#", "op", "output", "MACs"] + [f"p50 {n}" for n in names]
    header += [f"{n} / {names[0]}" for n in names[1:]]
    if comp.target == "edgetpu":
        header += [f"Edge TPU {n}" for n in names]
    rows = comp.rows()
    if top is not None:
        keep = {id(r) for r in sorted(rows, key=lambda r: -r.slowest_us)[:top]}
        rows = [r for r in rows if id(r) in keep]
    out = []
    for r in rows:
        first = next(o for o in r.ops if o is not None)
        cells = ["/".join("" if o is None else str(o.index) for o in r.ops), r.op,
                 "x".join(str(d) for d in first.output_shape), f"{first.macs / 1e6:.1f}M" if first.macs else ""]
        for o in r.ops:
            cells.append("" if o is None else "once" if o.inputs == "constant"
                         else _us(o.p50_us) if o.p50_us is not None else "not isolated")
        for k in range(1, len(names)):
            ratio = r.ratio(k)
            cells.append("" if ratio is None else f"{ratio:.2f}x " + ("faster" if ratio < 0.95 else
                                                                      "slower" if ratio > 1.05 else "same"))
        if comp.target == "edgetpu":
            for k, o in enumerate(r.ops):
                cells.append("" if o is None else "Edge TPU" if comp.on_edgetpu(k, o) else "CPU")
        out.append(cells)
    return header, out


def mode_profile_comparison(data: Mapping[str, Any]) -> ProfileComparison | None:
    """The modes' profiles of the comparison dict (its ``profile``), or None without them."""
    doc = data.get("profile")
    return None if not doc else ProfileComparison.from_dict(doc)


def mode_profile_rows(data: Mapping[str, Any], top: int = TOP_OPERATORS) -> tuple[list[str], list[list[str]]]:
    """The ``top`` slowest operators with every mode side by side (empty without profiles)."""
    comp = mode_profile_comparison(data)
    return ([], []) if comp is None else profile_rows(comp, top)


def mode_profile_totals(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per mode: operators timed, their sum, the whole model's p50 and the residual (empty without profiles)."""
    comp = mode_profile_comparison(data)
    if comp is None:
        return [], []
    header = ["model", "operators timed", "sum ms", "whole p50 ms", "residual ms", "residual share"]
    rows = [[name, f"{len(p.timed)} of {len(p.operators)}", _ms(p.sum_us), _ms(p.whole_p50_us),
             _ms(p.residual_us), _share(p.residual_us, p.whole_p50_us)] for name, p in zip(comp.names, comp.profiles)]
    return header, rows
