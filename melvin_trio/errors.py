"""The package's one error family: every domain error derives from `MelvinError`, so the command line (and any
other boundary) catches one type and turns it into one clear line."""

from __future__ import annotations


class MelvinError(Exception):
    """A problem the user can act on; the message says what and, where it helps, how to fix it."""


class ClientError(MelvinError):
    """The `stream` client could not stream: the server is unreachable, refused the stream, or closed it early."""


class UsageError(MelvinError):
    """Options that cannot work together, found after parsing: a usage mistake (exit 2), as argparse's own."""


class ServeError(MelvinError):
    """The server could not start (e.g. a port is taken)."""
