"""The board description: read from a Raspberry Pi's /proc and /sys laid out in a folder, and from here."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq_device import BoardInfo, board_info
from edgeq_device.measure.sysinfo import cpu_governor, memory_status, soc_temperature, throttling

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

processor\t: 1
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 2
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 3
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.fixture
def pi_root(tmp_path: Path) -> Path:
    _write(tmp_path, "proc/cpuinfo", PI4_CPUINFO)
    _write(tmp_path, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    _write(tmp_path, "proc/meminfo", "MemTotal:        3884096 kB\nMemFree:  100 kB\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "ondemand\n")
    _write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "1800000\n")
    _write(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    _write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "48850\n")
    _write(tmp_path, "sys/class/thermal/thermal_zone1/type", "gpu-thermal\n")
    _write(tmp_path, "sys/class/thermal/thermal_zone1/temp", "61000\n")
    _write(tmp_path, "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    return tmp_path


def test_reads_a_raspberry_pi(pi_root):
    b = board_info(pi_root)
    assert b.device_model == "Raspberry Pi 4 Model B Rev 1.4"
    assert b.cpu_model == "Cortex-A72" and b.hardware == "BCM2835"
    assert b.cores == 4 and b.cpu_max_mhz == 1800.0 and b.memory_mb == 3793
    assert b.governor == "ondemand" == cpu_governor(pi_root)
    assert b.temperature_c == 48.85 == soc_temperature(pi_root)  # the CPU zone, not the GPU's
    assert b.os == "Debian GNU/Linux 12 (bookworm)"
    assert b.name == "Raspberry Pi 4 Model B Rev 1.4"
    assert BoardInfo.from_dict(b.to_dict()) == b and b.to_dict()["schema"] == "edgeq-device/board/1"


def test_missing_files_are_none(tmp_path):
    b = board_info(tmp_path)
    assert (b.cpu_model, b.device_model, b.governor, b.temperature_c, b.cores) == (None,) * 5
    assert soc_temperature(tmp_path / "nothing") is None


def test_this_machine():
    b = board_info()
    assert b.architecture == platform.machine() and b.cores == os.cpu_count()
    assert b.cpu_model and b.python == platform.python_version()
    assert b.name  # a Pi's model where there is one, else the CPU and architecture


def test_throttling_from_vcgencmd(tmp_path):
    fake = tmp_path / "vcgencmd"
    fake.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled=0x50005"\n')
    fake.chmod(0o755)
    assert throttling(str(fake)) == "0x50005"
    failing = tmp_path / "broken"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    assert throttling(str(failing)) is None
    assert throttling(str(tmp_path / "absent")) is None


CHILD = """
import sys
from edgeq_device.measure.sysinfo import memory_status
before = memory_status()
block = bytearray(64 * 1024 * 1024)
block[::4096] = b"x" * len(block[::4096])  # touch every page
after = memory_status()
print(before.rss_kb, after.rss_kb, after.peak_rss_kb, flush=True)
sys.stdin.read()  # stay alive while the parent reads /proc/<pid>/status
"""


def test_memory_status_of_a_process_and_of_itself():
    # A small child process: in a worker that has held gigabytes (TensorFlow, earlier tests), the kernel may hand
    # back reclaimed pages and the worker's VmRSS need not grow by what one allocation touches.
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        before, after, peak = (int(v) for v in child.stdout.readline().split())
        seen = memory_status(child.pid)
    finally:
        child.communicate("")
    assert before > 0 and after - before > 50 * 1024
    assert peak >= after
    assert seen.rss_kb is not None and seen.rss_kb >= after - 1024
    assert seen.peak_rss_kb is not None and seen.peak_rss_kb >= seen.rss_kb
    assert child.returncode == 0
