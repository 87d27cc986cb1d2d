"""Inputs: Keras models (load, custom objects) and data sources (folders, arrays, tf.data) as arrays."""
