"""Settings under both halves: environment names, defaults, paths, the id check.

The write side (handler, processor, scope) and the mirror side (sync, database,
command line) each import this module and never each other (ARCHITECTURE.md,
"What must never import what").
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
from collections.abc import Callable
from typing import Final

from codex_logging._errors import InvalidFilterError, InvalidSessionId, UnsafePathError

ENV_SESSION_ID: Final = "CODEX_SESSION_ID"
ENV_DB_PATH: Final = "CODEX_LOG_DB_PATH"
ENV_SESSIONS_DIR: Final = "CODEX_SESSIONS_DIR"
#: The scope (``<pid>.<n>``) a child process was started in, set by child_env().
ENV_PARENT_SCOPE: Final = "CODEX_PARENT_SCOPE"
#: ``0`` stops session_scope from recording SIGTERM / SIGHUP as its end.
ENV_SCOPE_SIGNALS: Final = "CODEX_SCOPE_SIGNALS"
#: Overrides the id of a sessions folder that mirrors record (docs/scale-out.md).
ENV_SOURCE_ID: Final = "CODEX_SOURCE_ID"
#: ``1`` accepts folders and files that other users own or may write (a
#: deliberate shared set-up); by default they are refused, as OpenSSH's
#: StrictModes refuses them.
ENV_ALLOW_SHARED: Final = "CODEX_ALLOW_SHARED"
#: Seconds one SQLite read statement may run before it is stopped; ``0``: no limit.
ENV_QUERY_TIMEOUT: Final = "CODEX_QUERY_TIMEOUT"
#: The default of ``CODEX_QUERY_TIMEOUT``: far above any read the indexes answer
#: (docs/performance.md), short of a hang.
QUERY_TIMEOUT: Final = 60.0
SUFFIX: Final = ".ndjson"
#: Default wait, in seconds, for a database or a session file locked by another
#: writer (docs/mirror.md, "A busy database").
BUSY_TIMEOUT: Final = 10.0
#: The folder looked for upward, as git looks for ``.git``, by writers and commands alike.
PROJECT_DIR: Final = ".codex"

#: The characters of a session id, as a regex class's contents: A-Z a-z 0-9 _ . -
#: (docs/configuration.md, "Which session a record goes to"). Spelled out
#: instead of \w so that unicode look-alikes never pass.
ID_CHARACTERS: Final = r"A-Za-z0-9_.\-"
# 1 to 128 of them, not starting with "." or "-".
_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9_][{ID_CHARACTERS}]{{0,127}}")

#: Entries of each bounded cache of names a program may make up at run time
#: (session ids, paths, field names, clean texts): past this, no more are kept.
CACHE_SIZE: Final = 4096
_valid_ids: set[str] = set()


def validate_session_id(value: object) -> str:
    """Return ``value`` if it is a valid session id.

    Args:
        value: The candidate id.

    Returns:
        The id, unchanged.

    Raises:
        InvalidSessionId: If it is not a string of the allowed shape.

    """
    if isinstance(value, str) and value in _valid_ids:
        return value
    if not isinstance(value, str) or _ID_PATTERN.fullmatch(value) is None:
        error = InvalidSessionId(invalid_id_message(value))
        error.value = value
        raise error
    if len(_valid_ids) < CACHE_SIZE:  # bounded: a program may mint ids forever
        _valid_ids.add(value)
    return value


def invalid_id_message(value: object, show: Callable[[str], str] | None = None) -> str:
    """Return :class:`InvalidSessionId`'s message for ``value``.

    Args:
        value: The value refused.
        show: Applied to the value's ``repr`` before it is cut to 60
            characters (a redactor: a secret set as the id by mistake must be
            found whole, not cut before its end).
    """
    shown = repr(value) if show is None else show(repr(value))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    rule = (
        "it must be a string"
        if not isinstance(value, str)
        else "use 1 to 128 characters of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"
    )
    return f"invalid session id {shown}: {rule}"


def is_valid_session_id(value: object) -> bool:
    """Return whether ``value`` is a valid session id (see :func:`validate_session_id`)."""
    try:
        validate_session_id(value)
    except InvalidSessionId:
        return False
    return True


def sessions_dir_path(value: str | os.PathLike[str] | None = None) -> str:
    """Return the absolute sessions folder: ``value``, the environment, or the project's.

    Args:
        value: An explicit folder, relative to the working directory.

    Returns:
        An absolute path, fixed now so that a later ``chdir`` changes nothing:
        ``value``, else ``CODEX_SESSIONS_DIR``, else ``sessions`` in
        :func:`project_codex_dir` (docs/configuration.md, "Which folder").

    """
    return _absolute(value, ENV_SESSIONS_DIR, "sessions")


def db_path(value: str | os.PathLike[str] | None = None) -> str:
    """Return the absolute database path: ``value``, the environment, or the project's.

    Args:
        value: An explicit path, relative to the working directory.

    Returns:
        An absolute path: ``value``, else ``CODEX_LOG_DB_PATH``, else
        ``session_logs.db`` in :func:`project_codex_dir`.

    """
    return _absolute(value, ENV_DB_PATH, "session_logs.db")


def _absolute(value: str | os.PathLike[str] | None, env: str, name: str) -> str:
    # Explicit value, else the variable (set but empty counts as unset), else
    # the project's .codex/; made absolute against the working directory now.
    chosen = value if value is not None else os.environ.get(env)
    if chosen:
        return os.path.abspath(os.fspath(chosen))
    return os.path.join(project_codex_dir(), name)


def make_dirs(path: str) -> None:
    """Create ``path`` and its missing parents with mode ``0700``.

    ``os.makedirs`` applies its mode to the last folder only; every folder this
    library creates is ``0700`` (docs/production.md, "Permissions").

    Args:
        path: An absolute folder path.

    """
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            os.mkdir(folder, 0o700)


def shared_allowed() -> bool:
    """Return whether ``CODEX_ALLOW_SHARED=1`` opts out of the ownership checks."""
    return os.environ.get(ENV_ALLOW_SHARED, "") == "1"


def check_private(path: str, info: os.stat_result) -> None:
    """Refuse a folder or file that another user owns or may write; repair our own folders.

    Records are kept for a long time and hold what programs log: a folder or
    file planted by someone else (``0777`` in a shared working directory) would
    let them read or rewrite it. Like OpenSSH's StrictModes, such a path is
    refused unless ``CODEX_ALLOW_SHARED=1`` says the sharing is deliberate.
    A folder with the sticky bit (``/tmp``) may be group/other writable.

    A ``.codex`` folder, or a folder directly inside one (``sessions``), that
    the running user owns but group or other may write (made by ``mkdir``
    under umask ``002``) is tightened to ``0700`` instead, said once on
    stderr (docs/configuration.md, "Environment").

    Args:
        path: The path, for the message.
        info: Its ``stat`` (or ``fstat``, or ``lstat``) result.

    Raises:
        UnsafePathError: A symlink, owned by another user, or writable by
            group or other (and not one of our folders that could be repaired).

    """
    if shared_allowed():
        return
    uid = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        msg = (
            f"refusing {path}: it is a symlink; replace it with a folder of its own,"
            f" or name the real folder in {ENV_SESSIONS_DIR} / {ENV_DB_PATH}"
        )
        raise UnsafePathError(errno.ELOOP, msg)
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
        writable = 0
    if info.st_uid not in (uid, 0):
        msg = (
            f"refusing {path}: owned by uid {info.st_uid}, not {uid}; use a folder of your own"
            f" (remove it, or set {ENV_SESSIONS_DIR} / {ENV_DB_PATH}),"
            f" or set {ENV_ALLOW_SHARED}=1 for a deliberately shared folder"
        )
        raise UnsafePathError(errno.EPERM, msg)
    if writable and not (info.st_uid == uid and _repair(path, info)):
        mode = stat.S_IMODE(info.st_mode)
        msg = (
            f"refusing {path}: writable by group or other (mode {mode:04o});"
            f" run chmod go-w {path}, or set {ENV_ALLOW_SHARED}=1 for a deliberately shared folder"
        )
        raise UnsafePathError(errno.EPERM, msg)


#: Folders this process tightened, each said once on stderr.
_repaired: set[str] = set()


def _repair(path: str, info: os.stat_result) -> bool:
    """Tighten one of our own folders to ``0700``; False when it is not one or cannot be."""
    if not stat.S_ISDIR(info.st_mode):
        return False
    parent = os.path.dirname(path)
    if PROJECT_DIR not in (os.path.basename(path), os.path.basename(parent)):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino) or now.st_uid != os.geteuid():
            return False  # swapped since it was looked at: refuse rather than guess
        os.fchmod(fd, 0o700)
    except OSError:
        return False
    finally:
        os.close(fd)
    if path not in _repaired and len(_repaired) < 64:
        _repaired.add(path)
        mode = stat.S_IMODE(info.st_mode)
        with contextlib.suppress(Exception):  # a closed stderr changes nothing
            sys.stderr.write(
                f"codex_logging: {path} was writable by group or other"
                f" (mode {mode:04o}); tightened it to 0700\n"
            )
            sys.stderr.flush()
    return True


def is_postgres_url(value: object) -> bool:
    """Return whether a ``--db`` value or ``CODEX_LOG_DB_PATH`` names PostgreSQL.

    Args:
        value: A database path or URL.

    Returns:
        True for ``postgresql://`` and ``postgres://`` URLs.

    """
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def find_project_dir(start: str | None = None) -> str | None:
    """Return the nearest ``.codex`` folder in ``start`` or its parents that holds logs.

    A ``.codex`` folder counts only when it holds a ``sessions`` folder or a
    ``session_logs.db``. The search stops at a folder that has ``.git`` (after
    looking in it: that is the project's root) and at the home directory,
    whose own ``.codex`` is never taken: OpenAI's Codex CLI keeps its settings
    and ``sessions/`` there, and it must not capture every folder under the
    home directory (docs/configuration.md, "Which folder").

    Args:
        start: Where to begin; the working directory by default.

    Returns:
        The folder's absolute path, or None when the search found none.

    """
    current = os.path.realpath(start if start is not None else os.getcwd())
    home = _home()
    while True:
        if current == home:
            return None
        candidate = os.path.join(current, PROJECT_DIR)
        if os.path.isdir(os.path.join(candidate, "sessions")) or os.path.isfile(
            os.path.join(candidate, "session_logs.db")
        ):
            return candidate
        parent = os.path.dirname(current)
        if parent == current or os.path.lexists(os.path.join(current, ".git")):
            return None
        current = parent


def project_codex_dir(start: str | None = None) -> str:
    """Return the project's ``.codex`` folder: :func:`find_project_dir`'s, else ``./.codex``.

    The one rule by which the handler, the processor, ``session_scope`` and
    every command find the folder when neither an argument nor an
    environment variable names it.

    Args:
        start: Where to begin; the working directory by default.

    Returns:
        An absolute path (it may not exist yet).

    """
    found = find_project_dir(start)
    if found is not None:
        return found
    return os.path.join(os.path.abspath(start if start is not None else os.getcwd()), PROJECT_DIR)


def _home() -> str | None:
    # The home directory as the working directory would spell it (a symlinked
    # $HOME resolved); None when there is none to find.
    home = os.path.expanduser("~")
    if home == "~" or not os.path.isabs(home):
        return None
    return os.path.realpath(home)


def project_paths(
    db: str | None, sessions_dir: str | None, start: str | None = None
) -> tuple[str | None, str | None, str | None]:
    """Fill in the database and sessions folder from the nearest ``.codex`` folder.

    A value given explicitly or by its environment variable stays as it is
    (None for the environment's, which the library reads itself); one given
    by neither comes from :func:`find_project_dir`, as git finds ``.git``
    (docs/cli.md).

    Args:
        db: ``--db``, or None.
        sessions_dir: ``--sessions-dir``, or None.
        start: Where to begin looking; the working directory by default.

    Returns:
        The database and the sessions folder to pass on (None: the
        environment's or the default), and the ``.codex`` folder found
        (None when none was found or none was needed).

    """
    need_db = db is None and not os.environ.get(ENV_DB_PATH)
    need_dir = sessions_dir is None and not os.environ.get(ENV_SESSIONS_DIR)
    found = find_project_dir(start) if need_db or need_dir else None
    if found is not None:
        if need_db:
            db = os.path.join(found, "session_logs.db")
        if need_dir:
            sessions_dir = os.path.join(found, "sessions")
    return db, sessions_dir, found


def check_found_database(database: str) -> None:
    """Refuse a database found by searching upward that another user could have planted.

    A command run in ``/tmp/x/src`` with no ``--db`` would otherwise read
    ``/tmp/.codex/session_logs.db`` made by another account (git's
    ``safe.directory`` problem). The ``.codex`` folder, the database and its
    ``-wal`` / ``-shm`` pass :func:`check_private`, as the writer's paths do; a
    database named by ``--db`` or ``CODEX_LOG_DB_PATH`` is not looked at.

    Args:
        database: The database path the search gave (``<.codex>/session_logs.db``).

    Raises:
        UnsafePathError: One of them is a symlink, another user's, or writable
            by group or other; the message names it and the fix.

    """
    folder = os.path.dirname(database)
    try:
        for path in (folder, database, database + "-wal", database + "-shm"):
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            check_private(path, info)
    except UnsafePathError as exc:
        msg = (
            f"{exc}; it was found by searching up from {os.getcwd()}:"
            f" name a database with --db (or {ENV_DB_PATH}) to read it anyway"
        )
        raise UnsafePathError(errno.EPERM, msg) from None


def query_timeout() -> float:
    """Return how long one SQLite read statement may run: ``CODEX_QUERY_TIMEOUT`` or the default.

    Returns:
        Seconds; ``0`` for no limit.

    Raises:
        InvalidFilterError: The variable is not a number of seconds from 0 to a day.

    """
    value = os.environ.get(ENV_QUERY_TIMEOUT)
    if not value:
        return QUERY_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:  # NaN fails too
        msg = f"{ENV_QUERY_TIMEOUT} must be seconds from 0 (no limit) to 86400, not {value!r}"
        raise InvalidFilterError(msg)
    return seconds
