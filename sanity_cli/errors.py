"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback."""


class SanityError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The CLI prints ``sanity: error: <message>`` on one line and exits with code 2.
    The message should name the problem and the fix.
    """


def one_line(err: BaseException, *, first_line: bool = False, limit: int | None = None,
             with_type: bool = False) -> str:
    """An exception as one line of an error message: its text's lines joined (or its first line only), cut to
    `limit` characters, its type's name when it says nothing (or in front of it, with_type). The one place that
    turns an exception into a message's words."""
    text = str(err).strip()
    line = (text.splitlines()[0] if first_line else " ".join(text.split())) if text else ""
    line = line[:limit] if limit is not None else line
    if not line:
        return type(err).__name__
    return f"{type(err).__name__}: {line}" if with_type else line
