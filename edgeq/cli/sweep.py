"""``edgeq sweep``: models × modes × options, one job per cell, locally or on Ray; the Pareto front as the answer."""

from __future__ import annotations

from typing import Any

import click
from edgeq_device.cli.clikit import Choice, ChoiceList, flatten_choices

from edgeq.cli.options import native_log_option
from edgeq.cli.output import make_console
from edgeq.errors import InvalidArgumentError
from edgeq.sweeps.grid import CONVERT_MODES, TRAIN_MODES
from edgeq.sweeps.run import DEFAULT_MODES, sweep

__all__ = ["parse_size", "sweep_cmd"]


def parse_size(value: str | None) -> int | None:
    """Bytes from ``80000``, ``80KB``, ``64KiB`` or ``1.5MB`` (None stays None).

    Raises:
        InvalidArgumentError: anything else.
    """
    if value is None:
        return None
    text = value.strip().upper().replace(" ", "")
    for unit, mult in (("KIB", 1 << 10), ("MIB", 1 << 20), ("KB", 10**3), ("MB", 10**6), ("B", 1), ("", 1)):
        if text.endswith(unit):
            try:
                n = float(text[: len(text) - len(unit)] if unit else text)
            except ValueError:
                continue
            if n > 0:
                return int(n * mult)
    raise InvalidArgumentError("not a size", argument="--max-size", received=value, fix="give e.g. 64KiB or 80000")


def _split(value: str | None, option: str, cast: Any = str) -> list[Any] | None:
    if not value:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InvalidArgumentError("expected a comma-separated list", argument=option, received=value,
                                   fix=f"give e.g. {option} 0,2") from None


@click.command("sweep")
@native_log_option
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--calib", "calib", type=click.Path(), required=True, help="Calibration data (image folder, .npy, .npz).")
@click.option("--eval", "evaluation", type=click.Path(), required=True, help="Labeled evaluation data.")
@click.option("--modes", type=ChoiceList((*CONVERT_MODES, *TRAIN_MODES)), multiple=True, default=[",".join(DEFAULT_MODES)],
              callback=flatten_choices, show_default=True,
              help="Modes: a comma list or repeated; qat, clustered and pruned need --train.")
@click.option("--ranges", default=None, metavar="LIST", help="int8 activation ranges to sweep (minmax,percentile,mse,...).")
@click.option("--a16", default=None, metavar="LIST", help="int8: numbers of layers with 16-bit activations to sweep (0,2).")
@click.option("--io", default=None, metavar="LIST", help="int8 I/O types to sweep (float,int8,uint8).")
@click.option("--train", type=click.Path(), default=None, help="Labeled training data for qat, clustered, pruned.")
@click.option("--output", "-o", type=click.Path(), default="out/sweep", show_default=True,
              help="The sweep's folder (cells/, results.json, report.md, report.html); reused on resume.")
@click.option("--db", type=click.Path(), default=None, help="Results store [OUTPUT/results.db].")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip the cells already in the store (same model, data and settings).")
@click.option("--force", is_flag=True, help="Rerun every cell (and replace a results.json not written by a sweep).")
@click.option("--workers", type=int, default=None, help="Local worker processes [the CPU count]; 0: in this process.")
@click.option("--ray", "ray_address", default=None, envvar="RAY_ADDRESS", metavar="ADDRESS",
              help="Run the cells as Ray tasks on this cluster (host:port, or auto) [$RAY_ADDRESS].")
@click.option("--ray-cpus", type=float, default=1, show_default=True, help="CPUs each Ray task declares.")
@click.option("--ray-memory", default="2GB", show_default=True, help="Memory each Ray task declares (TensorFlow).")
@click.option("--ray-retries", type=int, default=0, show_default=True,
              help="Reruns of a task whose node died (0: recorded failed; the next --resume runs it).")
@click.option("--samples", type=int, default=200, show_default=True, help="Calibration samples.")
@click.option("--eval-samples", type=int, default=None, help="Evaluate on a seeded subset of this many.")
@click.option("--threads", type=int, default=1, show_default=True, help="Interpreter threads when timing.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per cell (at least).")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Recommend only cells within this many points of the best Keras model's top-1.")
@click.option("--max-latency", type=float, default=None, metavar="MS", help="... and this p50 latency.")
@click.option("--max-size", default=None, metavar="BYTES", help="... and this file size (80KB, 64KiB).")
@click.option("--prefer", type=Choice(["latency", "size", "accuracy"]), default="latency", show_default=True,
              help="Among the cells within the constraints, recommend the fastest, smallest or most accurate.")
def sweep_cmd(models: tuple[str, ...], calib: str, evaluation: str, modes: tuple[str, ...], ranges: str | None,
              a16: str | None, io: str | None, train: str | None, output: str, db: str | None, resume: bool,
              force: bool, workers: int | None, ray_address: str | None, ray_cpus: float, ray_memory: str,
              ray_retries: int, samples: int, eval_samples: int | None, threads: int, runs: int, max_drop: float,
              max_latency: float | None, max_size: str | None, prefer: str) -> None:
    """Sweep MODELS (model files, or a models.toml naming builders) × --modes × options: each cell converted
    and measured as one job, in local worker processes or on Ray; prints the Pareto front and the recommended
    cell, and writes the report (report.html, report.md, results.json) into --output. Exit status 1 when a
    cell failed (its error is in the report; --resume runs it again)."""
    options: dict[str, Any] = {}
    for name, value, cast in (("ranges", ranges, str), ("a16", a16, int), ("io", io, str)):
        vals = _split(value, f"--{name}", cast)
        if vals:
            options[name] = vals
    console = make_console(stderr=True)
    res = sweep(list(models), calibration=calib, evaluation=evaluation, modes=list(modes), options=options,
                train=train, output=output, store=db, resume=resume, force=force, workers=workers,
                ray=ray_address, ray_cpus=ray_cpus, ray_memory=ray_memory, ray_retries=ray_retries, samples=samples,
                eval_samples=eval_samples, threads=threads, runs=runs, max_drop=max_drop, max_latency=max_latency,
                max_size=parse_size(max_size), prefer=prefer, log=lambda line: console.print(line, markup=False,
                                                                                            highlight=False))
    rep = res.report
    click.echo(f"{res.ran} cell(s) run, {res.reused} from the store, {res.failed} failed, {res.seconds:.0f} s")
    click.echo(f"Pareto front ({rep.metric} vs latency): {', '.join(rep.front_latency) or '-'}")
    click.echo(f"Pareto front ({rep.metric} vs size): {', '.join(rep.front_size) or '-'}")
    click.echo(f"Recommended: {rep.recommendation['cell'] or 'none'} — {rep.recommendation['reason']}")
    click.echo(f"Report: {res.files.get('report.html')}")
    if res.failed:
        raise SystemExit(1)
