"""``edgeq qat``: quantization-aware fine-tuning of a Keras model, then its int8 .tflite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from edgeq_device.cli.clikit import Choice
from edgeq_device.model.info import format_bytes
from edgeq_device.results.report_json import dumps_json

from edgeq.cli.options import (
    Channels,
    build_preprocess,
    check_free,
    check_json_out,
    check_output,
    custom_objects_option,
    force_option,
    json_option,
    native_log_option,
    preprocess_options,
    write_json_out,
)
from edgeq.cli.output import make_console
from edgeq.errors import InvalidArgumentError
from edgeq.quantize.qat.sparsity import SCHEDULES, check_clusters, check_sparsity, cluster, prune
from edgeq.quantize.qat.train import QATResult, qat

__all__ = ["qat_cmd"]


@click.command("qat")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--train", "train", type=click.Path(), required=True,
              help="Labeled training data: image folder with class subfolders, or .npz with x and y.")
@click.option("--val", "val", type=click.Path(), default=None, help="Labeled validation data, same forms.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Epochs of fine-tuning.")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, default=1e-4, show_default=True,
              help="Adam's learning rate.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Training batch size.")
@click.option("--train-samples", type=int, default=None, help="Train on a seeded subset of N samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of shuffling and subsets.")
@click.option("--io", type=Choice(["float", "int8", "uint8"]), default="float", show_default=True,
              help="I/O type of the int8 model: float, int8, uint8.")
@click.option("--output", "-o", type=click.Path(), default="out", show_default=True,
              help="Output folder, or a .tflite file name.")
@force_option("Overwrite existing output files.")
@json_option("Also write a JSON summary (- for stdout).")
@click.option("--labels", "labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line in output order; class folders are the outputs of their names "
                   "(default: integer folder names are their output, other names sorted as Keras does).")
@click.option("--clusters", type=int, default=None, metavar="N",
              help="Cluster each kernel's weights to N values (2-256), fine-tune, then cluster-preserving QAT.")
@click.option("--prune", "sparsity", type=float, default=None, metavar="FRACTION",
              help="Zero this fraction (0-1) of each kernel's smallest weights, fine-tune, then "
                   "pruning-preserving QAT.")
@click.option("--schedule", type=Choice(list(SCHEDULES)), default="polynomial", show_default=True,
              help="How --prune's sparsity grows: polynomial (0 to the target over 70% of the steps) or constant.")
@click.option("--qat-epochs", type=int, default=1, show_default=True,
              help="With --clusters or --prune: epochs of preserving QAT after the --epochs of fine-tuning.")
@custom_objects_option
@preprocess_options
def qat_cmd(model: str, train: str, val: str | None, epochs: int, learning_rate: float, batch_size: int,
            train_samples: int | None, seed: int, io: str, output: str, force: bool, json_out: str | None,
            labels: str | None, clusters: int | None, sparsity: float | None, schedule: str, qat_epochs: int,
            size: tuple[int, int] | None, color: str | None, mean: Channels, std: Channels) -> None:
    """Fine-tune MODEL with quantization-aware training on --train, then write the int8 .tflite.

    Keras 3 models are rebuilt in tf_keras (checked to give the same outputs); layers
    tensorflow-model-optimization cannot quantize get an output-only or passthrough
    scheme, or stay float, and are listed. With --clusters or --prune, the weights are
    clustered or pruned and fine-tuned first (layers that cannot be are listed and left as
    they are), then trained with a QAT scheme that keeps the clusters or the zeros in int8.
    """
    if clusters is not None and sparsity is not None:
        raise InvalidArgumentError("--clusters and --prune are two techniques; give one", argument="--prune",
                                   received=sparsity, fix="run edgeq qat once with --clusters and once with --prune")
    if clusters is not None:
        check_clusters(clusters, "--clusters")
    if sparsity is not None:
        check_sparsity(sparsity, "--prune")
    out = Path(output)
    check_output(out)
    check_json_out(json_out, force)
    if out.suffix == ".tflite":
        check_free([out], force, "--output")
    pre = build_preprocess(size, color, mean, std, model)
    common: dict[str, Any] = dict(validation=val, epochs=epochs, learning_rate=learning_rate,
                                  batch_size=batch_size, preprocess=pre, samples=train_samples, seed=seed,
                                  labels=labels)
    result: QATResult
    if clusters is not None:
        result = cluster(model, train, clusters=clusters, qat_epochs=qat_epochs, **common)
    elif sparsity is not None:
        result = prune(model, train, sparsity=sparsity, schedule=schedule, qat_epochs=qat_epochs, **common)
    else:
        result = qat(model, train, **common)
    converted = result.convert(io=io, seed=seed)
    target = out if out.suffix == ".tflite" else out / converted.default_filename
    check_free([target], force, "--output")
    written = converted.save(target, overwrite=force)
    console = make_console(stderr=json_out == "-")
    last = {k: v[-1] for k, v in result.history.items()}
    tuned = int(getattr(result, "fine_tune_epochs", 0) or 0)  # clustering / pruning fine-tuning, then QAT
    trained = f"{tuned + result.epochs} epoch(s) ({tuned} fine-tuning, {result.epochs} QAT)" if tuned \
        else f"{result.epochs} epoch(s)"
    console.print(f"trained {trained} in {result.seconds:.1f}s: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in last.items()), highlight=False)
    for p in getattr(result, "skipped", ()):
        console.print(f"  {p.layer} ({p.kind}): left as it is - {p.reason}", highlight=False, markup=False)
    for p in result.special_layers:
        console.print(f"  {p.layer} ({p.kind}): {p.how} - {p.reason}", highlight=False, markup=False)
    console.print(f"wrote {written} ({format_bytes(converted.size_bytes)}, int8, io {converted.io.value})",
                  highlight=False)
    if json_out:
        payload = dumps_json({"schema": "edgeq/qat/1", "qat": result.to_dict(),
                              "result": dict(converted.to_dict(), path=str(written))}, indent=2)
        write_json_out(json_out, payload, force)

