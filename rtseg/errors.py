"""The one exception family that the CLI turns into a one-line message and a non-zero exit.

Anything else that escapes is a bug and keeps its traceback.
"""


class RtsegError(Exception):
    """Base class of errors caused by user input: names, files, options, environment."""
