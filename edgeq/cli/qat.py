"""``edgeq qat``: quantization-aware fine-tuning of a Keras model, then its int8 .tflite."""

from __future__ import annotations

from pathlib import Path

import click
from edgeq_device.clikit import Choice
from edgeq_device.info import format_bytes
from edgeq_device.report_json import dumps_json

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
from edgeq.quantize.qat.train import qat

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
@custom_objects_option
@preprocess_options
def qat_cmd(model: str, train: str, val: str | None, epochs: int, learning_rate: float, batch_size: int,
            train_samples: int | None, seed: int, io: str, output: str, force: bool, json_out: str | None,
            labels: str | None, size: tuple[int, int] | None, color: str | None, mean: Channels,
            std: Channels) -> None:
    """Fine-tune MODEL with quantization-aware training on --train, then write the int8 .tflite.

    Keras 3 models are rebuilt in tf_keras (checked to give the same outputs); layers
    tensorflow-model-optimization cannot quantize get an output-only or passthrough
    scheme, or stay float, and are listed.
    """
    out = Path(output)
    check_output(out)
    check_json_out(json_out, force)
    if out.suffix == ".tflite":
        check_free([out], force, "--output")
    pre = build_preprocess(size, color, mean, std, model)
    result = qat(model, train, validation=val, epochs=epochs, learning_rate=learning_rate,
                 batch_size=batch_size, preprocess=pre, samples=train_samples, seed=seed, labels=labels)
    converted = result.convert(io=io, seed=seed)
    target = out if out.suffix == ".tflite" else out / converted.default_filename
    check_free([target], force, "--output")
    written = converted.save(target, overwrite=force)
    console = make_console(stderr=json_out == "-")
    last = {k: v[-1] for k, v in result.history.items()}
    console.print(f"trained {result.epochs} epoch(s) in {result.seconds:.1f}s: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in last.items()), highlight=False)
    for p in result.special_layers:
        console.print(f"  {p.layer} ({p.kind}): {p.how} - {p.reason}", highlight=False, markup=False)
    console.print(f"wrote {written} ({format_bytes(converted.size_bytes)}, int8, io {converted.io.value})",
                  highlight=False)
    if json_out:
        payload = dumps_json({"schema": "edgeq/qat/1", "qat": result.to_dict(),
                              "result": dict(converted.to_dict(), path=str(written))}, indent=2)
        write_json_out(json_out, payload, force)

