"""The flat module paths of edgeq-device 0.1 (``edgeq_device.flatbuffer``, ...), kept for one release.

The modules now live in rooms (``edgeq_device.model.flatbuffer``, ...). Importing an old path, or
reaching it as an attribute of ``edgeq_device``, gives the module at its new path with a
:class:`DeprecationWarning` naming it. This is the one place that knows the old names.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any, Sequence, cast

__all__ = ["MOVED", "install", "moved_module", "old_tasks_name"]

#: Old module name (under ``edgeq_device``) -> its new dotted path under ``edgeq_device``.
#: ``cli`` and ``tasks`` are packages now: ``edgeq_device.cli`` still gives ``cli`` and ``main``,
#: and ``edgeq_device.tasks`` still gives the registry's names (see ``tasks/__init__``).
MOVED: dict[str, str] = {
    **{m: f"model.{m}" for m in ("_opnames", "analysis", "flatbuffer", "info", "int4", "metadata",
                                 "preprocess", "preprocess_choice", "tflite_metadata", "validate")},
    **{m: f"run.{m}" for m in ("_load_helper", "images", "inference_pool", "loadcheck", "nativelog",
                               "pool_worker", "runtime")},
    **{m: f"measure.{m}" for m in ("bench", "opcut", "opcut_raw", "profile", "profile_inputs",
                                   "profile_view", "sysinfo")},
    **{m: f"tasks.{m}" for m in ("detection", "detection_eval", "eval_options", "eval_result", "evaluation",
                                 "fidelity", "masks", "segmentation", "task_inputs", "task_loop")},
    **{m: f"results.{m}" for m in ("fileio", "report_json", "result_view")},
    "clikit": "cli.clikit",
}

_PACKAGE = __name__.rpartition(".")[0]


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{_PACKAGE}.{old} moved to {_PACKAGE}.{new}; the old path goes in the next release",
                  DeprecationWarning, stacklevel=stacklevel)


def moved_module(name: str) -> ModuleType:
    """The module an old attribute name of ``edgeq_device`` stands for (with a DeprecationWarning).

    Raises:
        AttributeError: ``name`` is not an old module name.
    """
    if name not in MOVED:
        raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")
    _warn(name, MOVED[name], stacklevel=3)
    return importlib.import_module(f"{_PACKAGE}.{MOVED[name]}")


def old_tasks_name(name: str) -> object:
    """A name of the former ``edgeq_device.tasks`` module, now ``edgeq_device.tasks.registry`` (with a warning).

    Raises:
        AttributeError: ``name`` was not one of that module's names.
    """
    registry = importlib.import_module(f"{_PACKAGE}.tasks.registry")
    if name.startswith("__") or name not in getattr(registry, "__all__", ()):
        raise AttributeError(f"module '{_PACKAGE}.tasks' has no attribute {name!r}")
    warnings.warn(f"{_PACKAGE}.tasks.{name} moved to {_PACKAGE}.tasks.registry.{name}; the old path goes in "
                  "the next release", DeprecationWarning, stacklevel=3)
    return getattr(registry, name)


class _MovedFinder:
    """Finds ``edgeq_device.<old>`` and loads it as the module at its new path.

    A meta path finder and loader by its methods (the import system asks no more): subclassing
    ``importlib.abc``'s would import ``importlib.resources`` into every ``edgeq-device`` command,
    about 0.13 s of each start on an emulated Pi 4 (``python -X importtime``).
    """

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != _PACKAGE or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, cast(Any, self))  # a loader by its methods

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        old = spec.name.rpartition(".")[2]
        _warn(old, MOVED[old], stacklevel=3)  # warnings skips the import system's frames: the import line
        module = importlib.import_module(f"{_PACKAGE}.{MOVED[old]}")
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system has set the old name's spec on the module: give it its own back
        module.__spec__ = self._specs.get(module.__name__, module.__spec__)


_FINDER = _MovedFinder()


def install() -> None:
    """Let the old module paths import (once per process; only the old names are looked at)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)  # before an editable install's finder, which maps names to its own tree
