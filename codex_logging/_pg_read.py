"""PostgreSQL reads for the command line: the same shapes as the SQLite reads.

``codex-logs query`` and ``codex-logs sessions`` given a ``postgresql://`` URL
call these; each opens a ``READ ONLY`` transaction and never creates a schema.
Events of every source are merged by ``ts``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from codex_logging._errors import DatabaseError, UnknownSessionError
from codex_logging._pg_db import connect, display_url, import_psycopg, table_exists, translated
from codex_logging._schema import EVENT_COLUMNS, SESSION_COLUMNS

_QUERY_COLUMNS: Final = ", ".join(EVENT_COLUMNS)


@contextmanager
def _reader(url: str) -> Iterator[Any]:
    name = display_url(url)
    conn = connect(url, read_only=True)
    try:
        with translated(name), conn.transaction():  # READ ONLY (connect)
            if not table_exists(conn, "session_events"):
                msg = f"{name} has no session_events table (run 'codex-logs sync --db URL' first)"
                raise DatabaseError(msg)
            yield conn
    finally:
        conn.close()


def query_postgres(
    url: str,
    session_id: str | None = None,
    tail: int = 20,
    kind: str | None = None,
    *,
    levels: Sequence[str] | None = None,
    role: str | None = None,
    grep: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[dict[str, Any]]:
    """Return the latest ``tail`` events, oldest first, merged across sources by ``ts``.

    Args:
        url: A ``postgresql://`` URL.
        session_id: Only this session.
        tail: How many events.
        kind: Only events of this kind.
        levels: Only events stored with one of these level names (the CLI
            expands ``--level warning`` into every name at or above it).
        role: Only events of this role.
        grep: Only events whose message holds this text (any case).
        since: Only events at or after this Unix time.
        until: Only events before this Unix time.

    Returns:
        One dict per event with the keys session_id, seq, ts, kind, level,
        logger, role, message and data, as the SQLite query returns.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: The session has no events.
    """
    filters = (
        ("session_id = %s", session_id),
        ("kind = %s", kind),
        ("level = ANY(%s)", None if levels is None else list(levels)),
        ("role = %s", role),
        ("strpos(lower(message), lower(%s)) > 0", grep),
        ("ts >= %s", since),
        ("ts < %s", until),
    )
    where = [clause for clause, value in filters if value is not None]
    params = [value for _clause, value in filters if value is not None]
    sql = f"SELECT {_QUERY_COLUMNS} FROM session_events"  # noqa: S608 - constants, values as %s
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ts DESC NULLS LAST, session_id DESC, source_id DESC, seq DESC LIMIT %s"
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        if session_id is not None:
            probe = "SELECT 1 FROM session_events WHERE session_id = %s LIMIT 1"
            if cur.execute(probe, (session_id,)).fetchone() is None:
                msg = f"unknown session {session_id} in {display_url(url)}"
                raise UnknownSessionError(msg)
        rows = cur.execute(sql, (*params, tail)).fetchall()
    return list(reversed(rows))


def sessions_postgres(url: str, session_id: str | None = None) -> list[dict[str, Any]]:
    """Return one row per session id, every source merged, oldest first.

    Args:
        url: A ``postgresql://`` URL.
        session_id: Only this session.

    Returns:
        Dicts with the keys of :data:`SESSION_COLUMNS`, as the SQLite
        ``sessions`` read returns them: ``status`` is ``error`` when any
        ``end`` record failed, ``ok`` when the session ended, else None.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: ``session_id`` has no events.
    """
    sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"  # noqa: S608 - constants
    params: tuple[str, ...] = ()
    if session_id is not None:
        sql += " WHERE session_id = %s"
        params = (session_id,)
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        rows = cur.execute(sql + " ORDER BY start_ts, session_id", params).fetchall()
    if session_id is not None and not rows:
        msg = f"unknown session {session_id} in {display_url(url)}"
        raise UnknownSessionError(msg)
    return list(rows)
