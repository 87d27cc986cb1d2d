"""Activation ranges for int8: histograms, the methods that choose a range from them, the conversion route, per-method debug."""
