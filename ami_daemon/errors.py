"""Errors a command reports to the person who ran it, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad argument, missing file, database down)."""
