"""Quantization: modes, one conversion and the converter, per-layer error; ranges/, precision/, lowbit/ and qat/ the methods."""
