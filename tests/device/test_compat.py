"""The flat module paths of edgeq-device 0.1 still import, for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import edgeq_device
import pytest
from edgeq_device._compat import MOVED
from edgeq_device.model import flatbuffer
from edgeq_device.run import runtime


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_path_names_a_module_at_its_new_path(old):
    new = importlib.import_module(f"edgeq_device.{MOVED[old]}")
    assert new.__name__ == f"edgeq_device.{MOVED[old]}" and new.__spec__.name == new.__name__


def test_an_old_import_gives_the_new_module_with_a_warning():
    sys.modules.pop("edgeq_device.flatbuffer", None)
    with pytest.warns(DeprecationWarning, match=r"edgeq_device\.flatbuffer moved to edgeq_device\.model\.flatbuffer"):
        old = importlib.import_module("edgeq_device.flatbuffer")
    assert old is flatbuffer and old.read_flat_model is edgeq_device.read_flat_model
    assert old.__spec__.name == "edgeq_device.model.flatbuffer"  # the module keeps its own spec
    sys.modules.pop("edgeq_device.runtime", None)
    with pytest.warns(DeprecationWarning, match="edgeq_device.run.runtime") as record:
        from edgeq_device.runtime import ModelRunner
    assert ModelRunner is runtime.ModelRunner
    assert record[0].filename == __file__  # the warning points at the import line


def test_an_old_attribute_of_the_package_gives_the_new_module():
    with pytest.warns(DeprecationWarning, match="edgeq_device.measure.sysinfo"):
        module = edgeq_device.sysinfo
    assert module.board_info is edgeq_device.board_info
    with pytest.raises(AttributeError, match="no_such_module"):
        edgeq_device.no_such_module  # noqa: B018


def test_the_old_task_registry_names_still_resolve():
    with pytest.warns(DeprecationWarning, match="edgeq_device.tasks.registry.TASKS"):
        from edgeq_device.tasks import TASKS
    assert TASKS is edgeq_device.TASKS
    with pytest.raises(AttributeError):
        edgeq_device.tasks.no_such_name  # noqa: B018


def test_new_paths_import_without_any_warning():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import edgeq_device, edgeq_device.model.flatbuffer, edgeq_device.run.runtime, edgeq_device.cli\n"
            "from edgeq_device.cli import main\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_the_command_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "edgeq_device.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and edgeq_device.__version__ in res.stdout, res.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert callable(importlib.import_module("edgeq_device.cli").main)
