"""The text table of a :class:`edgeq_device.measure.profile.ProfileResult`."""

from __future__ import annotations

from typing import Any

__all__ = ["format_profile"]


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if abs(v) >= 1000 else f"{v:.1f} µs"


def _macs(v: float | None) -> str:
    if not v:
        return ""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def format_profile(result: Any, top: int | None = None) -> str:
    """The profile as text: one row per operator (the ``top`` slowest only, if given), then the totals.

    Args:
        result: a ``ProfileResult``.
        top: show only this many of the slowest operators (None: all, in execution order).
    """
    r = result
    where = f"{r.runtime} {r.runtime_version}, threads {r.threads or 'default'}, " \
            f"XNNPACK {'on' if r.xnnpack else 'off'}" + (f", delegate {r.delegate}" if r.delegate else "")
    lines = [f"profile of {r.model or '<bytes>'}" + (f" ({r.mode})" if r.mode else ""), f"  {where}",
             f"  {r.board.name}"]
    if getattr(r, "preprocessing", ""):
        lines.append(f"  preprocessing  {r.preprocessing}")
    lines.append("")
    ops = list(r.operators)
    if top is not None:
        ops = sorted((o for o in ops if o.p50_us is not None), key=lambda o: -(o.p50_us or 0))[:top]
    header = f"{'#':>4}  {'operator':<24} {'output':<18} {'MACs':>7} {'p50':>10} {'share':>6} {'MAC/s':>8}"
    lines.append(header)
    lines.append("-" * len(header))
    for o in ops:
        share = r.share(o)
        t = "once" if o.inputs == "constant" else _us(o.p50_us)
        shape = "x".join(str(d) for d in o.output_shape) or "-"
        row = (f"{o.index:>4}  {o.op[:24]:<24} {shape[:18]:<18} {_macs(o.macs):>7} {t:>10} "
               f"{'' if share is None else f'{share:6.1%}':>6} {_macs(o.macs_per_second):>8}")
        if o.note:
            row += f"  {o.note}"
        lines.append(row)
    if r.invoke_overhead_us is not None:
        lines.append(f"{'':>4}  {'(invoke, once per run)':<24} {'':<18} {'':>7} {_us(r.invoke_overhead_us):>10}")
    lines.append("")
    n, timed = len(r.operators), len(r.timed)
    lines.append(f"  operators timed alone  {timed} of {n} ({r.coverage:.0%})")
    lines.append(f"  sum of operators       {_us(r.sum_us)}")
    if r.whole_p50_us is not None:
        residual = r.residual_us
        pct = f" ({residual / r.whole_p50_us:+.0%} of the whole)" if r.whole_p50_us else ""
        lines.append(f"  whole model p50        {_us(r.whole_p50_us)}  ({r.whole_runs} runs)")
        lines.append(f"  residual               {_us(residual)}{pct}: per-run work, fusion and delegate "
                     f"partitions, caches, operators not isolated")
    else:
        lines.append(f"  whole model            not timed: {r.whole_note}")
    if r.cut_note:
        lines.append(f"  operators not cut: {r.cut_note}")
    lines.append(f"  profiled in {r.seconds:.1f} s")
    return "\n".join(lines)
