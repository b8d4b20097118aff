"""Exceptions raised by codex_logging.

Every exception derives from :class:`CodexLoggingError` and from the builtin a
caller would already catch::

    CodexLoggingError (Exception)
    ├── InvalidSessionId (ValueError)
    ├── WriteError (OSError)
    ├── UnsafePathError (PermissionError)
    ├── DatabaseError (OSError)
    │   └── DatabaseLockedError (TimeoutError)
    ├── DatabaseNotFoundError (FileNotFoundError)
    ├── UnknownSessionError (LookupError)
    ├── InvalidFilterError (ValueError)
    ├── SessionsDirError (NotADirectoryError)
    └── PostgresNotInstalledError (ImportError)
"""

from __future__ import annotations


class CodexLoggingError(Exception):
    """Base class of every error this package raises."""


class InvalidSessionId(CodexLoggingError, ValueError):  # noqa: N818 - a public name, kept
    """A session id is not 1 to 128 characters of ``A-Z a-z 0-9 _ . -``."""


class WriteError(CodexLoggingError, OSError):
    """A record could not be appended whole (short write, refused file)."""

    def __str__(self) -> str:
        """Return the message alone: it names the path and says what is wrong."""
        return self.strerror or super().__str__()


class UnsafePathError(CodexLoggingError, PermissionError):
    """A folder or file is owned by another user or writable by group or other."""

    def __str__(self) -> str:
        """Return the message alone: it names the path and says what to do."""
        return self.strerror or super().__str__()


class DatabaseError(CodexLoggingError, OSError):
    """The SQLite database cannot be used (read-only, corrupt, not a database)."""


class DatabaseLockedError(DatabaseError, TimeoutError):
    """The SQLite database stayed locked by another writer past the busy timeout."""


class DatabaseNotFoundError(CodexLoggingError, FileNotFoundError):
    """A read-only command was pointed at a database that does not exist."""


class UnknownSessionError(CodexLoggingError, LookupError):
    """A session id was asked for that has no file or no rows."""


class InvalidFilterError(CodexLoggingError, ValueError):
    """A query filter is not understood: an unknown kind or level, a bad time or age."""


class SessionsDirError(CodexLoggingError, NotADirectoryError):
    """The sessions folder given to a sync is a file, not a folder."""


class PostgresNotInstalledError(CodexLoggingError, ImportError):
    """PostgreSQL was asked for but psycopg (``codex-logging[postgres]``) is not installed."""
