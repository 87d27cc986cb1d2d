"""Microcontrollers: TensorFlow Lite Micro (TFLM) as a target, measured in its own interpreter."""
