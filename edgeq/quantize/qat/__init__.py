"""Quantization-aware training through tensorflow-model-optimization."""
