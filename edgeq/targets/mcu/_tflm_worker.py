"""The child that runs a model in TFLM's interpreter (see :mod:`edgeq.targets.mcu.run`).

Run as a script by path (``python _tflm_worker.py FOLDER``), so only tflite-micro and numpy are
imported: not edgeq, not TensorFlow. ``FOLDER`` holds ``model.tflite``, ``inputs.npz`` (``x0``,
``x1``, ...: one array of samples per model input, samples on the first axis) and
``request.json`` (``max_arena``: the largest arena tried; ``alt_decompression``: bytes of separate
memory for decoded compressed tensors). The worker

1. loads the model with the largest arena and runs the first sample: TFLM's own error text
   (an operator it lacks, a type a kernel refuses) is the answer when that fails;
2. finds the smallest arena that loads and runs, by bisection between 1 byte and that arena;
3. runs every sample with the smallest arena and records what TFLM's recording allocator
   printed (total, head and tail bytes);

and writes ``result.json`` and ``outputs.npz`` (``y0``, ``y1``, ...). TFLM's messages go to
standard error at the C level: each call's are caught through a file on file descriptor 2.
A crash (a signal) ends this process only; the caller reports it.
"""

import json
import os
import re
import sys
import tempfile

# Run by path, this file's folder is sys.path[0]: drop it so that module names here cannot hide
# the packages tflite-micro imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402

_ALLOC = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class _Captured:
    """Everything written to file descriptor 2 while inside the ``with``, in :attr:`text`."""

    def __enter__(self) -> "_Captured":
        self._file = tempfile.TemporaryFile()
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()


def _attempt(runtime, model: bytes, arena: int, xs: list, sample: int, record: bool):  # type: ignore[no-untyped-def]
    """Load ``model`` with ``arena`` bytes and run ``sample``: ``(outputs or None, messages, allocations)``."""
    with _Captured() as cap:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=arena, alt_decompression_memory_size=_ALT[0])
            for i, x in enumerate(xs):
                interp.set_input(np.ascontiguousarray(x[sample:sample + 1]), i)
            interp.invoke()
            n_out = int(_count_outputs(model))
            outs = [np.array(interp.get_output(i)) for i in range(n_out)]
            if record:
                interp.print_allocations()
        except Exception as e:
            outs = None
            error = f"{type(e).__name__}: {e}"
        else:
            error = ""
    text = cap.text + (("\n" + error) if error else "")
    alloc = {k: int(v) for k, v in _ALLOC.findall(cap.text)}
    return outs, text.strip(), alloc


_N_OUT: dict = {}
_ALT = [0]  # bytes of separate memory TFLM decodes compressed tensors into (0: into the arena)


def _count_outputs(model: bytes) -> int:
    key = id(model)
    if key not in _N_OUT:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

        m = fb.Model.GetRootAsModel(model, 0)
        _N_OUT[key] = m.Subgraphs(0).OutputsLength()
    return _N_OUT[key]


def main(folder: str) -> int:
    """Run the request in ``folder``; 0 when it could be answered (the answer may be a refusal)."""
    with open(os.path.join(folder, "request.json")) as f:
        request = json.load(f)
    with open(os.path.join(folder, "model.tflite"), "rb") as f:
        model = f.read()
    with np.load(os.path.join(folder, "inputs.npz")) as z:
        xs = [z[f"x{i}"] for i in range(len(z.files))]
    from tflite_micro.python.tflite_micro import runtime

    result: dict = {"version": _version()}
    max_arena = int(request["max_arena"])
    _ALT[0] = int(request.get("alt_decompression") or 0)
    if request.get("dump_sample") is not None:
        return _dump(folder, runtime, model, xs, int(request["dump_sample"]), max_arena, result)
    outs, text, _ = _attempt(runtime, model, max_arena, xs, 0, record=False)
    if outs is None:
        result.update(ok=False, messages=text)
        _write(folder, result, None)
        return 0
    lo, hi = 0, max_arena  # lo fails (nothing runs in 0 bytes), hi runs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _attempt(runtime, model, mid, xs, 0, record=False)[0] is not None:
            hi = mid
        else:
            lo = mid
    smallest = hi
    outputs: list[list] = []
    alloc: dict = {}
    for s in range(len(xs[0]) if xs else 1):
        o, text, a = _attempt(runtime, model, smallest, xs, s, record=(s == 0))
        if o is None:  # the smallest arena ran sample 0 but not this one
            result.update(ok=False, messages=f"sample {s} failed with a {smallest}-byte arena: {text}")
            _write(folder, result, None)
            return 0
        alloc = alloc or a
        outputs.append(o)
    below = _attempt(runtime, model, smallest - 1, xs, 0, record=False)[1] if smallest > 1 else ""
    result.update(ok=True, smallest_arena=smallest, recorded=alloc, below_message=below[-500:])
    ys: dict = {f"y{i}": np.concatenate([o[i] for o in outputs]) for i in range(len(outputs[0]))}
    _write(folder, result, ys)
    return 0


def _dump(folder: str, runtime, model: bytes, xs: list, sample: int, arena: int, result: dict) -> int:  # type: ignore[no-untyped-def]
    """Run one sample keeping every tensor; write them as ``t<index>`` in ``tensors.npz``."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    n = fb.Model.GetRootAsModel(model, 0).Subgraphs(0).TensorsLength()
    with _Captured() as cap:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=arena,
                                                    intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
            for i, x in enumerate(xs):
                interp.set_input(np.ascontiguousarray(x[sample:sample + 1]), i)
            interp.invoke()
            tensors: dict = {}
            for i in range(n):
                try:
                    tensors[f"t{i}"] = np.asarray(interp.GetTensor(i, 0)["tensor_data"])
                except Exception:
                    continue
        except (RuntimeError, ValueError) as e:
            result.update(ok=False, messages=f"{type(e).__name__}: {e}")
            _write(folder, result, None)
            return 0
    np.savez(os.path.join(folder, "tensors.npz"), **tensors)
    result.update(ok=True, messages=cap.text[-500:])
    _write(folder, result, None)
    return 0


def _version() -> str:
    try:
        import tflite_micro

        return str(tflite_micro.__version__)
    except Exception:
        return ""


def _write(folder: str, result: dict, ys) -> None:  # type: ignore[no-untyped-def]
    if ys is not None:
        np.savez(os.path.join(folder, "outputs.npz"), **ys)
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
