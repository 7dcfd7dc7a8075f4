"""The error every user-facing failure raises: its message is the one line the user sees."""


class FmnistError(Exception):
    """A failure the user can act on; the CLI prints its message and exits non-zero."""
