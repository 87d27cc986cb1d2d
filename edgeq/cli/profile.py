"""``edgeq profile``: per-operator times of one or more .tflite files on this machine, side by side."""

from __future__ import annotations

import click
from edgeq_device.cli.clikit import Choice, echo_err
from edgeq_device.measure.profile import ProfileParams, format_profile
from edgeq_device.results.fileio import atomic_write_bytes, check_writable
from edgeq_device.run.runtime import RUNTIME_NAMES

from edgeq.cli.options import check_json_out, force_option, format_option, json_option, write_json_out
from edgeq.cli.output import print_rows
from edgeq.measure.profile import profile_models
from edgeq.report.profile_plot import profile_plot_png
from edgeq.report.profile_section import profile_rows

__all__ = ["profile_cmd", "profile_rows"]


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} µs"


@click.command("profile")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--threads", type=click.IntRange(min=1), metavar="N", help="Interpreter threads (default: the runtime's).")
@click.option("--xnnpack/--no-xnnpack", default=True, show_default=True, help="Use XNNPACK, the runtime's CPU delegate.")
@click.option("--runtime", type=Choice(RUNTIME_NAMES), help="TFLite runtime (default: the first found).")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="At least this many timed runs of each operator.")
@click.option("--min-secs", type=click.FloatRange(min=0), default=0.02, show_default=True,
              help="And at least this many seconds of each operator's runs.")
@click.option("--top", type=click.IntRange(min=1), metavar="N", help="Show only the N slowest operators.")
@click.option("--target", type=Choice(["edgetpu"]), default=None,
              help="Mark the operators the Edge TPU prediction maps (edgetpu: Coral Edge TPU).")
@click.option("--plot", type=click.Path(), metavar="PNG", help="Write a plot of the slowest operators to PNG.")
@json_option("Write the profiles as JSON to PATH (- for stdout; the table then goes to stderr).")
@force_option("Overwrite the --json or --plot file if it exists.")
@format_option
def profile_cmd(models: tuple[str, ...], threads: int | None, xnnpack: bool, runtime: str | None, runs: int,
                min_secs: float, top: int | None, target: str | None, plot: str | None, json_out: str | None,
                force: bool, fmt: str) -> None:
    """Time every operator of each MODEL on this machine and put the models side by side.

    Each operator is cut into a model of its own, fed the values its inputs had in a
    full run and timed; the first model is the reference of the ratios (below 1: faster).
    Operators are lined up by type, in order; those only one model has get a row of their own.
    """
    check_json_out(json_out, force)
    if plot is not None:
        check_writable(plot, force, argument="--plot")
    params = ProfileParams(runs=runs, min_secs=min_secs, threads=threads, xnnpack=xnnpack, runtime=runtime)
    comp = profile_models(list(models), params, target=target, log=echo_err)
    if fmt == "json" or json_out == "-":
        write_json_out("-", comp.to_json(), force)
        if fmt == "json":
            return
    to_err = json_out == "-"
    if len(models) == 1 and fmt == "table":
        click.echo(format_profile(comp.profiles[0], top=top), err=to_err)
    else:
        header, rows = profile_rows(comp, top)
        print_rows(header, rows, fmt, err=to_err, drop=("MACs", "output"), left=("op", "output"),
                   title="edgeq profile")
        for name, p in zip(comp.names, comp.profiles):
            whole = _us(p.whole_p50_us) if p.whole_p50_us is not None else f"not timed ({p.whole_note})"
            resid = "" if p.residual_us is None else f", residual {_us(p.residual_us)}"
            click.echo(f"{name}: {len(p.timed)}/{len(p.operators)} operators timed, sum {_us(p.sum_us)}, "
                       f"whole model p50 {whole}{resid}", err=to_err)
    if plot is not None:
        atomic_write_bytes(plot, profile_plot_png(comp, top or 12), overwrite=force, argument="plot")
        echo_err(f"wrote {plot}")
    if json_out and json_out != "-" and write_json_out(json_out, comp.to_json(), force) is not None:
        echo_err(f"wrote {json_out}")
