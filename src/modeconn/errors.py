"""The one exception type for mistakes a user can make.

Anything raised as :class:`ModeconnError` is shown by the CLI as a single line on stderr with a
non-zero exit code; everything else is a bug and keeps its traceback.
"""


class ModeconnError(Exception):
    """A problem caused by the user's input (missing file, bad name, wrong shapes, NaN loss)."""
