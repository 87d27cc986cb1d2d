"""int4 mode: 4-bit per-channel weights on convolutions and fully-connected layers, float activations.

:func:`int4_model` takes a float ``.tflite`` and returns a standard ``.tflite`` with INT4
weight tensors. litert-quantizer writes the file (its ``dynamic_wi4_afp32`` recipe:
per-channel symmetric 4-bit weights in ``[-7, 7]`` on ``CONV_2D`` and
``FULLY_CONNECTED``; activations stay float and the runtime quantizes them on the fly).
With :attr:`~edgeq.quantize.lowbit.rounding.Rounding.OPTIMIZED` rounding, edgeq then replaces
each nearest-rounded weight tensor (its packed nibbles and per-channel scales) by the
rounding :func:`~edgeq.quantize.lowbit.rounding.optimize_int4` chose on the layer's real inputs,
layer after layer in graph order: the float model's input ``x`` of the layer and the input
``x̂`` it gets in the model whose earlier layers are already 4-bit give the objective
``Σ |W x − Ŵ x̂|² + λ|Ŵ − W|²``, a quadratic ``(ŵ − w*)ᵀ H (ŵ − w*)`` per channel with
``H = E[x̂ x̂ᵀ] + λ`` and ``w* = H⁻¹ (E[x̂ xᵀ] w + λ w)``: each layer makes up for part of the
error the earlier ones left in its input. The float bias then takes the mean output shift
``W E[x] − Ŵ E[x̂]``.

``x`` comes from one run of the float model; ``x̂`` from one pass over the partly-4-bit model,
operator by operator (:class:`~edgeq.quantize.lowbit.stepwise.StepwiseRun`): each layer is
rounded when the pass reaches it, so what it sees comes from the already-rounded layers before
it — the inputs a whole-model run per layer gives, bit for bit, at one pass instead of one per
layer (linear in depth). Rounding layers against a model whose earlier layers were not yet
rounded makes a layer compensate an error that then changes (agreement 88% → 53% on fer's
emotion model): the order matters, not only the inputs.

λ is 30% of the mean input energy (the mean of ``diag E[x̂ x̂ᵀ]``) and ``H`` is estimated from
at most 32768 input rows (patches) per layer: a ridge that strong keeps weights the calibration
barely excites near their float values. On fer's emotion model (trained elsewhere; 128
calibration photo crops, against float on two sets of 300 held-out crops) λ = 1% with 8192 rows
gave 88.3% / 86.3% arg-max agreement (14.8 / 15.0 dB SQNR); λ = 30% 91.7% / 89.3% (17.7 / 17.6
dB), its SQNR the highest of 1-100% on both sets; with 32768 rows 90.7% / 91.3% (17.8 / 18.1
dB). int8: 94%, 22.2 dB.

On a digits ResNet-8 (held out, against float) the sequential rounding took arg-max agreement
from 90.6% (nearest) to 95.7% with float inputs alone and to 99.0% sequentially (SQNR 14.0 → 20.9
→ 31.8 dB; int8: 98.8%, 29.1 dB; measured with λ = 1%).

Why float activations: on LiteRT 2.3 both ``dynamic_wi4_afp32`` and a static int4-weight /
int8-activation model run; on a digits ResNet-8 the static one agreed less with the float
model (95.6% vs 98.5% arg-max, 14.8 vs 15.5 dB) and was larger (58.4 vs 53.5 KB) with the
same nearest rounding, since int8 activations add their own error to the 4-bit weights'.
Depthwise convolutions keep float weights (the recipe does not quantize them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from edgeq.errors import QuantizationError
from edgeq.quantize.flatbuffer import read_model, write_model
from edgeq.quantize.lowbit.rounding import Rounding, RoundingReport, optimize_int4
from edgeq.quantize.lowbit.stepwise import StepwiseRun

__all__ = ["INT4_TYPE", "Int4Model", "int4_model", "int4_tensors"]

INT4_TYPE = 17
"""The TFLite schema's ``TensorType.INT4``."""

_CONV, _FC = 3, 9  # BuiltinOperator CONV_2D, FULLY_CONNECTED
_MAX_ROWS = 32768  # input rows (patches) kept per layer for H
_DAMP = 0.3  # λ relative to the mean input energy


@dataclass(frozen=True)
class Int4Model:
    """The int4 ``.tflite`` bytes and, per 4-bit layer, how its rounding did on the calibration inputs."""

    model_bytes: bytes
    rounding: Rounding
    layers: tuple[RoundingReport, ...]

    @property
    def weights(self) -> int:
        """How many weights are 4-bit."""
        return sum(layer.weights for layer in self.layers)


def _opcode(model: object, op: object) -> int:
    code = model.operatorCodes[op.opcodeIndex]  # type: ignore[attr-defined]
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def int4_tensors(model_bytes: bytes) -> list[str]:
    """Names of the INT4 tensors of a ``.tflite`` (empty for a model without 4-bit weights)."""
    model = read_model(model_bytes)
    return [t.name.decode() for sg in model.subgraphs for t in sg.tensors  # type: ignore[attr-defined]
            if t.type == INT4_TYPE]


def unpack_int4(data: np.ndarray, count: int) -> np.ndarray:
    """Signed 4-bit values from packed bytes (element ``2i`` in the low nibble of byte ``i``)."""
    d = np.asarray(data, np.uint8)
    out = np.empty(d.size * 2, np.int8)
    out[0::2], out[1::2] = d & 15, d >> 4
    out[out > 7] -= 16
    return out[:count]


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Pack signed 4-bit values two to a byte, as :func:`unpack_int4` reads them."""
    flat = np.asarray(q, np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    u = (flat.astype(np.int16) & 15).astype(np.uint8)
    return (u[0::2] | (u[1::2] << 4)).astype(np.uint8)


def _quantize_with_litert(float_bytes: bytes) -> bytes:
    from litert_quantizer import quantizer, recipe

    q = quantizer.Quantizer(bytearray(float_bytes))
    q.load_quantization_recipe(recipe.dynamic_wi4_afp32())
    return bytes(q.quantize(enable_progress_report=False).quantized_model)  # type: ignore[arg-type]


def _patches(x: np.ndarray, kh: int, kw: int, options: object) -> np.ndarray:
    """The ``[N, kh*kw*cin]`` rows a CONV_2D filter ``[cout, kh, kw, cin]`` multiplies (im2col)."""
    sh, sw = options.strideH, options.strideW  # type: ignore[attr-defined]
    dh, dw = max(options.dilationHFactor, 1), max(options.dilationWFactor, 1)  # type: ignore[attr-defined]
    if options.padding == 0:  # type: ignore[attr-defined]  # SAME
        h, w = x.shape[1:3]
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        ph = max((-(-h // sh) - 1) * sh + eh - h, 0)
        pw = max((-(-w // sw) - 1) * sw + ew - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]  # [N, OH, OW, C, kh, kw]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * x.shape[-1])


def _rows(values: list[np.ndarray], op: object, shape: tuple[int, ...]) -> np.ndarray:
    """The rows ``[N, inputs]`` a layer's weights multiply, from its input tensor's values."""
    x = np.concatenate(values).astype(np.float32)
    if len(shape) == 4:
        return _patches(x, shape[1], shape[2], op.builtinOptions)  # type: ignore[attr-defined]
    return x.reshape(-1, int(np.prod(shape[1:])))


def _layer_inputs(float_bytes: bytes, samples: Iterable[dict[str, np.ndarray]],
                  wanted: set[str]) -> dict[str, list[np.ndarray]]:
    """The float model's values of the ``wanted`` tensors (by name) over the samples."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # it warns that keeping every tensor costs memory: wanted here
        warnings.simplefilter("ignore", UserWarning)
        it = Interpreter(model_content=float_bytes, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    sig = it.get_signature_list()
    key = next(iter(sig)) if sig else None
    runner_inputs = it.get_signature_runner(key).get_input_details() if key else {}
    details = it.get_input_details()
    found: dict[str, list[np.ndarray]] = {n: [] for n in wanted if n in index}
    for sample in samples:
        for pos, (name, value) in enumerate(sample.items()):
            idx = runner_inputs[name]["index"] if name in runner_inputs else details[pos]["index"]
            it.set_tensor(idx, np.asarray(value, np.float32))
        it.invoke()
        for n in found:
            found[n].append(np.array(it.get_tensor(index[n])))
    return found


def _round_layer(model: object, op: object, t: object, w2: np.ndarray, x: np.ndarray, seen: np.ndarray,
                 rng: np.random.Generator, rounding: Rounding, reports: list[RoundingReport]) -> None:
    """Round layer ``op``'s weights ``t`` in ``model`` for its float inputs ``x`` and partly-4-bit inputs ``seen``."""
    sg = model.subgraphs[0]  # type: ignore[attr-defined]
    name, shape = t.name.decode(), tuple(int(d) for d in t.shape)  # type: ignore[attr-defined]
    pick = rng.choice(len(x), _MAX_ROWS, replace=False) if len(x) > _MAX_ROWS else slice(None)
    x, seen = x[pick].astype(np.float64), seen[pick].astype(np.float64)
    h = seen.T @ seen / len(seen)
    damp = _DAMP * float(np.mean(np.diag(h))) * np.eye(len(h)) + 1e-12 * np.eye(len(h))
    # min |W x − Ŵ x̂|² + damp |Ŵ − W|²  ==  min (ŵ − w*)ᵀ (H + damp) (ŵ − w*) per channel
    target = np.linalg.solve(h + damp, (seen.T @ x / len(x)) @ w2.T + damp @ w2.T).T
    q, scales, report = optimize_int4(target, h + damp, name, rounding)
    reports.append(report)
    model.buffers[t.buffer].data = pack_int4(q)  # type: ignore[attr-defined]
    t.quantization.scale = scales.astype(np.float32)  # type: ignore[attr-defined]
    t.quantization.zeroPoint = np.zeros(len(scales), np.int64)  # type: ignore[attr-defined]
    if len(op.inputs) > 2 and op.inputs[2] >= 0:  # type: ignore[attr-defined]
        bt = sg.tensors[op.inputs[2]]  # type: ignore[attr-defined]
        buf = model.buffers[bt.buffer]  # type: ignore[attr-defined]
        if bt.type == 0 and buf.data is not None and len(buf.data) == 4 * shape[0]:
            bias = np.frombuffer(bytes(bytearray(buf.data)), np.float32).astype(np.float64)
            shift = w2 @ x.mean(axis=0) - (scales[:, None] * q) @ seen.mean(axis=0)
            buf.data = np.frombuffer((bias + shift).astype(np.float32).tobytes(), np.uint8)


def int4_model(float_bytes: bytes, samples: Iterable[dict[str, np.ndarray]] | None = None,
               rounding: Rounding = Rounding.OPTIMIZED,
               progress: Callable[[int, int], None] | None = None) -> Int4Model:
    """The float ``.tflite`` ``float_bytes`` with 4-bit weights on its convolutions and dense layers.

    Args:
        float_bytes: a float32 ``.tflite`` (as the TFLite converter writes it).
        samples: calibration inputs, dicts keyed by the model's input names (needed for
            ``optimized`` rounding).
        rounding: ``nearest`` (litert-quantizer's own rounding) or ``optimized``.
        progress: called with ``(layers done, layers)`` as the layers are optimised.

    Raises:
        QuantizationError: the model has no convolution or fully-connected layer to give
            4-bit weights, or ``optimized`` rounding without calibration samples.
    """
    quantized = _quantize_with_litert(float_bytes)
    model = read_model(quantized)
    sg = model.subgraphs[0]  # type: ignore[attr-defined]
    layers = [(op, sg.tensors[op.inputs[1]]) for op in sg.operators
              if _opcode(model, op) in (_CONV, _FC) and len(op.inputs) > 1 and op.inputs[1] >= 0
              and sg.tensors[op.inputs[1]].type == INT4_TYPE]
    if not layers:
        raise QuantizationError(
            "the model has no convolution or fully-connected layer that can take 4-bit weights",
            argument="mode", received="int4",
            fix="use int4 on a model with Conv2D or Dense layers, or another mode (int8, dynamic, float16)")
    reports: list[RoundingReport] = []
    if rounding is Rounding.NEAREST:
        for _op, t in layers:
            reports.append(RoundingReport(t.name.decode(), int(np.prod(t.shape))))
        return Int4Model(quantized, rounding, tuple(reports))
    data = list(samples or [])
    if not data:
        raise QuantizationError("optimized 4-bit rounding needs calibration samples", argument="calibration",
                                received=None, fix="pass calibration= data, or rounding='nearest'")
    fmodel = read_model(float_bytes)
    fsg = fmodel.subgraphs[0]  # type: ignore[attr-defined]
    fweights = {t.name.decode(): t for t in fsg.tensors}
    wanted = {sg.tensors[op.inputs[0]].name.decode() for op, _ in layers}
    inputs = _layer_inputs(float_bytes, data, wanted)
    rng = np.random.default_rng(0)
    position = {id(op): t for op, t in layers}
    done = 0
    # One pass over the partly-4-bit model, operator by operator: each layer's input comes from
    # the layers before it, already rounded (linear in depth; a whole-model run per layer gave
    # the same inputs at a pass per layer).
    run = StepwiseRun(model, data)
    for _pos, op in run:
        t = position.get(id(op))
        if t is None:
            continue
        name, in_name = t.name.decode(), sg.tensors[op.inputs[0]].name.decode()
        ft = fweights[name]
        w = np.frombuffer(bytes(bytearray(fmodel.buffers[ft.buffer].data)), np.float32)  # type: ignore[attr-defined]
        shape = tuple(int(d) for d in t.shape)
        w2 = w.reshape(shape[0], -1).astype(np.float64)
        x = _rows(inputs[in_name], op, shape)
        # What the layer sees in the model with the earlier layers already 4-bit: their error is
        # in its input, and its own rounding can make up for part of it.
        seen = x if done == 0 else _rows(run.values(op.inputs[0]), op, shape)
        _round_layer(model, op, t, w2, x, seen, rng, rounding, reports)
        done += 1
        if progress is not None:
            progress(done, len(layers))
    return Int4Model(write_model(model), rounding, tuple(reports))
