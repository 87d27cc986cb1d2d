"""Below 8 bits: 4-bit weights, their rounding chosen on real inputs, and what a file's weights hold."""
