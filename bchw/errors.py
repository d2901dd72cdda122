"""The one exception type that the command line turns into a one-line error."""


class BchwError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The command line prints ``bchw: error: <message>`` and exits with status 2; the message must
    name the problem (the file, the field, the expected and found values).
    """


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type name when it has none), shortened."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
