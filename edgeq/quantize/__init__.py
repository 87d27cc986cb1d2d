"""Quantization: modes, the converter, per-layer error, the accuracy budget and QAT."""
