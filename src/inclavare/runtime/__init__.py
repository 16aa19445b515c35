"""rune's core: containers, their lifecycle, and the process that becomes the container."""
