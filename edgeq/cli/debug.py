"""``edgeq debug``: per-layer int8 quantization error of a Keras model, worst layers first."""

from __future__ import annotations

from pathlib import Path

import click
from edgeq_device.cli.clikit import ChoiceList, flatten_choices
from edgeq_device.results.report_json import dumps_json

from edgeq.cli.options import (
    Channels,
    build_preprocess,
    check_free,
    check_json_out,
    custom_objects_option,
    force_option,
    json_option,
    native_log_option,
    preprocess_options,
    write_json_out,
)
from edgeq.cli.output import make_console
from edgeq.errors import InvalidArgumentError
from edgeq.quantize.layer_error import debug
from edgeq.quantize.ranges.debug import debug_ranges
from edgeq.quantize.ranges.histograms import METHODS

__all__ = ["debug_cmd"]


@click.command("debug")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--calib", "calib", type=click.Path(), required=True,
              help="Calibration data: image folder, .npy or .npz.")
@click.option("--samples", type=int, default=100, show_default=True, help="Samples to calibrate and measure on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--limit", type=int, default=20, show_default=True, help="Show the worst N layers (0: all).")
@click.option("--plot", "plot_path", type=click.Path(), default=None, help="Write a PNG of SQNR per layer.")
@json_option("Write the report as JSON (- for stdout).")
@force_option("Overwrite existing output files.")
@click.option("--ranges", "ranges", type=ChoiceList((*METHODS, "all")), multiple=True, default=(),
              callback=flatten_choices,
              help="Per-layer SQNR under each activation-ranges method side by side (all, or a comma list "
                   "such as minmax,mse), with the output SQNR per method.")
@click.option("--percentile", type=float, default=99.99, show_default=True,
              help="The percentile --ranges percentile keeps, in (0, 100]; entropy clips no more than it gives up.")
@custom_objects_option
@preprocess_options
def debug_cmd(model: str, calib: str, samples: int, seed: int, limit: int, plot_path: str | None,
              json_out: str | None, force: bool, size: tuple[int, int] | None, color: str | None, mean: Channels,
              std: Channels, ranges: tuple[str, ...] = (), percentile: float = 99.99) -> None:
    """Per-layer int8 quantization error of MODEL (RMSE, RMSE/scale, SQNR), worst layers first."""
    check_free([Path(plot_path) if plot_path else None], force, "--plot")
    check_json_out(json_out, force)
    pre = build_preprocess(size, color, mean, std, model)
    if ranges:
        if plot_path:
            raise InvalidArgumentError("--plot draws one method's layers", argument="--plot", received=plot_path,
                                       fix="drop --plot with --ranges")
        methods = METHODS if "all" in ranges else tuple(ranges)
        compared = debug_ranges(model, calib, methods=methods, percentile=percentile, samples=samples, seed=seed,
                                preprocess=pre)
        click.echo(compared.table(limit=limit or None), nl=False, err=json_out == "-")
        if json_out:
            write_json_out(json_out, dumps_json(compared.to_dict(), indent=2), force)
        return
    report = debug(model, calib, samples=samples, seed=seed, preprocess=pre)
    console = make_console(stderr=json_out == "-")
    click.echo(report.table(limit=limit or None), nl=False, err=json_out == "-")
    if plot_path:
        console.print(f"wrote {report.plot(plot_path, overwrite=force)}", highlight=False)
    if json_out:
        payload = dumps_json(report.to_dict(), indent=2)
        write_json_out(json_out, payload, force)

