"""User-facing errors: one line that says what went wrong and what to do."""


class ResdynError(Exception):
    """A mistake in input or state that a person can fix; printed as one line, no traceback."""
