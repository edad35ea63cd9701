"""The one error type users see.

Library code raises :class:`MovierecError` with a single sentence that says what went wrong and
what to do; the CLI prints it to stderr and exits non-zero, without a traceback.
"""


class MovierecError(Exception):
    """A problem the user can fix: bad input, missing data, an impossible option."""


class Diverged(MovierecError):
    """Training ran into numbers that are not finite: the settings (a learning rate too high, say), not the data,
    are to blame; tuning counts such a trial as a bad one rather than stopping."""


class NotFound(MovierecError):
    """The user or movie asked for is not in the data: a wrong id or a title that matches nothing."""
