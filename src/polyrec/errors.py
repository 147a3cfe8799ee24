"""The one exception type for user mistakes.

The CLI prints a :class:`PolyrecError` as a single line (no traceback); anything else is a bug.
"""


class PolyrecError(ValueError):
    """A user-facing error: bad input, unknown name, missing file. The message is one line."""
