"""``edgeq debug``: per-layer int8 quantization error of a Keras model, worst layers first."""

from __future__ import annotations

from pathlib import Path

import click
from edgeq_device.report_json import dumps_json

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
from edgeq.quantize.layer_error import debug

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
@custom_objects_option
@preprocess_options
def debug_cmd(model: str, calib: str, samples: int, seed: int, limit: int, plot_path: str | None,
              json_out: str | None, force: bool, size: tuple[int, int] | None, color: str | None, mean: Channels,
              std: Channels) -> None:
    """Per-layer int8 quantization error of MODEL (RMSE, RMSE/scale, SQNR), worst layers first."""
    check_free([Path(plot_path) if plot_path else None], force, "--plot")
    check_json_out(json_out, force)
    pre = build_preprocess(size, color, mean, std, model)
    report = debug(model, calib, samples=samples, seed=seed, preprocess=pre)
    console = make_console(stderr=json_out == "-")
    click.echo(report.table(limit=limit or None), nl=False, err=json_out == "-")
    if plot_path:
        console.print(f"wrote {report.plot(plot_path, overwrite=force)}", highlight=False)
    if json_out:
        payload = dumps_json(report.to_dict(), indent=2)
        write_json_out(json_out, payload, force)

