"""Measuring on the board: latency (bench), per-operator profiles and what board it ran on (sysinfo)."""
