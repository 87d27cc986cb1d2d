"""The model file: the ``.tflite`` flatbuffer parsed and validated, its metadata, preprocessing, analysis and info."""
