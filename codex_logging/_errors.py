"""Exceptions raised by codex_logging.

Every exception derives from :class:`CodexLoggingError` and from the builtin a
caller would already catch::

    CodexLoggingError (Exception)
    ├── InvalidSessionId (ValueError)
    ├── WriteError (OSError)
    ├── UnsafePathError (PermissionError)
    ├── DatabaseError (OSError)
    │   ├── DatabaseLockedError (TimeoutError)
    │   └── DatabaseDamagedError
    ├── DatabaseNotFoundError (FileNotFoundError)
    ├── UnknownSessionError (LookupError)
    ├── InvalidFilterError (ValueError)
    ├── SessionsDirError (NotADirectoryError)
    ├── SourceIdError (OSError)
    ├── ScopeNotEnteredError (RuntimeError)
    └── PostgresNotInstalledError (ImportError)

Every message that names a database URL or quotes a database driver passes
through :func:`hide_secrets` first, in the API and on the command line.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote


class CodexLoggingError(Exception):
    """Base class of every error this package raises."""


class InvalidSessionId(CodexLoggingError, ValueError):  # noqa: N818 - a public name, kept
    """A session id is not 1 to 128 characters of ``A-Z a-z 0-9 _ . -``."""

    #: The value refused, whole (the message shows its first characters).
    value: object = None


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

    def __str__(self) -> str:
        """Return the message, any password in it hidden (:func:`hide_secrets`)."""
        return hide_secrets(super().__str__())


class DatabaseLockedError(DatabaseError, TimeoutError):
    """The SQLite database stayed locked by another writer past the busy timeout."""


class DatabaseDamagedError(DatabaseError):
    """The SQLite database is damaged ("malformed", "not a database", a failed check).

    The NDJSON session files are the record and stay intact: the message names
    the database and how to rebuild the mirror from them (``codex-logs sync
    --rebuild``, or ``sync_to_sqlite(..., rebuild=True)``).
    """


class DatabaseNotFoundError(CodexLoggingError, FileNotFoundError):
    """A read-only command was pointed at a database that does not exist."""

    def __str__(self) -> str:
        """Return the message, any password in it hidden (:func:`hide_secrets`)."""
        return hide_secrets(super().__str__())


class UnknownSessionError(CodexLoggingError, LookupError):
    """A session id was asked for that has no file or no rows."""


class InvalidFilterError(CodexLoggingError, ValueError):
    """A query filter is not understood: an unknown kind or level, a bad time or age."""

    def __init__(self, message: str, *, flag: str | None = None) -> None:
        """Keep the command-line flag the filter came from, when only a read found it bad."""
        super().__init__(message)
        #: The flag (``"--level"``) the command line names in its error.
        self.flag = flag


class SessionsDirError(CodexLoggingError, NotADirectoryError):
    """The sessions folder given to a sync is a file, not a folder."""


class SourceIdError(CodexLoggingError, OSError):
    """The sessions folder's id file could not be written (a full disk, an I/O error)."""

    def __str__(self) -> str:
        """Return the message alone: it names the path and says what is wrong."""
        return self.strerror or super().__str__()


class ScopeNotEnteredError(CodexLoggingError, RuntimeError):
    """``session_scope.env()`` was called where that scope is not entered."""


class PostgresNotInstalledError(CodexLoggingError, ImportError):
    """PostgreSQL was asked for but psycopg (the ``postgres`` extra) is not installed."""


class OtlpNotInstalledError(CodexLoggingError, ImportError):
    """An OTLP export was asked for but the ``otlp`` extra is not installed."""


class OtlpConfigError(CodexLoggingError, ValueError):
    """An OTLP endpoint, header, timeout or compression setting is not valid."""


class OtlpExportError(CodexLoggingError, ConnectionError):
    """The OTLP endpoint could not be reached, or refused every batch, after the retries."""


# -- messages ---------------------------------------------------------------

#: libpq connection parameters whose value logs in: those its
#: ``PQconndefaults()`` marks ``*`` (shown as a password), and the SCRAM keys
#: it marks ``D``, which authenticate as well as a password does. ``passfile``
#: only names a file: it is shown.
SECRET_PARAMETERS: Final = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
#: Every connection parameter libpq knows (PostgreSQL 18's list, and older
#: names it still takes): a ``?name=`` or ``&name=`` of another name cannot end
#: a password in a URL, since libpq would refuse it; it is taken to be part of
#: the password, which is then hidden with it.
LIBPQ_PARAMETERS: Final = SECRET_PARAMETERS | frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "passfile", "require_auth",
        "channel_binding", "connect_timeout", "client_encoding", "options",
        "application_name", "fallback_application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
        "gssencmode", "sslmode", "requiressl", "sslnegotiation", "sslcompression", "sslcert",
        "sslkey", "sslkeylogfile", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni",
        "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version",
        "min_protocol_version", "max_protocol_version", "krbsrvname", "gsslib", "gssdelegation",
        "service", "target_session_attrs", "load_balance_hosts", "oauth_issuer",
        "oauth_client_id", "oauth_scope", "authtype", "tty",
    }
)  # fmt: skip
#: What stands in a message for a hidden value.
HIDDEN: Final = "***"

#: A URL's scheme; one slash too, as a path normalised from a mistyped URL keeps it.
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")
#: A query parameter's name, in a URL's query: ``?`` or ``&`` then ``name=``.
_PARAMETER: Final = re.compile(r"[?&]([\w.%-]*)=")
#: The user of a URL's userinfo and its ``:``; and a port after a host's ``:``.
_USER: Final = re.compile(r"[^:/?#\[\]@\s]*:")
_PORT: Final = re.compile(r"[0-9]*(?:[/,?#]|$)")
_SPACE: Final = re.compile(r"\s")
#: ``name = value`` of a libpq connection string (keywords in any case).
_ASSIGNMENT: Final = re.compile(
    r"(?<![\w%.-])(" + "|".join(sorted(SECRET_PARAMETERS)) + r")\s*=\s*", re.IGNORECASE
)
#: Where libpq cuts a malformed URL or connection string: a piece of a
#: password between these may be quoted alone (as a host, a port, a name).
_CUTS: Final = re.compile(r"[\s@/?#&=:,;'\"\\\[\]]+")
#: A piece shorter than this is hidden only where it stands alone, not
#: inside every word of the message that happens to contain it.
_SHORT: Final = 4


def hide_secrets(text: str, *sources: str | None) -> str:
    """Return ``text`` with every password it may carry replaced by ``***``.

    Every message that names a database URL or quotes a database driver goes
    through here. Hidden are: the password of a URL's userinfo (from the first
    ``:`` after the user to the *last* ``@``, so an unencoded ``@``, ``/``,
    ``?`` or ``#`` in it stays hidden), the value of a secret query parameter
    (:data:`SECRET_PARAMETERS`: ``?password=``, ``&sslpassword=``, ...), and
    the value of such a ``key=value`` in a libpq connection string (quoted or
    not, closed or not). Then each of those values found, percent-decoded or
    not, and each piece of it between the characters where libpq cuts a
    malformed URL, is hidden wherever else it stands in ``text``: a driver's
    parse error quotes the password it choked on (``invalid percent-encoded
    token: "..."``), or a piece of it as a host name. When in doubt, more is
    hidden, never less.

    Args:
        text: The message.
        sources: The URLs or connection strings the message may quote (the
            ``--db`` value, ``CODEX_LOG_DB_PATH``): their secrets are found
            from the whole value, even where the message quotes them cut.

    Returns:
        The message with the secrets replaced.
    """
    secrets: set[str] = set()
    spans: list[tuple[int, int]] = []
    for source in sources:
        if not source:
            continue
        found = _secret_spans(source, whole=True)
        secrets.update(source[start:end] for start, end in found)
        at = text.find(source)
        while at >= 0 and found:
            spans += [(at + start, at + end) for start, end in found]
            at = text.find(source, at + len(source))
    found = _secret_spans(text, whole=False)
    secrets.update(text[start:end] for start, end in found)
    spans += found
    pieces = _pieces(secrets)
    if pieces:
        spans += [m.span() for m in _quoted(pieces).finditer(text) if m.end() > m.start()]
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts: list[str] = []
    done = 0
    for start, end in merged:
        parts += (text[done:start], HIDDEN)
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _quoted(pieces: list[str]) -> re.Pattern[str]:
    """Return a pattern of the pieces: a short one only where no letter or digit touches it."""
    long = [re.escape(piece) for piece in pieces if len(piece) >= _SHORT]
    short = [re.escape(piece) for piece in pieces if len(piece) < _SHORT]
    if short:
        long.append(rf"(?<![^\W_])(?:{'|'.join(short)})(?![^\W_])")
    return re.compile("|".join(long))


def _pieces(secrets: set[str]) -> list[str]:
    """Return each secret, decoded too, and its pieces between libpq's cuts, longest first."""
    pieces: set[str] = set()
    for secret in secrets:
        if secret == HIDDEN:
            continue
        for form in {secret, unquote(secret), unquote(secret, "latin-1")}:
            pieces.add(form)
            pieces.update(_CUTS.split(form))
    pieces.discard("")
    pieces.discard(HIDDEN)
    return sorted(pieces, key=len, reverse=True)


def _secret_spans(text: str, *, whole: bool) -> list[tuple[int, int]]:
    """Return where the secrets of ``text`` stand, as ``(start, end)`` pairs.

    ``whole``: ``text`` is one URL or connection string; else a message, in
    which a URL ends at the first whitespace.
    """
    spans: list[tuple[int, int]] = []
    outside: list[tuple[int, int]] = []  # what no URL covers
    # A "password=..." of a connection string may hold "x:/": no URL starts there.
    values = _assignment_spans(text, 0, len(text), standalone=True)
    done = 0
    for match in _SCHEME.finditer(text):
        if match.start() < done or any(a <= match.start() < b for a, b in values):
            continue  # a URL inside another's query, or inside a password
        end = len(text) if whole else _token_end(text, match.end())
        outside.append((done, match.start()))
        spans += _url_spans(text, match.end(), end)
        done = end
    outside.append((done, len(text)))
    for start, end in outside:
        spans += _assignment_spans(text, start, end)
    return spans


def _token_end(text: str, start: int) -> int:
    """Return where the URL starting at ``start`` of a message ends: at whitespace.

    Unless its userinfo has a password and no ``@`` yet: the password holds a
    space, and runs to the next ``@`` on the line.
    """
    end = _SPACE.search(text, start)
    if end is None:
        return len(text)
    user = _USER.match(text, start, end.start())
    if (
        user is not None
        and text.find("@", start, end.start()) < 0
        and not _PORT.match(text, user.end(), end.start())
    ):
        newline = text.find("\n", start)
        at = text.find("@", end.start(), len(text) if newline < 0 else newline)
        if at >= 0:
            return _token_end(text, at)
    return end.start()


def _url_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Return where the URL in ``text[start:end]`` (after ``scheme://``) holds secrets."""
    spans: list[tuple[int, int]] = []
    # Only names libpq knows start a parameter: "?QUUX=" inside a password
    # neither ends the password nor cuts a secret value short.
    names = [
        name
        for name in _PARAMETER.finditer(text, start, end)
        if unquote(name[1]).strip().lower() in LIBPQ_PARAMETERS
    ]
    user = _USER.match(text, start, end)
    if user is not None:
        # The password ends at the last "@" before the query ("?name="), else
        # at the last "@" of all: it may hold "@", "/", "?" and "#" unencoded.
        at = text.rfind("@", user.end(), names[0].start()) if names else -1
        if at < 0:
            at = text.rfind("@", user.end(), end)
        if at < 0 and not _PORT.match(text, user.end(), end):
            # No "@" at all: "user:password" without a host, not "host:port".
            at = min(
                (i for i in (text.find(c, user.end(), end) for c in "/?") if i >= 0), default=end
            )
        if at > user.end():
            spans.append((user.end(), at))
    # Every secret parameter of the query, even one the password swallowed.
    for index, name in enumerate(names):
        if unquote(name[1]).strip().lower() not in SECRET_PARAMETERS:
            continue
        # The value runs to the next "&name=" (libpq splits the query at "&"
        # only): an unencoded "&", or "?name=", in it stays hidden.
        after = [n.start() for n in names[index + 1 :] if text[n.start()] == "&"]
        stop = after[0] if after else end
        if stop > name.end():
            spans.append((name.end(), stop))
    return spans


def _assignment_spans(
    text: str, start: int, end: int, *, standalone: bool = False
) -> list[tuple[int, int]]:
    """Return where the values of secret ``key=value`` pairs in ``text[start:end]`` stand.

    ``standalone``: only pairs of a connection string, not ``?key=`` or
    ``&key=`` of a URL's query.
    """
    spans: list[tuple[int, int]] = []
    for match in _ASSIGNMENT.finditer(text, start, end):
        if standalone and match.start() > 0 and text[match.start() - 1] in "?&":
            continue
        value = position = match.end()
        quoted = position < end and text[position] == "'"
        if quoted:
            position += 1
        while position < end:
            char = text[position]
            if char == "\\":
                position += 2
                continue
            if (quoted and char == "'") or (not quoted and char.isspace()):
                position += quoted
                break
            position += 1
        position = min(position, end)
        if position > value:
            spans.append((value, position))
    return spans
