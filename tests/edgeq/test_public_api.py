"""The public API: re-exported names, sorted __all__, docstrings, one error tree."""

from __future__ import annotations

import inspect

import edgeq_device
import edgeq_device.errors

import edgeq
import edgeq.errors


def test_all_is_sorted_and_resolves():
    for mod in (edgeq, edgeq_device, edgeq.errors, edgeq_device.errors):
        assert mod.__all__ == sorted(mod.__all__), mod.__name__
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_public_callables_have_docstrings():
    for mod in (edgeq, edgeq_device):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{mod.__name__}.{name} has no docstring"


def test_every_error_derives_from_one_base():
    for mod in (edgeq.errors, edgeq_device.errors):
        for name in mod.__all__:
            obj = getattr(mod, name)
            base = edgeq.errors.EdgeqWarning if name.endswith("Warning") else edgeq.EdgeqError
            assert issubclass(obj, base), name
    assert edgeq.EdgeqError is edgeq_device.EdgeqError
    assert edgeq.errors.EdgeqWarning is edgeq_device.errors.EdgeqWarning
    assert issubclass(edgeq.errors.EdgeqWarning, UserWarning)


def _packages():
    import importlib
    import pkgutil

    import edgeq_device

    for root in (edgeq, edgeq_device):
        yield root
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            if info.ispkg:
                yield importlib.import_module(info.name)


def test_no_name_shadows_a_submodule():
    """``edgeq.x.y`` is always the module y: a package never binds a function or class to a submodule's name."""
    import importlib
    import pkgutil
    import types

    checked = 0
    for pkg in _packages():
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith("__"):
                continue
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            bound = getattr(pkg, info.name)
            assert isinstance(bound, types.ModuleType) and bound is module, (
                f"{pkg.__name__}.{info.name} is {bound!r}, not the submodule")
            checked += 1
    assert checked > 20
