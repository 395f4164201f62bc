"""Where originals are read from and derived images are written to."""
