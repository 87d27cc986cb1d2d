"""DeployError carries a kind from a documented set; SSHError is one, importable from the tree and from ssh."""

from __future__ import annotations

import pytest

from edgeq import errors
from edgeq.deployment import ssh
from edgeq.errors import DEPLOY_ERROR_KINDS, DeployError, EdgeqError, SSHError


def test_the_kind_is_kept_and_the_message_is_unchanged():
    exc = DeployError("no Python at 'python9' on pi@b", kind="no-python", argument="b.python",
                      received="python9", fix="install python3 on the board")
    assert exc.kind == "no-python"
    assert str(exc) == "b.python: no Python at 'python9' on pi@b (received 'python9'); install python3 on the board"
    assert DeployError("a step failed").kind == "remote"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown DeployError kind 'nope'"):
        DeployError("x", kind="nope")


def test_ssh_error_is_a_deploy_error_in_the_tree():
    assert ssh.SSHError is SSHError is errors.SSHError
    exc = SSHError("connection refused by pi@b", kind="unreachable", received="pi@b", fix="check the port")
    assert isinstance(exc, DeployError) and isinstance(exc, EdgeqError)
    assert exc.kind == "unreachable" and exc.target == "pi@b"
    assert str(exc) == "connection refused by pi@b; check the port"  # the board is named once
    assert {"DeployError", "SSHError"} <= set(errors.__all__)


def test_the_kinds_a_board_result_names_are_documented():
    documented = {"unreachable", "auth", "hostkey", "timeout", "no-ssh", "interrupted", "no-python", "no-venv",
                  "no-runtime", "missing-deps", "setup", "wheel", "transfer", "bench", "eval", "profile", "store",
                  "remote", "arch", "no-space"}
    assert set(DEPLOY_ERROR_KINDS) == documented
    assert all(isinstance(v, str) and v for v in DEPLOY_ERROR_KINDS.values())
    assert errors.__doc__ is not None and "DeployError" in errors.__doc__ and "SSHError" in errors.__doc__
