"""Errors that reach the user as one line on stderr, with no traceback."""


class UserError(Exception):
    """A problem with the user's input or files. The message names the file (and line or page) and the problem.

    The command-line entry points print it as ``error: <message>`` and exit with status 2; ``--debug`` shows
    the traceback.
    """
