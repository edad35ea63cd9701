"""The one error type users see.

Library code raises :class:`MovierecError` with a single sentence that says what went wrong and
what to do; the CLI prints it to stderr and exits non-zero, without a traceback.
"""


class MovierecError(Exception):
    """A problem the user can fix: bad input, missing data, an impossible option."""


class NotFound(MovierecError):
    """The user or movie asked for is not in the data: a wrong id or a title that matches nothing."""
