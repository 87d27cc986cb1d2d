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
