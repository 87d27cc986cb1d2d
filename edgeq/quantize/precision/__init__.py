"""Precision per layer: 16-bit activations on chosen layers (a16w8) and the accuracy budget that picks them."""
