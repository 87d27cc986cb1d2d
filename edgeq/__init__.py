"""edgeq: a trained Keras model to a measured .tflite on a single-board computer."""

__version__ = "0.1.0"
