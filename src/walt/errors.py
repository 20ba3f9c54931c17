"""The one error type a user's input can cause: `walt` prints its message as one line and exits 2.

Everything below the command line raises `UserError` (or a `ValueError` that the command turns
into one) for a mistake the user can fix: a wrong flag, a missing file, a folder that holds
another run. The message says what is wrong and how to fix it; no traceback is shown.
"""


class UserError(ValueError):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""
