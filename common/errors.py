"""User-facing errors: one exception family the command-line entry points print as one or two lines.

Everything a user can cause (a config key, a missing or unreadable file, a data set that does not fit,
a checkpoint of another network, a work directory in use) raises a ``UserError``. Entry points wrapped
by ``utils.cli.run`` print ``error: <message>`` and, when given, ``hint: <what to do>`` to stderr and
exit with ``exit_code`` (2 for usage and configuration, 1 otherwise); ``--debug`` or ``AFA_DEBUG=1``
shows the traceback instead. The subclasses also derive from the built-in type that code catching
errors generically expects (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A failure the user can fix; ``hint`` says how (optional, one line)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        """``message``: what went wrong (one line); ``hint``: what to do about it, or None."""
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # the message as given, also where a base type (KeyError) quotes it
        """The message alone."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):  # picklable across DataLoader workers and spawn pools, hint included
        """Picklable with its hint (DataLoader workers, spawn pools)."""
        return (type(self), (str(self), self.hint))


class UsageError(UserError):
    """A wrong command line or configuration (exit status 2)."""

    exit_code = 2


class ConfigError(UsageError, ValueError):
    """A configuration file or override that does not fit the schema."""


class DataError(UserError, ValueError):
    """An input file or split that cannot be used as it is (names the file or the image id)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs does not exist (names the path)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the network (names the file and the keys)."""


class WorkDirError(UsageError):
    """A work directory that would be damaged, or whose saved run contradicts this one."""


def notice(message: str) -> None:
    """One ``warning:`` line on stderr, for things that run but may not be what the user meant."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
