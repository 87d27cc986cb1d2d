"""Boards and the devices.toml fleet file, and deploy()'s argument checks: no board is reached."""

from __future__ import annotations

import pytest

from edgeq.deployment.fleet import Board, boards_for, load_fleet
from edgeq.deployment.orchestrate import deploy
from edgeq.errors import InvalidArgumentError, ModelFileError


def test_a_board_from_a_target_string():
    b = Board("pi@kitchen.local:2222")
    assert (b.host, b.port, b.label, b.describe()) == ("pi@kitchen.local", 2222, "kitchen.local",
                                                       "pi@kitchen.local:2222")
    assert b.target().port == 2222 and b.target().destination == "pi@kitchen.local"
    with pytest.raises(InvalidArgumentError, match="runtime"):
        Board("pi@x", runtime="onnx")


def test_load_fleet_merges_defaults_and_resolves_relative_keys(tmp_path):
    fleet = tmp_path / "devices.toml"
    fleet.write_text('[defaults]\nidentity = "keys/id"\nthreads = 2\n\n'
                     '[[board]]\nlabel = "a"\nhost = "pi@a"\n\n'
                     '[[board]]\nhost = "b.local"\nuser = "me"\nthreads = 4\n')
    a, b = load_fleet(fleet)
    assert (a.label, a.threads, a.identity) == ("a", 2, str(tmp_path / "keys" / "id"))
    assert (b.host, b.label, b.threads) == ("me@b.local", "b.local", 4)


@pytest.mark.parametrize("text, match", [
    ('[[board]]\nhost = "a"\ncolour = "red"\n', "unknown key 'colour'"),
    ('[[board]]\nlabel = "x"\n', "has no host"),
    ('[[board]]\nhost = "a"\n[[board]]\nhost = "pi@a"\n', "two boards share a label"),
    ("[defaults]\n", "one or more"),
    ("[[board]\n", "cannot read the fleet file"),
])
def test_a_bad_fleet_file_names_what_to_fix(tmp_path, text, match):
    fleet = tmp_path / "devices.toml"
    fleet.write_text(text)
    with pytest.raises(InvalidArgumentError, match=match) as exc:
        load_fleet(fleet)
    assert exc.value.argument == "fleet"


def test_the_runs_settings_fill_in_only_what_a_board_leaves_at_its_default():
    mine = Board("pi@a", threads=1)
    a, b = boards_for([mine, "pi@b"], None, {"threads": 4, "timeout": None})
    assert (a.threads, b.threads) == (1, 4) and a.timeout == b.timeout == 900.0
    with pytest.raises(InvalidArgumentError, match="no board"):
        boards_for(None, None, {})
    with pytest.raises(InvalidArgumentError, match="share a label"):
        boards_for(["pi@a", "me@a"], None, {})


def test_deploy_checks_its_arguments_before_reaching_any_board(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        deploy(tmp_path / "none.tflite", to="pi@a")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"12345678")
    with pytest.raises(ModelFileError, match="TFL3"):
        deploy(bad, to="pi@a")
    good = tmp_path / "m.tflite"
    good.write_bytes(b"\0\0\0\0TFL3")
    with pytest.raises(InvalidArgumentError, match="parallel"):
        deploy(good, to="pi@a", parallel=0)
    with pytest.raises(InvalidArgumentError, match="image folder"):
        deploy(good, to="pi@a", evaluation=tmp_path / "nothing")


def test_old_argument_names_still_work_for_one_release(tmp_path):
    """deploy(eval=...) is evaluation=...; it warns and reaches the same check."""
    good = tmp_path / "m.tflite"
    good.write_bytes(b"\0\0\0\0TFL3")
    with pytest.warns(DeprecationWarning, match=r"deploy\(eval=\.\.\.\) is renamed evaluation="), \
            pytest.raises(InvalidArgumentError, match="image folder") as err:
        deploy(good, to="pi@a", eval=tmp_path / "nothing")
    assert err.value.argument == "evaluation"
    with pytest.raises(TypeError, match="both eval= and evaluation="):
        deploy(good, to="pi@a", eval=tmp_path, evaluation=tmp_path)
