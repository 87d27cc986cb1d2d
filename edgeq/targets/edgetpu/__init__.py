"""The Coral Edge TPU: what its compiler maps, and the compiler itself."""
