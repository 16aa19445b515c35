"""The error type shared by every component.

An `InclavareError` is a problem with the input or the environment: it is reported to the
user as one line, without a traceback. Any other exception is a bug in this project.
"""


class InclavareError(Exception):
    """A user-facing error whose message names the problem in one line."""
