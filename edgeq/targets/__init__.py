"""Accelerator targets beside the CPU."""
