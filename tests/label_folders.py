"""Class folders cut from the bundled digits, and the plain LiteRT loop their scores are checked against.

Shared by the label tests of edgeq-device (tests/device) and edgeq (tests/edgeq).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def subset(src: Path, dest: Path, keep: dict[int, str | None], per_class: int = 15,
           empty: tuple[str, ...] = ()) -> Path:
    """Copy ``per_class`` images of each digit in ``keep`` into ``dest/<name>``; make ``empty`` folders."""
    for digit, name in keep.items():
        (dest / (name or str(digit))).mkdir(parents=True)
        for f in sorted((src / str(digit)).glob("*.png"))[:per_class]:
            shutil.copy(f, dest / (name or str(digit)) / f.name)
    for name in empty:
        (dest / name).mkdir(parents=True)
    return dest


def class_files(root: Path, class_of: dict[str, int]) -> list[tuple[Path, int]]:
    """Every PNG under ``root``'s class folders with the class its folder stands for."""
    return [(f, class_of[d.name]) for d in sorted(root.iterdir()) if d.is_dir() for f in sorted(d.glob("*.png"))]


def plain_litert_top1(model: Path | bytes, files_and_classes: list[tuple[Path, int]]) -> float:
    """The 10-line loop a user writes: one interpreter, each image by hand (PIL, /255), argmax against the class."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    interp = Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = []
    for f, cls in files_and_classes:
        with Image.open(f) as im:
            x = np.asarray(im.convert("L"), np.float32)[None, :, :, None] / 255.0
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        hits.append(int(np.argmax(interp.get_tensor(out["index"])[0])) == cls)
    return float(np.mean(hits))
