"""User-facing errors: one line that says what went wrong and what to do.

The command line prints either as ``resdyn: error: <message>``. A ``UsageError`` (the command or
call asked for something invalid: a bad flag value, an unknown stage, a run id with a path
separator, settings that clash with an existing run) exits with status 2; any other
``ResdynError`` (a missing or damaged file, a full disk, a model that cannot be loaded) with 1.
"""


class ResdynError(Exception):
    """A mistake in input or state that a person can fix; printed as one line, no traceback."""


class UsageError(ResdynError):
    """The request itself is invalid, whatever the state of the disk: fix the command or call."""
