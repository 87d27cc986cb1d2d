"""Ansible inventories as fleets: edgeq's own reader against ``ansible-inventory --list`` itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.deployment.hostpattern import select_hosts
from edgeq.deployment.inventory import ansible_inventory_program, inventory_boards, load_inventory
from edgeq.deployment.inventory_static import expand_host_range
from edgeq.errors import InvalidArgumentError

INI = """\
# hosts outside any section are ungrouped
bastion ansible_host=10.0.0.1 ansible_user=jump

[kitchen]
pi-k[01:03] ansible_user=pi
pi-k04:2222 edgeq_threads=2 ansible_ssh_common_args='-o ProxyJump=jump@10.0.0.1:22'

[garage]
pi-g1 ansible_host=192.168.1.50 ansible_port=2200 edgeq_labels=outdoor,cold

[pis:children]
kitchen
garage

[pis:vars]
ansible_python_interpreter=/usr/bin/python3
edgeq_runtime=litert
edgeq_threads=4
edgeq_timeout=120
"""

YAML = """\
all:
  vars:
    ansible_user: ops
  children:
    lab:
      hosts:
        jetson1:
          ansible_host: 10.1.0.7
          ansible_ssh_private_key_file: /keys/lab_ed25519
          ansible_ssh_common_args: "-J jump@10.0.0.1"
        pi-k01:
          edgeq_offline: true
      vars:
        edgeq_workdir: /srv/edgeq
    garage:
      vars:
        edgeq_threads: 1
"""


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A folder inventory: an INI file and a YAML file, group_vars (file and folder) and host_vars."""
    root = tmp_path / "site"
    (root / "group_vars" / "pis").mkdir(parents=True)
    (root / "host_vars").mkdir()
    (root / "hosts").write_text(INI)
    (root / "boards.yml").write_text(YAML)
    (root / "old.retry").write_text("[ignored]\nnot-a-board\n")  # Ansible skips .retry, .orig, .md, ... files
    (root / "group_vars" / "all.yml").write_text("ansible_ssh_timeout: 20\n")
    (root / "group_vars" / "pis" / "conn.yml").write_text("edgeq_timeout: 300\n")
    (root / "host_vars" / "pi-g1.yml").write_text("edgeq_threads: 3\n")
    return root


needs_ansible = pytest.mark.skipif(ansible_inventory_program() is None,
                                   reason="ansible-core is not installed (pip install 'edgeq[ansible]')")


@needs_ansible
def test_edgeqs_reader_gives_what_ansible_inventory_gives(site):
    ours = load_inventory(site, use_ansible=False)
    theirs = load_inventory(site, use_ansible=True)
    assert ours.source == "edgeq" and theirs.source == "ansible-inventory"
    assert ours.hostvars == theirs.hostvars
    assert {g: sorted(h) for g, h in ours.groups.items()} == {g: sorted(h) for g, h in theirs.groups.items()}
    assert sorted(ours.hostvars) == ["bastion", "jetson1", "pi-g1", "pi-k01", "pi-k02", "pi-k03", "pi-k04"]
    # precedence: host_vars over the group's inventory vars, group_vars over inventory vars, child over parent
    assert ours.hostvars["pi-g1"]["edgeq_threads"] == 3 and ours.hostvars["pi-k02"]["edgeq_timeout"] == 300
    assert ours.hostvars["pi-k01"]["ansible_user"] == "pi" and ours.hostvars["jetson1"]["ansible_user"] == "ops"
    # the boards are the same whichever reader read the inventory
    assert inventory_boards(site, use_ansible=False) == inventory_boards(site, use_ansible=True)


def test_hosts_become_boards_with_their_settings_and_groups(site):
    boards = {b.label: b for b in inventory_boards(site, use_ansible=False)}
    k4 = boards["pi-k04"]
    assert (k4.host, k4.port, k4.threads, k4.runtime, k4.timeout) == ("ops@pi-k04", 2222, 2, "litert", 300.0)
    assert k4.ssh_options == ("ProxyJump=jump@10.0.0.1:22",) and k4.python == "/usr/bin/python3"
    assert k4.connect_timeout == 20.0 and k4.groups == ("kitchen", "pis")
    jet = boards["jetson1"]
    assert jet.host == "ops@10.1.0.7" and jet.identity == "/keys/lab_ed25519"
    assert jet.ssh_options == ("ProxyJump=jump@10.0.0.1",) and jet.workdir == "/srv/edgeq" and jet.python == "python3"
    g1 = boards["pi-g1"]
    assert (g1.host, g1.port, g1.threads) == ("ops@192.168.1.50", 2200, 3)
    assert g1.groups == ("garage", "pis", "outdoor", "cold")
    assert boards["pi-k01"].offline is True and boards["pi-k01"].groups == ("kitchen", "lab", "pis")
    assert boards["bastion"].host == "jump@10.0.0.1" and boards["bastion"].groups == ()


PATTERNS = ["pis", "pis:!garage", "pis:&lab", "pi-k0*", "lab,bastion", "~pi-k0[12]", "all:!pis", "*:&kitchen:!pi-k04",
            "garage:lab"]


@pytest.mark.slow
@needs_ansible
@pytest.mark.parametrize("pattern", PATTERNS)
def test_limit_selects_what_ansible_selects(site, pattern):
    proc = subprocess.run([ansible_inventory_program(), "-i", str(site), "--list", "--limit", pattern],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = set(json.loads(proc.stdout)["_meta"]["hostvars"])
    inv = load_inventory(site, use_ansible=False)
    assert select_hosts(pattern, list(inv.hostvars), inv.groups) == theirs
    assert {b.label for b in inventory_boards(site, pattern, use_ansible=False)} == theirs


def test_a_yaml_file_alone_and_host_ranges(tmp_path):
    f = tmp_path / "fleet.yaml"
    f.write_text("pis:\n  hosts:\n    pi-[a:c]:\n      ansible_port: 22\n    node[08:10:2]:\n")
    assert [b.label for b in inventory_boards(f, use_ansible=False)] == ["node08", "node10", "pi-a", "pi-b", "pi-c"]
    assert expand_host_range("rack[1:2]-pi[01:02]") == ["rack1-pi01", "rack1-pi02", "rack2-pi01", "rack2-pi02"]


def test_bad_inventories_and_limits_are_one_clear_error(tmp_path, site):
    with pytest.raises(InvalidArgumentError, match="no such inventory"):
        load_inventory(tmp_path / "missing.ini", use_ansible=False)
    with pytest.raises(InvalidArgumentError, match="selects no host"):
        inventory_boards(site, "attic", use_ansible=False)
    bad = tmp_path / "bad.ini"
    bad.write_text("[pis]\npi1 ansible_port=twenty-two\n")
    with pytest.raises(InvalidArgumentError, match="pi1"):
        inventory_boards(bad, use_ansible=False)
    empty = tmp_path / "empty.ini"
    empty.write_text("[pis]\n")
    with pytest.raises(InvalidArgumentError, match="no host"):
        load_inventory(empty, use_ansible=False)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    res = CliRunner().invoke(cli, ["deploy", str(model), "--inventory", str(site), "--limit", "attic", "--no-store"])
    assert res.exit_code == 2 and res.output.startswith("error: limit: ") and "Traceback" not in res.output
