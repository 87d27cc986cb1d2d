"""Measurements on the host: static analysis, evaluation and fidelity through edgeq_device's loop."""
