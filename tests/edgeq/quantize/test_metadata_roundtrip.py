"""edgeq writes the standard TFLite metadata and edgeq_device reads it: the two halves agree on every
model edgeq converts (normalization, colour, labels), so a model read through the standard entry
alone is fed exactly what edgeq's own entry says."""

from __future__ import annotations

import numpy as np
import pytest
from edgeq_device.model.metadata import read_metadata
from edgeq_device.model.tflite_metadata import packed_files, read_tflite_metadata


@pytest.mark.parametrize("kind", ["float32", "int8", "int8-io"])
def test_standard_entry_says_what_edgeqs_entry_says(digits_edgeq_tflite, kind):
    data = digits_edgeq_tflite[kind].read_bytes()
    ours, std = read_metadata(data), read_tflite_metadata(data)
    assert ours is not None and ours.preprocess is not None and std is not None
    pre = ours.preprocess
    channels = 3 if pre.color == "rgb" else 1
    assert std.color == ("rgb" if pre.color == "rgb" else "grayscale")
    mean, sd = np.broadcast_to(pre.mean, channels), np.broadcast_to(pre.std, channels)
    assert np.allclose(np.broadcast_to(std.mean, channels), mean)
    assert np.allclose(np.broadcast_to(std.std, channels), sd)
    assert ours.labels and std.labels == tuple(ours.labels)  # from the labels file packed after the model
    assert "labels.txt" in packed_files(data)
    assert std.class_names(len(ours.labels)) == tuple(ours.labels)
