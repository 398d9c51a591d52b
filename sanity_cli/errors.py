"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback."""


class SanityError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The CLI prints ``sanity: error: <message>`` on one line and exits with code 2.
    The message should name the problem and the fix.
    """
