"""Image engines: the interface, pure geometry, and the Wand (ImageMagick) engine."""
