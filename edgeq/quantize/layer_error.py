"""Per-layer quantization error of an int8 model against its float model.

``debug(model, calibration)`` calibrates the model, builds TFLite's numeric-verify
debug model (``tf.lite.experimental.QuantizationDebugger``) and runs the
calibration samples through it. Each quantized op is compared with the same op
computed in float *on the same (dequantized) inputs*, so the error of a layer is
its own, not what it inherited. For each layer the :class:`LayerReport` gives:

- ``rmse``: root mean square of (dequantized int8 output - float output);
- ``scale``: the output tensor's quantization step; ``rmse / scale`` is about 0.29 for
  plain rounding error, well above that when a layer clips or misbehaves;
- ``sqnr_db``: signal-to-quantization-noise ratio ``10 log10(mean(float^2) / mean(error^2))``
  of each sample, averaged over the samples (capped at 120 dB). Averaging per sample keeps
  rare huge values from hiding the damage: when a few outliers set the range, ordinary
  samples collapse to a few steps and their SQNR falls near 0 dB.

Layers are listed worst first (lowest SQNR). :class:`QuantDebugSession` keeps the
calibrated model so that variants keeping chosen layers in float can be produced
without calibrating again (the accuracy budget search uses it).
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import FlatModel, read_flat_model
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.results.fileio import atomic_write_bytes

from edgeq.deprecation import renamed_arguments
from edgeq.errors import ConversionError, InvalidArgumentError
from edgeq.inputs.data import as_source
from edgeq.inputs.models import LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.quantize.calibration import (
    CalibrationStats,
    default_preprocess,
    representative_dataset,
    warn_about_calibration,
)
from edgeq.quantize.modes import IOType, Mode
from edgeq.quantize.tflite import configure_converter

__all__ = ["LayerError", "LayerReport", "QuantDebugSession", "debug"]

_VERIFY = "NumericVerify"


@dataclass(frozen=True)
class LayerError:
    """The quantization error of one op's output.

    Attributes:
        name: the op's output tensor in the float model (what ``denylisted_nodes`` takes).
        op: the TFLite op type (CONV_2D, FULLY_CONNECTED, ...).
        layer: the Keras layer the tensor belongs to, where its name tells.
        position: the op's place in execution order (0 = first quantized op compared).
        rmse: root mean square error of the dequantized output.
        scale: the output's quantization step.
        sqnr_db: signal-to-quantization-noise ratio in dB, mean over samples (120 without error).
        max_abs_error: the largest absolute error seen.
        elements: elements per sample of the output.
    """

    name: str
    op: str
    layer: str
    position: int
    rmse: float
    scale: float
    sqnr_db: float
    max_abs_error: float
    elements: int

    @property
    def rmse_over_scale(self) -> float:
        """RMSE in quantization steps (about 0.29 for rounding error alone)."""
        return self.rmse / self.scale if self.scale > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {"name": self.name, "op": self.op, "layer": self.layer, "position": self.position,
                "rmse": num(self.rmse), "scale": num(self.scale), "rmse_over_scale": num(self.rmse_over_scale),
                "sqnr_db": num(self.sqnr_db), "max_abs_error": num(self.max_abs_error),
                "elements": self.elements}


@dataclass(frozen=True)
class LayerReport:
    """Per-layer quantization error of an int8 model, worst layer first (lowest SQNR).

    Attributes:
        model: the model's name.
        samples: how many samples the error was measured on.
        layers: one :class:`LayerError` per quantized op output, worst first.
    """

    model: str
    samples: int
    layers: tuple[LayerError, ...]

    def worst(self, n: int) -> tuple[LayerError, ...]:
        """The ``n`` layers with the lowest SQNR."""
        return self.layers[:n]

    def in_model_order(self) -> tuple[LayerError, ...]:
        """The layers in execution order."""
        return tuple(sorted(self.layers, key=lambda r: r.position))

    def table(self, limit: int | None = 20) -> str:
        """A text table of the worst ``limit`` layers (all with None)."""
        from rich.console import Console
        from rich.table import Table

        rows = self.layers if limit is None else self.layers[:limit]
        t = Table(title=f"quantization error per layer: {self.model} ({self.samples} samples), worst first",
                  title_justify="left")
        for col in ("#", "op", "layer", "SQNR dB", "RMSE", "scale", "RMSE/scale", "max |err|", "tensor"):
            t.add_column(col, justify="left" if col in ("op", "layer", "tensor") else "right",
                         overflow="fold")
        for r in rows:
            t.add_row(str(r.position), r.op, r.layer, f"{r.sqnr_db:.1f}", f"{r.rmse:.3g}", f"{r.scale:.3g}",
                      f"{r.rmse_over_scale:.2f}", f"{r.max_abs_error:.3g}", r.name.split(";")[0])
        buf = io.StringIO()
        Console(file=buf, width=160, color_system=None, force_jupyter=False, force_terminal=False).print(t)
        if limit is not None and len(self.layers) > limit:
            buf.write(f"... {len(self.layers) - limit} more layer(s)\n")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The per-layer table in a notebook."""
        return "<pre>" + html.escape(self.table()) + "</pre>"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"schema": "edgeq/debug/1", "model": self.model, "samples": self.samples,
                "layers": [r.to_dict() for r in self.layers]}

    def plot(self, path: str | Path, *, overwrite: bool = False, limit: int = 40) -> Path:
        """Draw SQNR per layer in model order (worst ones highlighted) as a PNG; returns the path.

        Raises:
            OutputExistsError: the file exists and ``overwrite`` is False.
            OutputError: the path cannot be written (see ``edgeq_device.results.fileio``).
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        ordered = self.in_model_order()
        if len(ordered) > limit:  # keep the worst ``limit`` layers, still in model order
            keep = {r.position for r in self.layers[:limit]}
            ordered = tuple(r for r in ordered if r.position in keep)
        worst = {r.position for r in self.layers[:3]}
        fig = Figure(figsize=(8, 0.32 * len(ordered) + 1.4))
        ax = fig.add_subplot(1, 1, 1)
        values = [min(r.sqnr_db, 80.0) for r in ordered]
        colors = ["#d62728" if r.position in worst else "#1f77b4" for r in ordered]
        labels = [f"{r.position} {r.op} {r.layer}"[:48] for r in ordered]
        y = np.arange(len(ordered))
        ax.barh(y, values, color=colors)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("SQNR (dB, higher is better; red: the worst three)")
        ax.set_title(f"int8 error per layer: {self.model}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return atomic_write_bytes(Path(path), buf.getvalue(), overwrite=overwrite, argument="path")


_SQNR_CAP = 120.0


def _sqnr(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """SQNR of one sample in dB (NaN for an all-zero output, which is skipped in the mean)."""
    ref = f.astype(np.float64)
    signal = float(np.mean(np.square(ref)))
    noise = float(np.mean(np.square((q.astype(np.float64) - zero_point) * scale - ref)))
    if signal <= 0:
        return math.nan
    if noise <= 0:
        return _SQNR_CAP
    return float(np.clip(10 * math.log10(signal / noise), -_SQNR_CAP, _SQNR_CAP))


def _noise(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    d = (q.astype(np.float64) - zero_point) * scale
    return float(np.mean(np.square(d - f.astype(np.float64))))


def _max_error(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    d = (q.astype(np.float64) - zero_point) * scale
    return float(np.max(np.abs(d - f.astype(np.float64)))) if f.size else 0.0


def _guess_layer(tensor: str, layer_names: Sequence[str], model_name: str = "") -> str:
    """The Keras layer a tensor name belongs to (``model_1/conv2d_1/Relu;...`` -> ``conv2d``).

    A Keras 3 export scopes every name with a ``_N`` suffix (the model ``m`` becomes ``m_1``);
    when the model's scope shows it, the suffix is taken off layer scopes too.
    """
    parts = tensor.split(";")[0].split("/")
    names = set(layer_names)
    suffixed = len(parts) > 1 and parts[0] != model_name and re.sub(r"_\d+$", "", parts[0]) == model_name
    for p in parts[1:] if len(parts) > 1 else parts:
        stripped = re.sub(r"_\d+$", "", p)
        for cand in ((stripped, p) if suffixed else (p, stripped)):
            if cand in names:
                return cand
    return parts[1] if len(parts) > 2 else "-"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep Keras' export summary and TF's debugger warnings (deprecated interpreter, missing
    input statistics, preserved tensors) off the user's console."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


class QuantDebugSession:
    """A calibrated model and its quantization debugger, ready for per-layer reports and variants.

    Args:
        model: a Keras 3 / tf_keras model, a model file or SavedModel folder, or a LoadedModel.
        calibration: calibration data (image folder, arrays, tf.data, ...), as for ``convert``.
        samples: how many calibration samples to calibrate and measure with (seeded).
        seed: seed of that subset.
        preprocess: how images become input (default: derived from the input shape).
        batch_size: fix a dynamic batch dimension.
        progress: progress on stderr (default: on unless ``EDGEQ_PROGRESS=0``).

    Raises:
        CalibrationError (NonFiniteCalibrationError for a sample with NaN or Inf), ConversionError,
        InvalidArgumentError, ModelLoadError.
    """

    @quiet_native_logs()
    def __init__(self, model: Any, calibration: Any, *, samples: int = 200, seed: int = 0,
                 preprocess: Preprocess | None = None, batch_size: int | None = None,
                 progress: bool | None = None) -> None:
        import tensorflow as tf

        if not isinstance(samples, int) or samples < 1:
            raise InvalidArgumentError("must be a positive integer", argument="samples", received=samples,
                                       fix="give e.g. samples=100")
        if calibration is None:
            raise InvalidArgumentError("debugging int8 needs calibration data", argument="calibration",
                                       received=None, fix="pass an image folder, arrays or a tf.data.Dataset "
                                                          "(--calib at the CLI)")
        self.loaded: LoadedModel = load_model(model)
        if preprocess is None and len(self.loaded.inputs) == 1:
            preprocess = default_preprocess(self.loaded.inputs[0])
        self.preprocess = preprocess
        self.source = as_source(calibration, preprocess)
        stats = CalibrationStats()
        gen = representative_dataset(self.source, self.loaded.inputs, samples, seed, batch_size, progress,
                                     stats)
        self._items: list[dict[str, np.ndarray]] = list(gen())
        warn_about_calibration(self.loaded, self.source, stats, samples)
        names = [s.name for s in self.loaded.inputs]

        def rep() -> Iterator[dict[str, np.ndarray]]:
            yield from self._items

        try:
            with self.loaded.converter(batch_size) as converter, _quiet():
                configure_converter(converter, Mode.INT8, IOType.FLOAT, rep)
                self.debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=self._dataset)
        except ValueError as exc:
            raise ConversionError(f"the quantization debugger failed: {str(exc).splitlines()[0][:300]}",
                                  argument="model", fix="check the model converts to int8 with edgeq convert "
                                                        "--mode int8") from exc
        self._input_order = self._order_inputs(names)
        self.calibrated_model: bytes = bytes(self.debugger.calibrated_model)
        self.node_names = self._op_outputs(read_flat_model(self.calibrated_model))

    @property
    def samples(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[dict[str, np.ndarray]]:
        """The calibration samples, as dicts keyed by input name."""
        return self._items

    def _order_inputs(self, names: list[str]) -> list[str]:
        """Input names in the order of the debug interpreter's inputs."""
        if len(names) == 1:
            return names
        flat = read_flat_model(self.debugger.quant_model)
        order: list[str] = []
        for i in flat.main.inputs:
            tname = flat.main.tensors[i].name
            match = [n for n in names if tname == f"serving_default_{n}:0" or tname == n]
            order.append(match[0] if match else names[len(order)])
        return order

    def _dataset(self) -> Iterator[list[np.ndarray]]:
        for item in self._items:
            yield [item[n] for n in self._input_order]

    @staticmethod
    def _op_outputs(flat: FlatModel) -> tuple[str, ...]:
        sg = flat.main
        return tuple(sg.tensors[i].name for op in sg.operators for i in op.outputs if i >= 0)

    @quiet_native_logs()
    def report(self) -> LayerReport:
        """Measure every quantized op's error on the calibration samples; worst first."""
        import tensorflow as tf

        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"sqnr": _sqnr, "noise": _noise, "max_error": _max_error})
        with _quiet():
            debug_model = self.debugger.get_debug_quantized_model()
            runner = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=debug_model, debug_dataset=self._dataset, debug_options=options)
            runner.run()
        stats = runner.layer_statistics or {}
        flat = read_flat_model(debug_model)
        sg = flat.main
        producer = {t: op for op in sg.operators for t in op.outputs}
        known = set(self.node_names)
        rows = []
        position = 0
        for op in sg.operators:
            if op.opcode != "CUSTOM" or op.custom_code != _VERIFY:
                continue
            key = sg.tensors[op.outputs[0]].name
            q_index, f_index = op.inputs[0], op.inputs[1]
            qt = sg.tensors[q_index]
            metrics = stats.get(key)
            if metrics is None:
                continue
            name = self._node_name(qt.name, sg.tensors[f_index].name, known)
            src = producer.get(q_index)
            scale = float(qt.quantization.scale[0]) if qt.quantization.scale else 0.0
            noise, sqnr = float(metrics["noise"]), float(metrics["sqnr"])
            if not math.isfinite(sqnr):  # every sample's output was all zero
                sqnr = _SQNR_CAP
            rows.append(LayerError(
                name=name, op=src.opcode if src is not None else "?",
                layer=self.layer_of(name) if self.layer_of(name) != name else "-",
                position=position, rmse=math.sqrt(max(noise, 0.0)), scale=scale, sqnr_db=sqnr,
                max_abs_error=float(metrics["max_error"]), elements=int(metrics["num_elements"])))
            position += 1
        rows.sort(key=lambda r: (r.sqnr_db, -r.rmse_over_scale))
        return LayerReport(self.loaded.name, self.samples, tuple(rows))

    @staticmethod
    def _node_name(quant_name: str, float_name: str, known: set[str]) -> str:
        """The float model's name for a quantized tensor (the debug model appends a digit)."""
        for cand in (quant_name[:-1], float_name, quant_name, float_name[:-1]):
            if cand in known:
                return cand
        return quant_name

    def layer_of(self, node: str) -> str:
        """The Keras layer an op output belongs to, where its name tells (else the name itself)."""
        obj = self.loaded.obj
        names = [getattr(x, "name", "") for x in getattr(obj, "layers", [])]
        found = _guess_layer(node, names, str(getattr(obj, "name", "")))
        return node if found == "-" else found

    def consumers(self, nodes: Sequence[str]) -> tuple[str, ...]:
        """Output names of the ops in the calibrated model that read any of ``nodes``."""
        flat = read_flat_model(self.calibrated_model)
        sg = flat.main
        index = {t.name: t.index for t in sg.tensors}
        wanted = {index[n] for n in nodes if n in index}
        found: list[str] = []
        for op in sg.operators:
            if wanted.intersection(op.inputs):
                found.extend(sg.tensors[i].name for i in op.outputs if i >= 0)
        return tuple(dict.fromkeys(found))

    @quiet_native_logs()
    def quantized_model(self, float_nodes: Sequence[str] = (), *, fully_quantize: bool = False) -> bytes:
        """The int8 model with the ops writing ``float_nodes`` kept in float (no re-calibration).

        ``fully_quantize`` makes the model's inputs and outputs int8 too.
        """
        import tensorflow as tf

        unknown = [n for n in float_nodes if n not in self.node_names]
        if unknown:
            raise InvalidArgumentError("not an op output of the model", argument="float_nodes",
                                       received=unknown[:3], fix="use names from LayerReport (LayerError.name)")
        with _quiet():
            self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=list(float_nodes) or None, fully_quantize=fully_quantize)
            return bytes(self.debugger.get_nondebug_quantized_model())


@renamed_arguments(show_progress="progress")
def debug(model: Any, calibration: Any, *, samples: int = 100, seed: int = 0,
          preprocess: Preprocess | None = None, batch_size: int | None = None,
          progress: bool | None = None) -> LayerReport:
    """Per-layer int8 quantization error of ``model`` on ``samples`` calibration samples, worst first.

    Args:
        model: a Keras 3 / tf_keras model, a ``.keras``/``.h5`` file or a SavedModel folder.
        calibration: an image folder, arrays, ``.npy``/``.npz``, a ``tf.data.Dataset`` or an iterable.
        samples: how many samples to calibrate and measure with (a seeded random subset).
        seed: seed of that subset.
        preprocess: how images become input (default: derived from the input shape, pixels to [0, 1]).
        batch_size: fix a dynamic batch dimension.
        progress: progress on stderr (default: on unless ``EDGEQ_PROGRESS=0``).

    Raises:
        InvalidArgumentError, ModelLoadError, CalibrationError, ConversionError.
    """
    session = QuantDebugSession(model, calibration, samples=samples, seed=seed, preprocess=preprocess,
                                batch_size=batch_size, progress=progress)
    return session.report()

