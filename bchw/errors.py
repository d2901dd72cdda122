"""The one exception type that the command line turns into a one-line error."""


class BchwError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The command line prints ``bchw: error: <message>`` and exits with status 2; the message must
    name the problem (the file, the field, the expected and found values).
    """
