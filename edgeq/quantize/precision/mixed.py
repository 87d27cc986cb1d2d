"""Mixed precision: chosen layers with 16-bit activations (a16w8) beside int8 ops, in one ``.tflite``.

int8 loses most on small CNNs where an activation tensor is rounded to 256 steps;
int16 activations (a16w8: int16 activations, int8 weights) keep them but cost
reference (slower) kernels. Spending them only on the worst layers keeps the model
the int8 size and nearly the int8 speed.

The route: edgeq's float32 ``.tflite`` is quantized by litert-quantizer (Google's
quantizer for ``.tflite`` files) with an a8w8 recipe for every op and an a16w8 recipe
for the chosen ops, then edgeq's metadata is embedded. Ranges come from one plain
min/max pass over the calibration samples (``qsv_utils.min_max_update``), the
converter's own rule (litert-quantizer's default moving average would clip the
ranges to the last few dozen samples), then replaced by the ranges the converter's
calibration recorded (:func:`converter_ranges`, from the quantization debugger's
calibrated model) where it has them: the converter widens some ranges (the inputs of
an ADD, measured on a ResNet-8) and its choice gives the better int8 model. With no
16-bit layer the result is then the converter's int8 model, output for output (tested).

What gets 16 bits: for each chosen op (named by its output tensor, as
:class:`~edgeq.quantize.layer_error.LayerError` names it, or by its Keras layer),
the op and the ops reading its output, followed through ops that only move values
(pooling by max, reshape, pad, ...) up to the first op that computes from them. The
damaged tensor is then read at 16 bits and re-quantized to int8 only after the next
computing op, where the int8 model rounded anyway. An op without a 16-bit kernel in
LiteRT (:data:`A16_OPS` says which have one), and with int8 I/O an op writing a model
output, stays int8 and is listed in :attr:`MixedPlan.kept_int8`; never a silently different model: the result must load
and run one sample in this machine's runtime.

Only :func:`_litert_quantize` calls litert-quantizer, so its upgrades touch one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import io
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import FlatModel, read_flat_model
from edgeq_device.run.runtime import ModelRunner

from edgeq.errors import EdgeqError, InvalidArgumentError, QuantizationError
from edgeq.quantize.flatbuffer import read_model, write_model
from edgeq.quantize.modes import IOType
from edgeq.quantize.result import ConversionResult, int8_variant

__all__ = ["A16_OPS", "PASS_THROUGH_OPS", "MixedPlan", "calibrated_ranges", "converter_ranges", "int16_tensors", "mixed_result",
           "plan_a16", "quantize_mixed", "quantize_runnable", "resolve_nodes"]

A16_OPS: frozenset[str] = frozenset({
    "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CONCATENATION", "CONV_2D", "TRANSPOSE_CONV", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "GELU", "LOGISTIC", "MEAN", "MUL", "RESHAPE", "RSQRT", "SOFTMAX", "SPLIT", "STRIDED_SLICE",
    "SUB", "TANH", "TRANSPOSE", "SLICE", "SUM", "SELECT", "SELECT_V2", "PAD", "MAX_POOL_2D", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "GATHER_ND", "PACK", "UNPACK", "DIV", "BROADCAST_TO", "SQRT", "GATHER", "MAXIMUM",
    "PADV2", "REDUCE_MIN", "MIRROR_PAD", "RELU",
})
"""TFLite ops litert-quantizer 0.11 quantizes as a16w8 (its default policy's ``static_wi8_ai16``),
each with an int16 kernel in LiteRT. Others (HARD_SWISH, SQUARED_DIFFERENCE, SPACE_TO_DEPTH,
RELU6, ...) stay int8."""

PASS_THROUGH_OPS: frozenset[str] = frozenset({
    "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE", "STRIDED_SLICE",
    "SLICE", "SPLIT", "GATHER", "RELU",
})
"""Ops that only move or select values: a 16-bit tensor is followed through them to the op computing from it."""

_NOT_ACTIVATION_OPS = frozenset({"SHAPE"})


@dataclass(frozen=True)
class MixedPlan:
    """Which ops get 16-bit activations, and which asked for could not.

    Attributes:
        chosen: the ops asked for, by output tensor name.
        a16_nodes: every op given 16-bit activations (the chosen, their readers and the ops
            values pass through), by output tensor name, in model order.
        kept_int8: ``(output tensor, op type)`` of the ops without a 16-bit kernel, kept int8.
    """

    chosen: tuple[str, ...]
    a16_nodes: tuple[str, ...]
    kept_int8: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (stored in the model's metadata as ``extra["a16"]``)."""
        return {"chosen": list(self.chosen), "a16_nodes": list(self.a16_nodes),
                "kept_int8": [list(k) for k in self.kept_int8]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixedPlan:
        """The plan :meth:`to_dict` wrote (e.g. a model's ``metadata.extra["a16"]``).

        Raises:
            InvalidArgumentError: not such a dict.
        """
        try:
            return cls(tuple(map(str, data["chosen"])), tuple(map(str, data["a16_nodes"])),
                       tuple((str(n), str(op)) for n, op in data.get("kept_int8", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"not a 16-bit plan ({type(exc).__name__}: {exc})", argument="data",
                                       received=type(data).__name__, fix="give the dict MixedPlan.to_dict() wrote") from None

    def __str__(self) -> str:
        kept = "; kept int8: " + ", ".join(f"{n.split(';')[0]} ({op})" for n, op in self.kept_int8)
        return (f"16-bit activations on {len(self.a16_nodes)} op(s) for {len(self.chosen)} chosen: "
                + ", ".join(n.split(";")[0] for n in self.a16_nodes) + (kept if self.kept_int8 else ""))

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"


def _op_nodes(flat: FlatModel) -> list[tuple[str, str, list[int], list[int]]]:
    """``(first output name, op type, inputs, outputs)`` of each op of the main graph, in order."""
    sg = flat.main
    return [(sg.tensors[op.outputs[0]].name, op.opcode, [i for i in op.inputs if i >= 0],
             [i for i in op.outputs if i >= 0]) for op in sg.operators if op.outputs and op.outputs[0] >= 0]


def resolve_nodes(flat: FlatModel, names: Sequence[str], layer_of: Callable[[str], str] | None = None
                  ) -> tuple[str, ...]:
    """Op output names for ``names``: op output tensor names, or Keras layer names (every op of the layer).

    Raises:
        InvalidArgumentError: a name that is neither (the message lists some that are).
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError("must be a list of layer names", argument="a16_layers", received=names,
                                   fix="give e.g. a16_layers=['conv2d_1'] (names from edgeq debug)")
    ops = [n for n, op, _, _ in _op_nodes(flat) if op not in _NOT_ACTIVATION_OPS]
    layers = {n: layer_of(n) for n in ops} if layer_of is not None else {}
    found: list[str] = []
    unknown = []
    for name in names:
        hits = [n for n in ops if n == name] or [n for n in ops if layers.get(n) == name]
        if not hits:
            unknown.append(name)
        found.extend(hits)
    if unknown:
        known = list(dict.fromkeys(v for v in layers.values() if v not in ops)) or ops
        raise InvalidArgumentError("not a layer or op output of the model", argument="a16_layers",
                                   received=unknown, fix=f"use layer names from edgeq debug, e.g. {known[:6]}")
    return tuple(dict.fromkeys(found))


def plan_a16(model_bytes: bytes, nodes: Sequence[str], *, int8_outputs: bool = True) -> MixedPlan:
    """Give ``nodes`` (op output names of the float ``.tflite``) and their readers 16-bit activations.

    With ``int8_outputs`` (the default) an op writing one of the model's outputs stays int8
    (litert-quantizer would leave such an output int16 even for float I/O)
    (listed in ``kept_int8``), so the outputs are int8 as asked.

    Raises:
        InvalidArgumentError: a node that is not an op output of the model.
    """
    flat = read_flat_model(model_bytes)
    ops = _op_nodes(flat)
    by_name = {n: (op, ins, outs) for n, op, ins, outs in ops}
    unknown = [n for n in nodes if n not in by_name]
    if unknown:
        raise InvalidArgumentError("not an op output of the model", argument="a16_layers", received=unknown[:3],
                                   fix="use names from LayerReport (LayerError.name) or Keras layer names")
    readers: dict[int, list[str]] = {}
    for n, _, ins, _ in ops:
        for i in ins:
            readers.setdefault(i, []).append(n)
    wanted: set[str] = set()
    for node in nodes:
        wanted.add(node)
        if by_name[node][0] not in A16_OPS:  # its output cannot be int16: nothing for its readers to gain
            continue
        todo = list(by_name[node][2])
        while todo:
            for reader in readers.get(todo.pop(), []):
                op = by_name[reader][0]
                if reader in wanted or op in _NOT_ACTIVATION_OPS:
                    continue
                wanted.add(reader)
                if op in PASS_THROUGH_OPS:
                    todo.extend(by_name[reader][2])
    order = [n for n, *_ in ops]
    outputs = set(flat.main.outputs) if int8_outputs else set()

    def can(node: str) -> bool:
        op, _, outs = by_name[node]
        return op in A16_OPS and not outputs.intersection(outs)

    kept = tuple((n, by_name[n][0]) for n in order if n in wanted and not can(n))
    a16 = tuple(n for n in order if n in wanted and can(n))
    return MixedPlan(tuple(dict.fromkeys(nodes)), a16, kept)


def _scope(flat: FlatModel, node: str) -> str:
    """litert-quantizer's scope of the op writing ``node``: its output names joined by ``;``, then ``;``."""
    sg = flat.main
    for op in sg.operators:
        names = [sg.tensors[i].name for i in op.outputs if i >= 0]
        if names and names[0] == node:
            return ";".join(names) + ";"
    return node + ";"


def _signature_items(model_bytes: bytes, items: Sequence[dict[str, np.ndarray]]
                     ) -> tuple[str, list[dict[str, np.ndarray]]]:
    """The calibration samples keyed by the float ``.tflite``'s signature input names (by name, else by order)."""
    runner = ModelRunner(model_bytes)
    signatures = runner.interpreter.get_signature_list()
    key = next(iter(signatures), "serving_default")
    names = list(signatures.get(key, {}).get("inputs", [])) if signatures else []
    out = []
    for item in items:
        if set(item) == set(names) or not names:
            out.append(dict(item))
        else:
            out.append(dict(zip(names, item.values())))
    return key, out


def converter_ranges(calibrated_model: bytes) -> dict[str, tuple[float, float]]:
    """Each tensor's ``(min, max)`` as the converter's calibration recorded it in its calibrated model
    (:attr:`QuantDebugSession.calibrated_model <edgeq.quantize.layer_error.QuantDebugSession>`)."""
    model = read_model(calibrated_model)
    found: dict[str, tuple[float, float]] = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            q = t.quantization
            if q is not None and q.min is not None and q.max is not None and len(q.min) == 1 and len(q.max) == 1:
                name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
                found[name] = (float(q.min[0]), float(q.max[0]))
    return found


def _recipe(model_bytes: bytes, a16_scopes: Sequence[str], io_: IOType) -> Any:
    """litert-quantizer's Quantizer for ``model_bytes``: a8w8 everywhere, a16w8 on ``a16_scopes``."""
    from litert_quantizer import qtyping, quantizer

    every = qtyping.TFLOperationName.ALL_SUPPORTED
    qt = quantizer.Quantizer(bytearray(model_bytes))
    qt.add_static_config(".*", every, activation_num_bits=8, weight_num_bits=8)
    for scope in a16_scopes:
        qt.add_static_config("^" + re.escape(scope) + "$", every, activation_num_bits=16, weight_num_bits=8)
    if io_ is IOType.FLOAT:
        for end in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            qt.update_quantization_recipe(".*", end, algorithm_key="no_quantize")
    return qt


def calibrated_ranges(model_bytes: bytes, items: Sequence[dict[str, np.ndarray]], io_: IOType = IOType.FLOAT,
                      ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """litert-quantizer's calibration of ``model_bytes`` (its per-tensor statistics), done once.

    Plain min/max over ``items``, replaced by ``ranges`` where it names the tensor. The ranges
    do not depend on which ops get 16 bits, so one calibration serves every plan
    (``qsvs=`` of :func:`quantize_mixed`).
    """
    from litert_quantizer import calibrator
    from litert_quantizer.utils import qsv_utils

    qt = _recipe(model_bytes, (), io_)
    key, data = _signature_items(model_bytes, items)
    # Its tqdm bar (edgeq's own bar read the samples) and LiteRT's warning that keeping every
    # tensor is for debugging (it is what calibration needs) stay off the user's console.
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        calib = calibrator.Calibrator(bytes(model_bytes), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({key: data}, qt._recipe_manager)  # what Quantizer.calibrate passes it
    qsvs = dict(calib.get_model_qsvs())
    for name, (low, high) in (ranges or {}).items():
        if qsvs.get(name):
            qsvs[name] = {**qsvs[name], "min": np.full_like(qsvs[name]["min"], low),
                          "max": np.full_like(qsvs[name]["max"], high)}
    return qsvs


def _litert_quantize(model_bytes: bytes, items: Sequence[dict[str, np.ndarray]], a16_scopes: Sequence[str],
                     io_: IOType, ranges: Mapping[str, tuple[float, float]],
                     qsvs: Mapping[str, Any] | None = None) -> bytes:
    """The one call into litert-quantizer: a8w8 everywhere, a16w8 on ``a16_scopes``; plain min/max
    ranges, replaced by ``ranges`` where it names the tensor (or ``qsvs``, made by :func:`calibrated_ranges`)."""
    if qsvs is None:
        qsvs = calibrated_ranges(model_bytes, items, io_, ranges)
    qt = _recipe(model_bytes, a16_scopes, io_)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = qt.quantize({k: dict(v) for k, v in qsvs.items()}, enable_progress_bar=False,
                             enable_progress_report=False)
    return _keep_batch(model_bytes, _portable(bytes(result.quantized_model)))


def _keep_batch(float_model: bytes, raw: bytes) -> bytes:
    """``raw`` with the float model's dynamic batch dimension (``-1``) on its inputs and outputs again.

    litert-quantizer writes a new output tensor (the DEQUANTIZE to float) with a fixed shape.
    """
    src, model = read_model(float_model), read_model(raw)
    changed = False
    for sg_f, sg_q in zip(src.subgraphs, model.subgraphs):
        for ends_f, ends_q in ((sg_f.inputs, sg_q.inputs), (sg_f.outputs, sg_q.outputs)):
            for i_f, i_q in zip(list(ends_f), list(ends_q)):
                tf_, tq = sg_f.tensors[i_f], sg_q.tensors[i_q]
                sig = None if tf_.shapeSignature is None else [int(d) for d in tf_.shapeSignature]
                if sig and sig[0] == -1 and tq.shape is not None and len(tq.shape) == len(sig) and (
                        tq.shapeSignature is None or [int(d) for d in tq.shapeSignature] != sig):
                    tq.shapeSignature = sig
                    changed = True
    return write_model(model) if changed else raw


def _portable(raw: bytes) -> bytes:
    """The model with each int8 -> int16 QUANTIZE done as DEQUANTIZE then QUANTIZE (through float32).

    tflite-runtime 2.14 (the last release, what a Pi on numpy<2 runs) re-quantizes int16 to int8
    but not int8 to int16; int8 values are exact in float32, so the detour gives the same int16
    values, and every runtime runs it.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = read_model(raw)
    codes = model.operatorCodes
    quantize = [i for i, c in enumerate(codes)
                if fbu.get_builtin_code_from_operator_code(c) == fb.BuiltinOperator.QUANTIZE]
    deq = next((i for i, c in enumerate(codes)
                if fbu.get_builtin_code_from_operator_code(c) == fb.BuiltinOperator.DEQUANTIZE), None)
    changed = False
    for sg in model.subgraphs:
        ops = []
        for op in sg.operators:
            src, dst = (sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]) if op.opcodeIndex in quantize \
                else (None, None)
            if src is None or dst is None or src.type != fb.TensorType.INT8 or dst.type != fb.TensorType.INT16:
                ops.append(op)
                continue
            if deq is None:
                code = fb.OperatorCodeT()
                code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.DEQUANTIZE
                code.version = 1
                codes.append(code)
                deq = len(codes) - 1
            mid = fb.TensorT()
            mid.name, mid.type, mid.buffer = f"{src.name}_float", fb.TensorType.FLOAT32, 0
            mid.shape, mid.shapeSignature = src.shape, src.shapeSignature
            sg.tensors.append(mid)
            to_float = fb.OperatorT()
            to_float.opcodeIndex, to_float.inputs, to_float.outputs = deq, [int(op.inputs[0])], [len(sg.tensors) - 1]
            op.inputs = [len(sg.tensors) - 1]
            ops += [to_float, op]
            changed = True
        sg.operators = ops
    return write_model(model) if changed else raw


def int16_tensors(model_bytes: bytes) -> tuple[str, ...]:
    """Names of the int16 activation tensors written by ops (QUANTIZE's excepted), in model order."""
    flat = read_flat_model(model_bytes)
    sg = flat.main
    return tuple(sg.tensors[i].name for op in sg.operators if op.opcode not in ("QUANTIZE", "DEQUANTIZE")
                 for i in op.outputs if i >= 0 and sg.tensors[i].dtype == "INT16")


def quantize_mixed(float_model: bytes, items: Sequence[dict[str, np.ndarray]], plan: MixedPlan,
                   io_: IOType = IOType.FLOAT, ranges: Mapping[str, tuple[float, float]] | None = None,
                   qsvs: Mapping[str, Any] | None = None) -> tuple[bytes, float]:
    """The int8 model of ``float_model`` with ``plan``'s ops at 16-bit activations; and the seconds it took.

    ``items`` are the calibration samples (dicts keyed by input name, as
    :func:`~edgeq.quantize.calibration.representative_dataset` yields them). ``ranges``
    (tensor name -> ``(min, max)``, e.g. :func:`converter_ranges`) replace the plain min/max
    of those tensors: with the converter's, every int8 tensor gets the converter's scale.

    Raises:
        InvalidArgumentError: ``io_`` other than float or int8; QuantizationError: litert-quantizer
            failed, or its model does not run one sample in this machine's runtime.
    """
    if io_ not in (IOType.FLOAT, IOType.INT8):
        raise InvalidArgumentError("16-bit layers take float or int8 I/O", argument="io", received=io_.value,
                                   fix="use io='float' or io='int8'")
    if not items:
        raise InvalidArgumentError("no calibration sample", argument="calibration", received=0,
                                   fix="give calibration data with at least one sample")
    flat = read_flat_model(float_model)
    start = time.perf_counter()
    try:
        raw = _litert_quantize(float_model, items, [_scope(flat, n) for n in plan.a16_nodes], io_, ranges or {},
                               qsvs)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise QuantizationError(f"litert-quantizer failed: {str(exc).splitlines()[0][:300]}",
                                argument="a16_layers", received=list(plan.chosen)[:4],
                                fix="choose other layers, or convert in int16x8") from exc
    try:
        runner = ModelRunner(raw)
        first = items[0]
        runner.run([np.asarray(v) for v in first.values()])
    except (EdgeqError, ValueError, RuntimeError) as exc:
        raise QuantizationError(f"the mixed int8/int16 model does not run here: {str(exc).splitlines()[0][:300]}",
                                argument="a16_layers", received=list(plan.chosen)[:4],
                                fix="choose other layers, or convert in int16x8") from exc
    return raw, time.perf_counter() - start


_UNPREPARED = re.compile(r"Node number (\d+) \((\w+)\) failed to prepare")


def quantize_runnable(float_model: bytes, items: Sequence[dict[str, np.ndarray]], plan: MixedPlan,
                      io_: IOType = IOType.FLOAT, ranges: Mapping[str, tuple[float, float]] | None = None,
                      attempts: int = 8, qsvs: Mapping[str, Any] | None = None) -> tuple[bytes, MixedPlan]:
    """:func:`quantize_mixed`, moving back to int8 each 16-bit op the runtime cannot prepare.

    A 16-bit kernel can refuse its scales (LiteRT's depthwise convolution checks that its
    rescaling cannot overflow): that op is kept int8, added to the plan's ``kept_int8`` and
    the model quantized again, up to ``attempts`` times. Returns the model and the plan it has.

    Raises:
        QuantizationError: what :func:`quantize_mixed` raises for any other reason, or no op
            left at 16 bits.
    """
    flat = read_flat_model(float_model)
    for _ in range(attempts):
        try:
            return quantize_mixed(float_model, items, plan, io_, ranges, qsvs)[0], plan
        except QuantizationError as exc:
            found = _UNPREPARED.search(str(exc))
            if found is None:
                raise
            raw = _litert_quantize(float_model, items, [_scope(flat, n) for n in plan.a16_nodes], io_, ranges or {},
                                   qsvs)
            graph = read_flat_model(raw).main
            index = int(found.group(1))
            outs = graph.operators[index].outputs if index < len(graph.operators) else []
            names = {graph.tensors[i].name for i in outs if i >= 0}
            bad = [n for n in plan.a16_nodes if n in names]
            if not bad:
                raise
            plan = dataclasses.replace(plan, a16_nodes=tuple(n for n in plan.a16_nodes if n not in bad),
                                       kept_int8=plan.kept_int8 + tuple((n, found.group(2)) for n in bad))
            if not plan.a16_nodes:
                raise QuantizationError(
                    f"no chosen op runs at 16 bits here ({found.group(2)} refused its 16-bit scales)",
                    argument="a16_layers", received=list(plan.chosen)[:4],
                    fix="choose other layers, or convert in int16x8") from exc
    raise QuantizationError("the mixed int8/int16 model still does not run after keeping "
                            f"{len(plan.kept_int8)} op(s) int8", argument="a16_layers",
                            received=list(plan.chosen)[:4], fix="choose other layers, or convert in int16x8")


def mixed_result(base: ConversionResult, raw: bytes, plan: MixedPlan, io_: IOType, seconds: float,
                 samples: int, layers: Sequence[str] = ()) -> ConversionResult:
    """``raw`` (a mixed model of ``base``'s float model) as a result: ``base``'s metadata with the plan in it."""
    return int8_variant(base, raw, io_, {"a16_layers": list(layers), "a16": plan.to_dict(),
                                         "quantizer": "litert-quantizer"}, seconds, samples)
