"""Results as files: the versioned strict JSON of every result, their text views and atomic writes."""
