"""What board a measurement ran on: CPU, cores, model name, governor, temperature, throttling, memory.

Everything is read from ``/proc`` and ``/sys`` (and ``vcgencmd`` where the
Raspberry Pi firmware tools are installed); a value the machine does not
expose is ``None``, never a guess. Every reader takes a ``root`` folder so a
board's files can be read from a copy (tests, an emulated root filesystem).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..results.report_json import JsonResult

__all__ = [
    "BoardInfo",
    "MemoryStatus",
    "board_info",
    "cpu_governor",
    "memory_status",
    "soc_temperature",
    "throttling",
]

# ARM "CPU part" numbers (implementer 0x41) of the cores found on single-board computers.
_ARM_PARTS = {
    0xB76: "ARM1176", 0xC07: "Cortex-A7", 0xC08: "Cortex-A8", 0xC09: "Cortex-A9",
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0D: "Cortex-A77", 0xD41: "Cortex-A78", 0xD0C: "Neoverse-N1", 0xD40: "Neoverse-V1",
    0xD49: "Neoverse-N2", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD4D: "Cortex-A715",
}
# Thermal zone types that are the SoC/CPU, in order of preference.
_THERMAL_TYPES = ("cpu-thermal", "cpu_thermal", "soc-thermal", "soc_thermal", "x86_pkg_temp",
                  "cpu", "soc", "acpitz")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _cpuinfo(root: Path) -> tuple[str | None, str | None, int | None]:
    """(CPU model, hardware line, processor count) from /proc/cpuinfo."""
    text = _read(root / "proc/cpuinfo")
    if not text:
        return None, None, None
    count = sum(1 for line in text.splitlines() if line.split(":")[0].strip() == "processor")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Processor") or fields.get("cpu model")
    part = fields.get("CPU part")
    if part and fields.get("CPU implementer", "").lower() in ("0x41", ""):
        try:
            name = _ARM_PARTS.get(int(part, 16))
        except ValueError:
            name = None
        if name:
            model = name if not model or model.startswith("ARMv") else f"{model} ({name})"
    return model, fields.get("Hardware"), count or None


def _device_model(root: Path) -> str | None:
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        text = _read(root / rel)
        if text:
            return text.replace("\x00", "").strip() or None
    return None


def cpu_governor(root: str | Path = "/") -> str | None:
    """The scaling governor of CPU 0 (``ondemand``, ``performance``, ...), or None."""
    text = _read(Path(root) / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return text.strip() if text else None


def _cpu_max_mhz(root: Path) -> float | None:
    text = _read(root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return round(int(text.strip()) / 1000.0, 1) if text else None
    except ValueError:
        return None


def soc_temperature(root: str | Path = "/") -> float | None:
    """The SoC/CPU temperature in °C from ``/sys/class/thermal``, or None where there is none."""
    base = Path(root) / "sys/class/thermal"
    try:
        zones = sorted(p for p in base.iterdir() if p.name.startswith("thermal_zone"))
    except OSError:
        return None
    readings: list[tuple[int, float]] = []
    for zone in zones:
        raw = _read(zone / "temp")
        if raw is None:
            continue
        try:
            value = int(raw.strip()) / 1000.0
        except ValueError:
            continue
        kind = (_read(zone / "type") or "").strip().lower()
        rank = _THERMAL_TYPES.index(kind) if kind in _THERMAL_TYPES else len(_THERMAL_TYPES)
        readings.append((rank, value))
    if not readings:
        return None
    return round(min(readings, key=lambda r: r[0])[1], 2)


def throttling(vcgencmd: str | None = None) -> str | None:
    """The Raspberry Pi firmware's throttling flags (``vcgencmd get_throttled``), e.g. ``"0x0"``.

    Non-zero means under-voltage or thermal throttling now or since boot. None where
    ``vcgencmd`` is not installed or fails.
    """
    exe = vcgencmd or shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    if out.returncode != 0 or "=" not in text:
        return None
    return text.split("=", 1)[1].strip()


@dataclass(frozen=True)
class MemoryStatus:
    """Resident memory of this process in KiB: now and at its peak (high-water mark)."""

    rss_kb: int | None
    peak_rss_kb: int | None


def memory_status(pid: int | str = "self") -> MemoryStatus:
    """Read VmRSS/VmHWM from ``/proc/<pid>/status``; ``resource.getrusage`` where there is no /proc."""
    text = _read(Path("/proc") / str(pid) / "status")
    rss = hwm = None
    if text:
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    if hwm is None and pid == "self":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = int(peak // 1024) if sys.platform == "darwin" else int(peak)  # bytes on macOS, KiB on Linux
    return MemoryStatus(rss_kb=rss, peak_rss_kb=hwm)


def _os_name(root: Path) -> str | None:
    text = _read(root / "etc/os-release")
    if text:
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return None


def _mem_total_mb(root: Path) -> int | None:
    text = _read(root / "proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


@dataclass(frozen=True)
class BoardInfo(JsonResult):
    """The machine a measurement ran on."""

    KIND = "board"

    cpu_model: str | None
    architecture: str
    cores: int | None
    device_model: str | None
    hardware: str | None
    cpu_max_mhz: float | None
    governor: str | None
    memory_mb: int | None
    os: str | None
    kernel: str
    python: str
    temperature_c: float | None
    throttled: str | None

    @property
    def name(self) -> str:
        """A short human name: the Pi's model where known, else the CPU model and architecture."""
        return self.device_model or f"{self.cpu_model or 'unknown CPU'} ({self.architecture})"


def board_info(root: str | Path = "/") -> BoardInfo:
    """Describe this machine (or the one whose files are under ``root``)."""
    r = Path(root)
    model, hardware, count = _cpuinfo(r)
    here = r == Path("/")
    return BoardInfo(
        cpu_model=model or (platform.processor() or None if here else None),
        architecture=platform.machine() if here else "unknown",
        cores=(os.cpu_count() or count) if here else count,
        device_model=_device_model(r),
        hardware=hardware,
        cpu_max_mhz=_cpu_max_mhz(r),
        governor=cpu_governor(r),
        memory_mb=_mem_total_mb(r),
        os=_os_name(r),
        kernel=platform.release() if here else "unknown",
        python=platform.python_version(),
        temperature_c=soc_temperature(r),
        throttled=throttling() if here else None,
    )
