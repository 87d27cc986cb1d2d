"""A model as C/C++ sources for a TFLM firmware: :func:`export_c`.

Four files, named after ``name``:

- ``<name>_model.c`` / ``<name>_model.h``: the ``.tflite`` as a 16-byte aligned ``const
  unsigned char`` array (it stays in flash), its length, and the measured arena size
  (``<NAME>_TENSOR_ARENA_SIZE``, TFLM's recording allocator's total on this host);
- ``<name>_op_resolver.h``: a ``tflite::MicroMutableOpResolver<N>`` type and a function that
  registers exactly the model's operators, by the ``Add...`` names of
  :data:`edgeq.targets.mcu.ops.RESOLVER_CALLS`;
- ``<name>_main.cc``: a minimal ``main``: load, allocate, fill input 0, invoke, read output 0.

Nothing is written when any file exists, unless ``overwrite``; each file is written atomically.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgeq_device.results.fileio import atomic_write_bytes

from edgeq.errors import InvalidArgumentError, OutputExistsError
from edgeq.targets.mcu.check import MCUReport, check_mcu
from edgeq.targets.mcu.ops import resolver_calls

__all__ = ["CExport", "c_identifier", "export_c"]

ALIGNMENT = 16
"""The array's alignment in bytes: TFLM's own buffer alignment (``MicroArenaBufferAlignment``)."""


@dataclass(frozen=True)
class CExport:
    """What :func:`export_c` wrote."""

    files: tuple[Path, ...]
    symbol: str
    model_bytes: int
    arena_bytes: int
    resolver_ops: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return (f"{self.symbol}: {self.model_bytes:,}-byte array, arena {self.arena_bytes:,} bytes, "
                f"{len(self.resolver_ops)} ops registered ({', '.join(m for _, m in self.resolver_ops)}); "
                f"wrote {', '.join(p.name for p in self.files)}")


def c_identifier(name: str) -> str:
    """``name`` as a C identifier: letters, digits and ``_``, not starting with a digit."""
    ident = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "model"
    return f"m_{ident}" if ident[0].isdigit() else ident


def _array(data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 12]) for i in range(0, len(data), 12)]
    return ",\n  ".join(rows)


def export_c(model: bytes, folder: str | os.PathLike[str], name: str = "model", *, report: MCUReport | None = None,
             overwrite: bool = False) -> CExport:
    """Write ``model`` as C sources for TFLM into ``folder`` (see the module's text).

    Args:
        model: the ``.tflite`` bytes.
        folder: where the files go (made if missing).
        name: the files' and symbols' stem (made a C identifier).
        report: the model's :class:`~edgeq.targets.mcu.check.MCUReport` if already measured
            (else it is measured now, in TFLM's interpreter).
        overwrite: replace existing files.

    Raises:
        InvalidArgumentError: TFLM cannot run the model (the ops are named), or an op has no
            known ``MicroMutableOpResolver`` call.
        OutputExistsError: a file exists and ``overwrite`` is False (nothing is written).
    """
    ident = c_identifier(name)
    out = Path(folder)
    stems = [f"{ident}_model.h", f"{ident}_model.c", f"{ident}_op_resolver.h", f"{ident}_main.cc"]
    existing = [str(out / f) for f in stems if (out / f).exists()]
    if existing and not overwrite:
        raise OutputExistsError("C sources exist already", argument="folder", received=existing,
                                fix="pass overwrite=True (--force) or choose another folder or name")
    rep = report if report is not None else check_mcu(model, reference=False)
    if not rep.supported:
        raise InvalidArgumentError("TFLM cannot run this model, so no C sources were written", argument="model",
                                   received=rep.summary(), fix="replace the operators named, then export again")
    calls = resolver_calls(rep.ops)
    unknown = [op for op, call in calls if call is None]
    if unknown:
        raise InvalidArgumentError("no MicroMutableOpResolver call is known for these ops", argument="model",
                                   received=unknown, fix="register them by hand in the generated resolver")
    upper = ident.upper()
    files = {
        out / f"{ident}_model.h": _header(ident, upper, len(model), rep),
        out / f"{ident}_model.c": _source(ident, model),
        out / f"{ident}_op_resolver.h": _resolver(ident, upper, [(op, str(c)) for op, c in calls]),
        out / f"{ident}_main.cc": _main(ident, upper),
    }
    written = tuple(atomic_write_bytes(p, text.encode(), overwrite=overwrite, argument="folder")
                    for p, text in files.items())
    return CExport(written, f"g_{ident}_model", len(model), rep.arena_needed,
                   tuple((op, str(c)) for op, c in calls))


def _header(ident: str, upper: str, size: int, rep: MCUReport) -> str:
    return f"""/* {ident}: a TensorFlow Lite model for TFLM, written by edgeq. */
#ifndef {upper}_MODEL_H_
#define {upper}_MODEL_H_

#ifdef __cplusplus
extern "C" {{
#endif

/* The .tflite flatbuffer, {size} bytes, {ALIGNMENT}-byte aligned. */
extern const unsigned char g_{ident}_model[];
extern const unsigned int g_{ident}_model_len;

/* Tensor arena in bytes, measured in TFLM {rep.tflm_version} on a 64-bit host: the recording
   allocator's total {rep.arena_bytes} (head {rep.arena_head}, tail {rep.arena_tail}) and the smallest
   arena that ran the model, {rep.smallest_arena}; the larger of the two. A 32-bit board's pointers
   are smaller, so this is enough there. Align the arena to {ALIGNMENT} bytes. */
#define {upper}_TENSOR_ARENA_SIZE {rep.arena_needed}

#ifdef __cplusplus
}}
#endif

#endif /* {upper}_MODEL_H_ */
"""


def _source(ident: str, model: bytes) -> str:
    return f"""/* {ident}: the .tflite flatbuffer as a constant array (kept in flash), written by edgeq. */
#include "{ident}_model.h"

_Alignas({ALIGNMENT}) const unsigned char g_{ident}_model[] = {{
  {_array(model)}
}};
const unsigned int g_{ident}_model_len = {len(model)};
"""


def _resolver(ident: str, upper: str, calls: list[tuple[str, str]]) -> str:
    adds = "\n".join(f"  if (resolver.{call}() != kTfLiteOk) return kTfLiteError;  // {op}" for op, call in calls)
    if any(op == "TFLM_DECODE" for op, _ in calls):
        adds = ("  // The model's weights are compressed: TFLM must be built with its compression support\n"
                "  // (USE_TFLM_COMPRESSION), which TFLM_DECODE needs.\n" + adds)
    camel = "".join(part.capitalize() for part in ident.split("_"))
    return f"""// {ident}: exactly the operators the model uses, registered with TFLM. Written by edgeq.
#ifndef {upper}_OP_RESOLVER_H_
#define {upper}_OP_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

using {camel}OpResolver = tflite::MicroMutableOpResolver<{len(calls)}>;

inline TfLiteStatus Register{camel}Ops({camel}OpResolver& resolver) {{
{adds}
  return kTfLiteOk;
}}

#endif  // {upper}_OP_RESOLVER_H_
"""


def _main(ident: str, upper: str) -> str:
    camel = "".join(part.capitalize() for part in ident.split("_"))
    return f"""// {ident}: load the model, run it once, read the output. A starting point, written by edgeq.
#include <cstdint>
#include <cstring>

#include "{ident}_model.h"
#include "{ident}_op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {{
alignas(16) uint8_t tensor_arena[{upper}_TENSOR_ARENA_SIZE];
}}  // namespace

int main() {{
  const tflite::Model* model = tflite::GetModel(g_{ident}_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) return 1;

  static {camel}OpResolver resolver;
  if (Register{camel}Ops(resolver) != kTfLiteOk) return 2;

  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, sizeof(tensor_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) return 3;

  TfLiteTensor* input = interpreter.input(0);
  std::memset(input->data.raw, 0, input->bytes);  // put your sensor data here, quantized like input->params

  if (interpreter.Invoke() != kTfLiteOk) return 4;

  TfLiteTensor* output = interpreter.output(0);
  int best = 0;  // e.g. a classifier's arg-max
  for (int i = 1; i < static_cast<int>(output->bytes); ++i) {{
    if (output->type == kTfLiteInt8 && output->data.int8[i] > output->data.int8[best]) best = i;
  }}
  return best >= 0 ? 0 : 5;
}}
"""
