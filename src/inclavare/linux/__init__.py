"""The only place that talks to the kernel beyond Python's `os` module."""
