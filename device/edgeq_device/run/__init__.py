"""Running a model: the TFLite runtimes, the runner, the load check in a child, the inference pool and image folders."""
