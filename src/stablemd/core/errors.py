"""User-facing errors.

An :class:`InputError` is a problem with what the user gave (a file, a field, an option): the
command line prints its message on one line and exits with code 2, without a traceback.
Anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad user input; the message names the file, field or index at fault."""
