"""An inventory whose board is reached through a jump host (ansible_ssh_common_args: ProxyJump)."""

from __future__ import annotations

import pytest
from conftest import free_port

from edgeq.deployment.orchestrate import deploy

pytestmark = pytest.mark.ssh


def test_a_board_behind_a_jump_host_from_the_inventory(loopback_ssh, tiny_models_dir, board_python, tmp_path):
    # board-b is reached through board-a (a Host alias of the ssh_config, with its key and known_hosts);
    # the same board through a jump host that does not answer is unreachable: the option is used.
    inv = tmp_path / "boards.yml"
    inv.write_text(f"""
all:
  vars:
    ansible_host: 127.0.0.1
    ansible_port: {loopback_ssh.ports['board-b']}
    ansible_user: {loopback_ssh.user}
    ansible_ssh_private_key_file: {loopback_ssh.identity}
    ansible_python_interpreter: {board_python}
    edgeq_workdir: {tmp_path / 'wd'}
  children:
    behind_jump:
      hosts:
        pi-behind:
          ansible_ssh_common_args: "-o ProxyJump=board-a -o UserKnownHostsFile={loopback_ssh.known_hosts}"
        pi-bad-jump:
          ansible_ssh_common_args: "-J {loopback_ssh.user}@127.0.0.1:{free_port()} -o UserKnownHostsFile={loopback_ssh.known_hosts}"
""")
    report = deploy(tiny_models_dir["int8"], inventory=inv, ssh_config=loopback_ssh.ssh_config, store=tmp_path / "r.db",
                    progress=False)
    ok, bad = report["pi-behind"], report["pi-bad-jump"]
    assert ok.ok and ok.groups == ("behind_jump",), ok.error
    assert bad.state == "unreachable" and bad.step == "connect", (bad.state, bad.error)
