"""PostgreSQL reads for the command line: the same shapes as the SQLite reads.

``codex-logs query`` and ``codex-logs sessions`` given a ``postgresql://`` URL
call these; each opens a ``READ ONLY`` transaction and never creates a schema.
Events of every source are merged by ``ts``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from codex_logging._errors import DatabaseError, UnknownSessionError
from codex_logging._mirror.filters import (
    NOT_GREPPED,
    NUMERIC_OPERATORS,
    FieldTest,
    Filters,
    check_tail,
    resolve_level,
    standard_names,
    where_number,
)
from codex_logging._mirror.liveness import abandoned
from codex_logging._mirror.pages import (
    ALERT_LIMIT,
    TIMELINE_EXACT_EVENTS,
    check_status,
    timeline_shape,
)
from codex_logging._mirror.schema import EVENT_COLUMNS, LEVEL_ALIASES, LEVELS, SESSION_COLUMNS
from codex_logging._postgres.db import (
    connect,
    display_url,
    import_psycopg,
    table_exists,
    translated,
)

_QUERY_COLUMNS: Final = ", ".join(EVENT_COLUMNS)
#: Where each row of a query came from: its source, and that source's host and
#: folder, so rows of a session synced from many machines can be told apart.
_SOURCE_COLUMNS: Final = (
    "session_events.source_id AS source_id,"
    " (SELECT s.host FROM sources s WHERE s.source_id = session_events.source_id) AS host,"
    " (SELECT s.folder FROM sources s WHERE s.source_id = session_events.source_id) AS folder"
)


@contextmanager
def _reader(url: str) -> Iterator[Any]:
    name = display_url(url)
    conn = connect(url, read_only=True)
    try:
        with translated(name), conn.transaction():  # READ ONLY (connect)
            _check_synced(conn, name)
            yield conn
    finally:
        conn.close()


def _check_synced(conn: Any, name: str) -> None:
    if not table_exists(conn, "session_events"):
        msg = f"{name} has no session_events table (run 'codex-logs sync --db URL' first)"
        raise DatabaseError(msg)


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
        logger, role, message and data, as the SQLite query returns, then
        where the row came from: source_id, host and folder.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: The session has no events.
    """
    levels = None if levels is None else tuple(levels)
    where = Filters(session_id, kind, since, until, levels, grep, role)
    return query_where(url, where, tail)


def query_where(url: str, where: Filters, tail: int | None = 20) -> list[dict[str, Any]]:
    """Return the latest ``tail`` events matching ``where``, oldest first.

    Args:
        url: A ``postgresql://`` URL.
        where: The filters.
        tail: How many events; ``None`` for every one that matches.

    Returns:
        One dict per event.
    """
    if tail is not None:
        check_tail(tail)
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        return _tail(cur, url, _resolve_level(cur, where), tail)


def _levelno_sql(table: str) -> str:
    # A record's levelno read from its line: the key as the writers put it,
    # unquoted (a quote inside a text value is escaped, so only a key matches).
    return f"substring({table}.data from '\"levelno\": ?(-?[0-9]{{1,9}})[,}}]')::integer"


def _standard_sql(table: str) -> str:
    # A standard level name's number, in any case.
    whens = "".join(
        f" WHEN '{name}' THEN {LEVELS[LEVEL_ALIASES.get(name, name)]}" for name in standard_names()
    )
    return f"CASE upper({table}.level){whens} END"


def _resolve_level(cur: Any, filters: Filters) -> Filters:
    # A level name that is not standard (--level success): the number the
    # mirror holds for it, looked up once.
    def lookup(name: str) -> int | None:
        sql = (
            f"SELECT {_levelno_sql('session_events')} AS levelno"  # noqa: S608 - constants
            " FROM session_events WHERE upper(level) = %s AND strpos(data, '\"levelno\"') > 0"
            " LIMIT 1"
        )
        row = cur.execute(sql, (name,)).fetchone()
        return None if row is None else row["levelno"]

    def held() -> list[str]:
        rows = cur.execute("SELECT DISTINCT level FROM session_events").fetchall()
        return [row["level"] for row in rows]

    return resolve_level(filters, lookup, held)


#: The record's JSON as ``jsonb`` (``data`` is stored as text).
_RECORD: Final = "{table}.data::jsonb"


def postgres_where(filters: Filters, table: str = "session_events") -> tuple[list[str], list[Any]]:
    """Return the ``WHERE`` terms of ``filters`` and their parameters (``%s``).

    A level name in ``filters.min_level`` must have been resolved to its number.
    """
    levels = None if filters.levels is None else list(filters.levels)
    terms = (
        (f"{table}.session_id = %s", filters.session_id),
        (f"{table}.kind = %s", filters.kind),
        (f"{table}.level = ANY(%s)", levels),
        (f"{table}.role = %s", filters.role),
        (f"{table}.logger = %s", filters.logger),
        (f"{table}.ts >= %s", filters.since),
        (f"{table}.ts < %s", filters.until),
    )
    where = [clause for clause, value in terms if value is not None]
    params = [value for _clause, value in terms if value is not None]
    record = _RECORD.format(table=table)
    if filters.grep is not None:
        # The message, or the value of a field but those in NOT_GREPPED (a
        # nested value as its JSON text), as the SQLite mirror searches.
        where.append(
            f"(strpos(lower({table}.message), lower(%s)) > 0 OR EXISTS (SELECT 1 FROM"  # noqa: S608 - names from constants
            f" jsonb_each({record}) AS f(key, value) WHERE f.key <> ALL(%s) AND strpos(lower("
            "CASE jsonb_typeof(f.value) WHEN 'string' THEN f.value #>> '{}' ELSE f.value::text END"
            "), lower(%s)) > 0))"
        )
        params += [filters.grep, sorted(NOT_GREPPED), filters.grep]
    for test in filters.fields:
        term, values = _field_term(test, record)
        where.append(term)
        params += values
    if filters.min_level is not None:
        # A standard name is answered from the column; any other level (a
        # loguru SUCCESS, a "Level 25") by the levelno its record carries.
        where.append(
            f"({table}.level = ANY(%s) OR (NOT ({table}.level = ANY(%s)) AND"
            f" coalesce({_levelno_sql(table)}, {_standard_sql(table)}) >= %s))"
        )
        minimum = int(filters.min_level)
        params += [list(standard_names(minimum)), list(standard_names()), minimum]
    return where, params


def _field_term(test: FieldTest, record: str) -> tuple[str, list[Any]]:
    # One --where test, as the SQLite mirror reads it (_sqlite/read.py).
    if test.op in NUMERIC_OPERATORS:
        term = (
            f"(jsonb_typeof({record} -> %s) = 'number' AND ({record} ->> %s)::float8 {test.op} %s)"
        )
        return term, [test.key, test.key, test.value]
    text = (
        f"(CASE jsonb_typeof({record} -> %s) WHEN 'string' THEN {record} ->> %s"
        f" WHEN 'object' THEN NULL WHEN 'array' THEN NULL ELSE ({record} -> %s)::text END)"
    )
    compare = "=" if test.op == "=" else "IS DISTINCT FROM"
    term, params = f"{text} {compare} %s", [test.key, test.key, test.key, test.value]
    if where_number(str(test.value)) is None:
        return term, params
    # A number given (ASCII, one a float holds), a field holding one: compared
    # as numbers (1e-07 is 1e-7), exactly, as jsonb keeps them.
    op = "=" if test.op == "=" else "<>"
    compare = f"({record} -> %s)::numeric {op} %s::numeric"
    term = f"(CASE WHEN jsonb_typeof({record} -> %s) = 'number' THEN {compare} ELSE {term} END)"
    return term, [test.key, test.key, str(test.value), *params]


def _tail(cur: Any, url: str, where: Filters, tail: int | None) -> list[dict[str, Any]]:
    clauses, params = postgres_where(where)
    sql = f"SELECT {_QUERY_COLUMNS}, {_SOURCE_COLUMNS} FROM session_events"  # noqa: S608 - constants
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY ts DESC NULLS LAST, session_id DESC, source_id DESC, seq DESC LIMIT %s"
    if where.session_id is not None:
        probe = "SELECT 1 FROM session_events WHERE session_id = %s LIMIT 1"
        if cur.execute(probe, (where.session_id,)).fetchone() is None:
            msg = f"unknown session {where.session_id} in {display_url(url)}"
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
        ``end`` record failed, ``terminated`` when its latest end says a
        signal ended it, ``ok`` when it ended otherwise, ``abandoned`` when it
        did not and every process that started it on this machine is gone,
        else None.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: ``session_id`` has no events.
    """
    sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"  # noqa: S608 - constants
    params: tuple[str, ...] = ()
    if session_id is not None:
        sql += " WHERE session_id = %s"
        params = (session_id,)
    starts = "SELECT data FROM session_events WHERE session_id = %s AND kind = 'start'"
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        rows = cur.execute(sql + " ORDER BY start_ts, session_id", params).fetchall()
        for row in rows:
            if row["status"] is None:
                found = cur.execute(starts, (row["session_id"],)).fetchall()
                if abandoned(start["data"] for start in found):
                    row["status"] = "abandoned"
    if session_id is not None and not rows:
        msg = f"unknown session {session_id} in {display_url(url)}"
        raise UnknownSessionError(msg)
    return list(rows)


def latest_session_postgres(url: str) -> str | None:
    """Return the id of the session that started last, or None when there is none."""
    sql = (
        "SELECT session_id FROM sessions ORDER BY start_ts DESC NULLS LAST, session_id DESC LIMIT 1"
    )
    with _reader(url) as conn, conn.cursor() as cur:
        row = cur.execute(sql).fetchone()
    return None if row is None else str(row[0])


def follow_postgres(
    url: str, where: Filters, tail: int | None = 20, *, interval: float = 0.5
) -> Iterator[list[dict[str, Any]]]:
    """Yield the latest ``tail`` events, then each poll's new ones, like ``tail -f``.

    A sync moves each ``(source, session)`` watermark in the transaction that
    inserts the rows up to it, so the rows at or below a watermark are all
    there in any snapshot that shows it. Each poll reads the watermarks and
    the rows between the last shown watermark and the new one in one
    ``REPEATABLE READ`` snapshot: every row is shown once, whatever order
    concurrent syncs from many machines commit in. New events come oldest
    first by ``ts``.

    Args:
        url: A ``postgresql://`` URL.
        where: The filters.
        tail: How many events the first batch holds.
        interval: Seconds between polls.

    Yields:
        Lists of event dicts; an empty list when nothing new landed.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: The session has no events.
    """
    if tail is not None:
        check_tail(tail)
    name = display_url(url)
    psycopg = import_psycopg()
    conn = connect(url, read_only=True)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            with translated(name), conn.transaction():
                _check_synced(conn, name)
                where = _resolve_level(cur, where)
                events = _tail(cur, url, where, tail)
                shown = _marks(cur, where.session_id)
            yield events
            while True:
                time.sleep(interval)
                with translated(name), conn.transaction():
                    marks = _marks(cur, where.session_id)
                    moved = [
                        (key, shown.get(key, 0), seq)
                        for key, seq in marks.items()
                        if seq > shown.get(key, 0)
                    ]
                    events = _between(cur, where, moved) if moved else []
                shown = marks
                yield events
    finally:
        conn.close()


def _marks(cur: Any, session_id: str | None) -> dict[tuple[str, str], int]:
    # The last seq each (source, session) has in the mirror.
    sql = "SELECT source_id, session_id, seq FROM session_ingest_watermark"
    params: tuple[str, ...] = ()
    if session_id is not None:
        sql += " WHERE session_id = %s"
        params = (session_id,)
    return {(r["source_id"], r["session_id"]): int(r["seq"]) for r in cur.execute(sql, params)}


def _between(
    cur: Any, where: Filters, moved: Sequence[tuple[tuple[str, str], int, int]]
) -> list[dict[str, Any]]:
    # The rows above the last shown seq, up to the watermark, of each moved
    # (source, session), through the primary key.
    clauses, params = postgres_where(where)
    sql = (
        f"SELECT {_QUERY_COLUMNS}, {_SOURCE_COLUMNS} FROM session_events"  # noqa: S608 - constants
        " JOIN unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[])"
        " AS w(w_source, w_session, w_after, w_upto)"
        " ON source_id = w_source AND session_id = w_session AND seq > w_after AND seq <= w_upto"
    )
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY ts NULLS LAST, session_id, source_id, seq"
    ranges = (
        [key[0] for key, _, _ in moved],
        [key[1] for key, _, _ in moved],
        [after for _, after, _ in moved],
        [upto for _, _, upto in moved],
    )
    return list(cur.execute(sql, (*ranges, *params)).fetchall())


# -- pages: what the web viewer reads (docs/viewer.md) ------------------------

#: Where a page of events starts: after the row with this ``(ts, source_id, seq)``.
Cursor = tuple[float | None, str, int]

_PID: Final = (
    "CASE WHEN codex_json(data) ->> 'pid' ~ '^-?[0-9]{1,18}$'"
    " THEN (codex_json(data) ->> 'pid')::bigint END"
)


def sessions_page_postgres(
    url: str,
    *,
    search: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[int, list[dict[str, Any]]]:
    """Return how many sessions match and one page of them, newest first.

    As the SQLite ``sessions_page``: ``search`` is a part of the id (any
    case), ``status`` one of ``ok``, ``error``, ``terminated``, ``running``.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
    """
    where: list[str] = []
    params: list[Any] = []
    if search:
        where.append("strpos(lower(session_id), lower(%s)) > 0")
        params.append(search)
    if status is not None and check_status(status) == "running":
        where.append("status IS NULL")
    elif status is not None:
        where.append("status = %s")
        params.append(status)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM sessions{clause}", params).fetchone()["n"]  # noqa: S608
        rows = cur.execute(
            f"SELECT {', '.join(SESSION_COLUMNS)}, sources FROM sessions{clause}"  # noqa: S608
            " ORDER BY start_ts DESC NULLS LAST, session_id DESC LIMIT %s OFFSET %s",
            (*params, limit, offset),
        ).fetchall()
    return int(count), list(rows)


def events_page_postgres(
    url: str, where: Filters, *, after: Cursor | None = None, limit: int = 200
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Return one session's events after ``after``, every source merged by ``ts``.

    Pages follow ``(ts, source_id, seq)`` (rows without a time last), along
    the ``(session_id, ts)`` index.

    Args:
        url: A ``postgresql://`` URL.
        where: The filters; ``session_id`` is required.
        after: The last row of the previous page; None for the first page.
        limit: How many events at most.

    Returns:
        One dict per event, the keys of :data:`EVENT_COLUMNS` and ``source_id``;
        and the ``after`` of the next page: the last row's for a full page,
        else the session's last row now (rows that did not match are not
        read again).

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: The session has no events.
    """
    if where.session_id is None:
        msg = "events_page_postgres needs a session_id"
        raise ValueError(msg)
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        return _events_page(cur, url, _resolve_level(cur, where), after, limit)


def _events_page(
    cur: Any, url: str, where: Filters, after: Cursor | None, limit: int
) -> tuple[list[dict[str, Any]], Cursor | None]:
    clauses, params = postgres_where(where)
    if after is not None:
        ts, source, seq = after
        if ts is None:
            clauses.append("ts IS NULL AND (source_id, seq) > (%s, %s)")
            params.extend((source, seq))
        else:
            clauses.append("((ts, source_id, seq) > (%s, %s, %s) OR ts IS NULL)")
            params.extend((ts, source, seq))
    sql = (
        f"SELECT {_QUERY_COLUMNS}, source_id FROM session_events"  # noqa: S608 - constants
        f" WHERE {' AND '.join(clauses)}"
        " ORDER BY ts NULLS LAST, source_id, seq LIMIT %s"
    )
    rows = cur.execute(sql, (*params, limit)).fetchall()
    last = rows[-1] if len(rows) == limit else None
    if last is None:
        probe = (
            "SELECT ts, source_id, seq FROM session_events WHERE session_id = %s"
            " ORDER BY ts DESC NULLS FIRST, source_id DESC, seq DESC LIMIT 1"
        )
        last = cur.execute(probe, (where.session_id,)).fetchone()
        if last is None:
            msg = f"unknown session {where.session_id} in {display_url(url)}"
            raise UnknownSessionError(msg)
    return list(rows), (last["ts"], last["source_id"], int(last["seq"]))


def timeline_postgres(url: str, session_id: str, *, bins: int = 120) -> dict[str, Any]:
    """Return what a session's timeline draws, in the shape the SQLite ``timeline`` returns.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
        UnknownSessionError: The session has no events.
    """
    with _reader(url) as conn, conn.cursor(row_factory=import_psycopg().rows.dict_row) as cur:
        summary = cur.execute(
            "SELECT sum(events) AS events, min(first_ts) AS start, max(last_ts) AS end"
            " FROM session_summary WHERE session_id = %s",
            (session_id,),
        ).fetchone()
        if summary["events"] is None:
            msg = f"unknown session {session_id} in {display_url(url)}"
            raise UnknownSessionError(msg)
        marks = cur.execute(
            f"SELECT seq, ts, kind, {_PID} AS pid, codex_json(data) ->> 'status' AS status"  # noqa: S608
            " FROM session_events WHERE session_id = %s AND kind <> 'message'"
            " ORDER BY ts NULLS LAST, source_id, seq",
            (session_id,),
        ).fetchall()
        alerts = cur.execute(
            f"SELECT seq, ts, level, {_PID} AS pid FROM session_events"  # noqa: S608
            " WHERE session_id = %s AND level IN ('WARNING', 'WARN', 'ERROR', 'CRITICAL', 'FATAL')"
            " ORDER BY ts NULLS LAST, source_id, seq LIMIT %s",
            (session_id, ALERT_LIMIT),
        ).fetchall()
        start, end = summary["start"], summary["end"]
        exact = int(summary["events"]) <= TIMELINE_EXACT_EVENTS
        counts: list[tuple[Any, int, int]] = []
        if start is not None and end is not None:
            width = max(end - start, 1e-9) / bins
            pid = _PID if exact else "NULL::bigint"
            rows = cur.execute(
                f"SELECT {pid} AS pid, least(floor((ts - %s) / %s)::int, %s) AS b,"  # noqa: S608
                " count(*) AS n FROM session_events WHERE session_id = %s AND ts IS NOT NULL"
                " GROUP BY 1, 2",
                (start, width, bins - 1, session_id),
            ).fetchall()
            counts = [(row["pid"], row["b"], int(row["n"])) for row in rows]
    return timeline_shape(start, end, bins, marks, alerts, counts=counts, exact=exact)
