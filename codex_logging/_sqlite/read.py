"""The read model: events and sessions out of the mirror, read-only.

``query`` returns the latest events, ``follow`` the ones that land after them,
``sessions`` one summary per session. A database that has only the older
``logs(ts, session, kind, message)`` table that hand-written scripts create is
read too (docs/cli.md). The command line and ``query_logs`` call these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sqlite3
import time
from collections.abc import Generator, Iterable, Iterator
from datetime import datetime
from typing import Any, Final, cast

from codex_logging._errors import DatabaseError, UnknownSessionError
from codex_logging._mirror.compact import BIT
from codex_logging._mirror.filters import (
    NOT_GREPPED,
    NUMERIC_OPERATORS,
    FieldTest,
    Filters,
    build,
    check_tail,
    field_text,
    level_number,
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
from codex_logging._mirror.schema import EVENT_COLUMNS, LEVELS, SESSION_COLUMNS
from codex_logging._settings import (
    ENV_DB_PATH,
    check_found_database,
    db_path,
    validate_session_id,
)
from codex_logging._sqlite.db import (
    ABOVE_INFO,
    ALERT_LEVELS,
    COMPACT_LANDED,
    GREP_INDEX,
    LEGACY_TABLE,
    connect_readonly,
    reading,
    table_names,
)


@dataclasses.dataclass(frozen=True)
class Source:
    """Where events are read from: the mirror's table or the older ``logs``."""

    table: str
    session: str
    order: str
    columns: str
    legacy: bool
    #: Where ``follow`` finds rows in the order they landed: a FROM clause
    #: with a ``_rowid`` column, and the table whose largest rowid is the last.
    landed: str = ""
    rows: str = ""
    #: The full-text index ``--grep`` may answer from is there.
    grep_index: bool = False


EVENTS: Final = Source(
    "session_events",
    "session_id",
    "seq",
    ", ".join(EVENT_COLUMNS),
    legacy=False,
    landed="(SELECT rowid AS _rowid, * FROM session_events)",
    rows="session_events",
)
#: ``session_events`` as the view over the compact tables (docs/mirror.md,
#: "Each value stored once"): the rows land in ``session_rows``.
#: Read as a derived table that also has the row's ``_rowid``: what the grep
#: index gives back (SQLite flattens it into the query, indexes and all).
COMPACT: Final = dataclasses.replace(
    EVENTS, table=COMPACT_LANDED, landed=COMPACT_LANDED, rows="session_rows"
)
LOGS: Final = Source(
    "logs",
    "session",
    "rowid",
    "session AS session_id, rowid AS seq, ts, kind, message",
    legacy=True,
    landed="(SELECT rowid AS _rowid, * FROM logs)",
    rows="logs",
)


#: Events a single ``follow`` poll returns at most.
_FOLLOW_BATCH: Final = 1000


def _contains(message: object, needle: str) -> bool:
    # Python's casefold, not SQLite's ASCII-only LIKE: "Über" matches "über".
    return isinstance(message, str) and needle in message.casefold()


@functools.lru_cache(maxsize=64)
def _spelled_as_is(needle: str) -> bool:
    # Whether JSON writes the needle as it is (no quote, backslash or control
    # to escape): then a line that holds it holds its very text. Once a needle,
    # not once a row.
    return needle == json.dumps(needle, ensure_ascii=False)[1:-1]


def _grep(message: object, data: object, needle: str) -> bool:
    # --grep: the message, then the value of every field but the columns in
    # NOT_GREPPED (a nested value as its JSON text). The record's JSON text is
    # looked at first, so only a row that may match is parsed; a needle JSON
    # would escape cannot be looked for in that text.
    if _contains(message, needle):
        return True
    if not isinstance(data, str):
        return False
    plain = _spelled_as_is(needle) and "\\u" not in data
    if plain and needle not in data.casefold():  # "\u00e9" in the text may be the needle's "é"
        return False
    try:
        record = json.loads(data)
        return isinstance(record, dict) and any(
            needle in field_text(value).casefold()
            for key, value in record.items()
            if key not in NOT_GREPPED
        )
    except (ValueError, TypeError, RecursionError):
        # Not a record (a damaged page reads as any text): no match here;
        # SQLite itself reports the damage when it reaches it.
        return False


def _grep_row(  # noqa: PLR0917 - a function SQLite calls
    message: object, logger: object, role: object, shape: object, fields: object, needle: str
) -> bool:
    # --grep on a compact row (docs/mirror.md, "Each value stored once"): as
    # _grep on its whole record, without writing the record out. The
    # logger and role columns hold the record's own texts when their bits
    # are in shape; otherwise they are in fields, like every other field.
    if _contains(message, needle):
        return True
    if isinstance(shape, int):
        if shape & _LOGGER_BIT and _contains(logger, needle):
            return True
        if shape & _ROLE_BIT and _contains(role, needle):
            return True
    return isinstance(fields, str) and _grep(None, fields, needle)


_LOGGER_BIT: Final = BIT["logger"]
_ROLE_BIT: Final = BIT["role"]


def _levelno(level: object, data: object) -> int | None:
    # A record's level number: its levelno field, else its standard name's.
    # Called only for rows whose level is not a standard name (sqlite_where).
    levelno = None
    if isinstance(data, str) and '"levelno"' in data:
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if isinstance(record, dict):
            levelno = record.get("levelno")
    return level_number(level, levelno)


def _open(database: str | None) -> tuple[str, sqlite3.Connection]:
    path = db_path(database)
    if database is None and not os.environ.get(ENV_DB_PATH):
        check_found_database(path)  # found by the search, not named
    conn = connect_readonly(path)
    conn.isolation_level = None  # explicit BEGIN: one snapshot for tail and follow
    conn.row_factory = sqlite3.Row
    conn.create_function("codex_contains", 2, _contains, deterministic=True)
    conn.create_function("codex_levelno", 2, _levelno, deterministic=True)
    conn.create_function("codex_grep", 3, _grep, deterministic=True)
    conn.create_function("codex_grep_row", 6, _grep_row, deterministic=True)
    return path, conn


def _resolve_level(conn: sqlite3.Connection, filters: Filters) -> Filters:
    # A level name that is not standard (--level success): the number the
    # mirror holds for it, looked up once.
    def lookup(name: str) -> int | None:
        rows = conn.execute(
            "SELECT level, data FROM session_events"
            " WHERE upper(level) = ? AND instr(data, '\"levelno\"') > 0 LIMIT 1",
            (name,),
        )
        for level, data in rows:
            return _levelno(level, data)
        return None

    def held() -> list[str]:
        return [row[0] for row in conn.execute("SELECT DISTINCT level FROM session_events")]

    return resolve_level(filters, lookup, held)


def _source(conn: sqlite3.Connection, path: str) -> Source:
    tables = table_names(conn)
    if "session_rows" in tables and LEGACY_TABLE not in tables:
        return dataclasses.replace(COMPACT, grep_index=GREP_INDEX in tables)
    if "session_events" in tables:
        return EVENTS
    if "logs" in tables:
        return LOGS
    msg = f"{path} has no session_events or logs table"
    raise DatabaseError(msg)


def _level_terms(filters: Filters) -> tuple[list[str], list[Any]]:
    # --level: a standard name is answered from the column; any other level
    # (a loguru SUCCESS, a "Level 25") by the levelno its record carries.
    terms: list[str] = []
    params: list[Any] = []
    if filters.levels:
        terms.append(f"level IN ({', '.join('?' * len(filters.levels))})")
        params.extend(filters.levels)
    if filters.min_level is not None:
        minimum = int(filters.min_level)
        at_or_above, every = standard_names(minimum), standard_names()
        terms.append(
            f"(level IN ({', '.join('?' * len(at_or_above))}) OR (level NOT IN"
            f" ({', '.join('?' * len(every))}) AND codex_levelno(level, data) >= ?))"
        )
        params.extend((*at_or_above, *every, minimum))
        if minimum > LEVELS["INFO"]:
            # Implied by the minimum; said word for word so SQLite may answer
            # from the partial index on those rows (docs/mirror.md, "Indexes").
            terms.append(ABOVE_INFO)
    return terms, params


def _grep_terms(typed: str, source: Source) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    needle = typed.casefold()
    # ASCII as typed, not only once folded: "straße" folds to "strasse",
    # which the index (folding one character at a time) does not hold.
    if source.grep_index and len(needle) >= 3 and typed.isascii() and _spelled_as_is(needle):
        # The rows whose message or fields' text holds the needle's
        # trigrams (docs/mirror.md, "The grep index"); the test below
        # still decides, on the fields' values alone.
        where.append("_rowid IN (SELECT rowid FROM session_grep WHERE session_grep MATCH ?)")
        params.append('"' + needle.replace('"', '""') + '"')
    if source.legacy:
        grep = "codex_contains(message, ?)"
    elif source.rows == "session_rows":
        grep = "codex_grep_row(message, logger, role, _shape, _fields, ?)"
    else:
        grep = "codex_grep(message, data, ?)"
    where.append(grep)
    params.append(needle)
    return where, params


def sqlite_where(filters: Filters, source: Source) -> tuple[list[str], list[Any]]:
    """Return the WHERE terms of ``filters`` and their parameters (``?``) for ``source``."""
    where: list[str] = []
    params: list[Any] = []
    lacking = (
        filters.levels,
        filters.min_level,
        filters.role,
        filters.since,
        filters.until,
        filters.logger,
    )
    if source.legacy and (any(value is not None for value in lacking) or filters.fields):
        msg = (
            "filtering by level, role, logger, time or field (--level, --role, --since,"
            " --until, --where) needs the session_events table; this database has only"
            " the older logs table"
        )
        raise DatabaseError(msg)
    if filters.session_id is not None:
        where.append(f"{source.session} = ?")
        params.append(filters.session_id)
    if filters.kind is not None:
        where.append("kind = ?")
        params.append(filters.kind)
        if filters.kind != "message" and not source.legacy:
            # Word for word the condition of the partial indexes on the
            # rare start/end rows, so SQLite may answer from them.
            where.append("kind <> 'message'")
    terms, values = _level_terms(filters)
    where.extend(terms)
    params.extend(values)
    if filters.grep is not None:
        terms, values = _grep_terms(filters.grep, source)
        where += terms
        params += values
    equal = (
        ("role = ?", filters.role),
        ("logger = ?", filters.logger),
        ("ts >= ?", filters.since),
        ("ts < ?", filters.until),
    )
    for term, value in equal:
        if value is not None:
            where.append(term)
            params.append(value)
    for test in filters.fields:
        term, values = _field_term(test)
        where.append(term)
        params.extend(values)
    return where, params


def _field_term(test: FieldTest) -> tuple[str, list[Any]]:
    # One --where test on the record's JSON (docs/cli.md): text compares a
    # scalar field as text (true, false and null as JSON spells them), numbers
    # only match fields that hold a number. A missing field, a list or an
    # object is "not equal".
    # A line SQLite's JSON cannot read (NaN, Infinity) matches no test.
    path = f'$."{test.key}"'
    data = "(CASE WHEN json_valid(data) THEN data END)"
    if test.op in NUMERIC_OPERATORS:
        term = (
            f"(json_type({data}, ?) IN ('integer', 'real') AND json_extract({data}, ?) {test.op} ?)"
        )
        return term, [path, path, test.value]
    text = (
        f"(CASE json_type({data}, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
        " WHEN 'null' THEN 'null' WHEN 'object' THEN NULL WHEN 'array' THEN NULL"
        f" ELSE CAST(json_extract({data}, ?) AS TEXT) END)"
    )
    if test.op == "=":
        term, params = f"{text} = ?", [path, path, test.value]
    else:
        term, params = f"({text} IS NULL OR {text} <> ?)", [path, path, path, path, test.value]
    number = where_number(str(test.value))
    if number is None:
        return term, params
    # A number given, a field holding one: compared as numbers, not as
    # SQLite's 15-digit text of the field (0.3 is not 0.30000000000000004).
    op = "=" if test.op == "=" else "<>"
    numeric = f"json_type({data}, ?) IN ('integer', 'real')"
    term = f"(CASE WHEN {numeric} THEN json_extract({data}, ?) {op} ? ELSE {term} END)"
    return term, [path, path, number, *params]


class _Reader:
    """One read-only connection and the filters of one query."""

    def __init__(self, database: str | None, filters: Filters) -> None:
        self.path, self.conn = _open(database)
        try:
            with reading(self.path):
                self.source = _source(self.conn, self.path)
                if not self.source.legacy:
                    filters = _resolve_level(self.conn, filters)
            self.where, self.params = sqlite_where(filters, self.source)
        except BaseException:
            self.conn.close()
            raise
        self.session_id = filters.session_id
        # Within one session, start/end records are few: found through the
        # partial index on them, then sorted. "+seq" keeps SQLite from
        # walking the whole session backwards along the primary key instead.
        self.seq_order = (
            "+seq" if filters.kind in {"start", "end"} and not self.source.legacy else None
        )

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        # One read transaction; a statement stopped by the timeout has
        # rolled it back already, and a COMMIT then would mask why.
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def _check_session(self) -> None:
        if self.session_id is None:
            return
        probe = f"SELECT 1 FROM {self.source.table} WHERE {self.source.session} = ? LIMIT 1"  # noqa: S608
        if self.conn.execute(probe, (self.session_id,)).fetchone() is None:
            msg = f"unknown session {self.session_id} in {self.path}"
            raise UnknownSessionError(msg)

    def tail(self, count: int | None) -> tuple[int, list[dict[str, Any]]]:
        """Return the last rowid now and the latest ``count`` events (None: all), oldest first."""
        src = self.source
        if self.session_id is not None:
            order = f"{self.seq_order or src.order} DESC"
        else:
            order = f"ts DESC, {src.session} DESC, {src.order} DESC"
        sql = f"SELECT {src.columns} FROM {src.table}"  # noqa: S608 - names from constants, values as ?
        if self.where:
            sql += " WHERE " + " AND ".join(self.where)
        sql += f" ORDER BY {order} LIMIT ?"
        with reading(self.path), self._snapshot():
            self._check_session()
            (last,) = self.conn.execute(f"SELECT MAX(rowid) FROM {src.rows}").fetchone()  # noqa: S608
            limit = -1 if count is None else count
            rows = self.conn.execute(sql, (*self.params, limit)).fetchall()
        return last or 0, [dict(row) for row in reversed(rows)]

    def after(self, rowid: int) -> tuple[int, list[dict[str, Any]]]:
        """Return the events stored after ``rowid``, in the order they landed."""
        src = self.source
        where = ["_rowid > ?", "_rowid <= ?", *self.where]
        sql = (
            f"SELECT _rowid, {src.columns} FROM {src.landed}"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY _rowid LIMIT ?"
        )
        with reading(self.path), self._snapshot():
            (last,) = self.conn.execute(f"SELECT MAX(rowid) FROM {src.rows}").fetchone()  # noqa: S608
            rows = self.conn.execute(sql, (rowid, last, *self.params, _FOLLOW_BATCH)).fetchall()
        events = [dict(row) for row in rows]
        for event in events:
            rowid = event.pop("_rowid")
        # Rows that did not match are not looked at again, unless a full
        # batch leaves some matching ones for the next call.
        return (rowid if len(events) == _FOLLOW_BATCH else last or rowid), events


def query(
    database: str | None = None,
    session_id: str | None = None,
    tail: int | None = 20,
    kind: str | None = None,
    *,
    since: float | str | datetime | None = None,
    until: float | str | datetime | None = None,
    level: str | int | None = None,
    grep: str | None = None,
    role: str | None = None,
    where: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Return the latest ``tail`` events, oldest first.

    Within a session "latest" is file order (``seq``); across sessions, ``ts``.
    Reads ``session_events``, or the older ``logs(ts, session, kind, message)``
    table when that is all the database has. Example::

        for event in query(session_id="run-42", tail=50, level="warning", since="2h"):
            print(event["ts"], event["message"])

    Args:
        database: The database path; by default ``CODEX_LOG_DB_PATH`` or
            ``.codex/session_logs.db``.
        session_id: Only this session.
        tail: How many events; ``None`` for every one that matches.
        kind: Only events of this kind: ``start``, ``message`` or ``end``.
        since: Only events at or after this moment: Unix seconds, a datetime,
            an ISO time, or an age such as ``10m`` (that long ago).
        until: Only events before this moment, in the same forms.
        level: Only events at this level or above (``warning``: warnings,
            errors and critical): a standard name, a level name the mirror
            holds (``success``), ``Level 25``, or a number. A record's number
            is its ``levelno``, else its standard name's.
        grep: Only events whose message or a field's value holds this text,
            ignoring case.
        role: Only events with this role.
        where: Tests on record fields, each ``KEY=VALUE``, ``KEY!=VALUE``,
            ``KEY>NUMBER`` or ``KEY<NUMBER`` (also ``>=``, ``<=``); all must hold.

    Returns:
        One dict per event: ``session_id, seq, ts, kind, level, logger, role,
        message, data`` (the older table: ``session_id, seq, ts, kind, message``).

    Raises:
        DatabaseNotFoundError: There is no database.
        UnknownSessionError: The session has no events.
        InvalidFilterError: An unknown kind or level, a bad time, a ``tail`` not 1 to 2**63-1.
        DatabaseError: The database has neither table.
    """
    batches = cast(
        "Generator[list[dict[str, Any]], None, None]",
        follow(
            database,
            session_id,
            tail,
            kind,
            since=since,
            until=until,
            level=level,
            grep=grep,
            role=role,
            where=where,
        ),
    )
    # The first batch of follow is this answer; closing the generator
    # closes its reader.
    with contextlib.closing(batches):
        return next(batches)


def follow(
    database: str | None = None,
    session_id: str | None = None,
    tail: int | None = 20,
    kind: str | None = None,
    *,
    interval: float = 0.5,
    since: float | str | datetime | None = None,
    until: float | str | datetime | None = None,
    level: str | int | None = None,
    grep: str | None = None,
    role: str | None = None,
    where: Iterable[str] = (),
) -> Iterator[list[dict[str, Any]]]:
    """Yield the latest ``tail`` events, then the new ones as syncs land, like ``tail -f``.

    The first batch is what :func:`query` returns; later ones hold the events
    stored since, in the order they landed, checked every ``interval`` seconds.
    It never ends by itself: stop iterating (Ctrl-C in the command line).

    Args:
        database: As for :func:`query`.
        session_id: As for :func:`query`.
        tail: As for :func:`query`.
        kind: As for :func:`query`.
        interval: Seconds between looks at the database.
        since: As for :func:`query`.
        until: As for :func:`query`.
        level: As for :func:`query`.
        grep: As for :func:`query`.
        role: As for :func:`query`.
        where: As for :func:`query`.

    Yields:
        Lists of event dicts; an empty list when nothing new landed.

    Raises:
        DatabaseNotFoundError: There is no database.
        UnknownSessionError: The session has no events.
        InvalidFilterError: An unknown kind or level, a bad time, a ``tail`` not 1 to 2**63-1.
        DatabaseError: The database has neither table.
    """
    filters = build(
        session_id=session_id,
        kind=kind,
        since=since,
        until=until,
        level=level,
        grep=grep,
        role=role,
        where=where,
    )
    if tail is not None:
        check_tail(tail)
    reader = _Reader(database, filters)
    with contextlib.closing(reader):
        last, events = reader.tail(tail)
        yield events
        while True:
            time.sleep(interval)
            last, events = reader.after(last)
            yield events


def sessions(database: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
    """Return one summary per session, oldest first, from the ``sessions`` view.

    Args:
        database: The database path; by default ``CODEX_LOG_DB_PATH`` or
            ``.codex/session_logs.db``.
        session_id: Only this session.

    Returns:
        One dict per session with the keys of :data:`SESSION_COLUMNS`:
        ``status`` is ``error`` when any ``end`` record failed,
        ``terminated`` when its latest end (by time, then seq) says a signal
        ended it, ``ok`` when it ended otherwise, ``abandoned`` when it did
        not and every process that started it on this machine is gone, else
        None.

    Raises:
        DatabaseNotFoundError: There is no database.
        UnknownSessionError: The session has no events.
        DatabaseError: The database has no ``sessions`` view, or an older one.
    """
    if session_id is not None:
        validate_session_id(session_id)
    path, conn = _open(database)
    with contextlib.closing(conn), reading(path):
        if "sessions" not in table_names(conn):
            msg = f"{path} has no sessions view (run 'codex-logs sync' first)"
            raise DatabaseError(msg)
        have = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
        if not set(SESSION_COLUMNS) <= have:
            msg = f"{path} has an older schema (run 'codex-logs sync' once to upgrade it)"
            raise DatabaseError(msg)
        sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"  # noqa: S608 - constants
        params: tuple[str, ...] = ()
        if session_id is not None:
            sql += " WHERE session_id = ?"
            params = (session_id,)
        found = [dict(row) for row in conn.execute(sql + " ORDER BY start_ts, session_id", params)]
        starts = "SELECT data FROM session_events WHERE session_id = ? AND kind = 'start'"
        for row in found:
            if row["status"] is None and abandoned(
                start[0] for start in conn.execute(starts, (row["session_id"],))
            ):
                row["status"] = "abandoned"
    if session_id is not None and not found:
        msg = f"unknown session {session_id} in {path}"
        raise UnknownSessionError(msg)
    return found


def latest_session(database: str | None = None) -> str | None:
    """Return the id of the session that started last, or None when there is none.

    Raises:
        DatabaseNotFoundError: There is no database.
        DatabaseError: The database has no ``sessions`` view.
    """
    path, conn = _open(database)
    with contextlib.closing(conn), reading(path):
        if "sessions" not in table_names(conn):
            msg = f"{path} has no sessions view (run 'codex-logs sync' first)"
            raise DatabaseError(msg)
        row = conn.execute(
            "SELECT session_id FROM sessions ORDER BY start_ts DESC, session_id DESC LIMIT 1"
        ).fetchone()
    return None if row is None else str(row[0])


# -- pages: what the web viewer reads (docs/viewer.md) ------------------------

_PID: Final = "json_extract(CASE WHEN json_valid(data) THEN data END, '$.pid')"


def _open_mirror(database: str | None) -> tuple[str, sqlite3.Connection]:
    path, conn = _open(database)
    tables = table_names(conn)
    if "session_events" not in tables or "session_summary" not in tables:
        conn.close()
        msg = f"{path} has no session mirror of this version (run 'codex-logs sync' once)"
        raise DatabaseError(msg)
    return path, conn


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def sessions_page(
    database: str | None = None,
    *,
    search: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[int, list[dict[str, Any]]]:
    """Return how many sessions match and one page of them, newest first.

    Args:
        database: The database path, as for :func:`query`.
        search: Only sessions whose id holds this text (any case).
        status: Only ``ok``, ``error``, ``terminated`` or ``running`` (not
            ended) sessions.
        offset: How many matching sessions to pass over.
        limit: How many to return at most.

    Returns:
        The count of matching sessions and their summaries (the keys of
        :data:`SESSION_COLUMNS`), latest start first.

    Raises:
        DatabaseNotFoundError: There is no database.
        DatabaseError: The database has no mirror of this version.
        InvalidFilterError: An unknown status.
    """
    where, params = _session_terms(search, status)
    path, conn = _open_mirror(database)
    with contextlib.closing(conn), reading(path):
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        conn.execute("BEGIN")
        try:
            (count,) = conn.execute(f"SELECT COUNT(*) FROM sessions{clause}", params).fetchone()  # noqa: S608
            rows = conn.execute(
                f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions{clause}"  # noqa: S608 - constants
                " ORDER BY start_ts DESC, session_id DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        finally:
            if conn.in_transaction:  # a read stopped by the timeout rolled it back
                conn.execute("COMMIT")
    return count, [dict(row) for row in rows]


def _session_terms(search: str | None, status: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if search:
        where.append("session_id LIKE ? ESCAPE '\\'")
        params.append(_like(search))
    if status is not None:
        if check_status(status) == "running":
            where.append("status IS NULL")
        else:
            where.append("status = ?")
            params.append(status)
    return where, params


def events_page(
    database: str | None, filters: Filters, *, after: int = 0, limit: int = 200
) -> tuple[list[dict[str, Any]], int]:
    """Return one session's events after ``after`` in file order, and where the next page starts.

    Each page is read along the primary key from ``after``: the first page of
    a session of a million events costs what a page of a small one does.

    Args:
        database: The database path, as for :func:`query`.
        filters: The filters; ``session_id`` is required.
        after: Only events whose ``seq`` is above this (0: from the first).
        limit: How many events at most.

    Returns:
        At most ``limit`` dicts, one per event (the keys of :data:`EVENT_COLUMNS`), by ``seq``,
        fewer than ``limit`` when the session has no more yet; and the
        ``after`` of the next page: the last row's ``seq`` for a full page,
        else the session's last ``seq`` now, so rows that did not match are
        not read again.

    Raises:
        DatabaseNotFoundError: There is no database.
        UnknownSessionError: The session has no events.
        DatabaseError: The database has no mirror of this version.
    """
    if filters.session_id is None:
        msg = "events_page needs a session_id"
        raise ValueError(msg)
    path, conn = _open_mirror(database)
    with contextlib.closing(conn), reading(path):
        where, params = sqlite_where(_resolve_level(conn, filters), EVENTS)
        sql = (
            f"SELECT {EVENTS.columns} FROM session_events"  # noqa: S608 - constants, values as ?
            f" WHERE {' AND '.join(['seq > ?', *where])} ORDER BY seq LIMIT ?"
        )
        conn.execute("BEGIN")
        try:
            rows = conn.execute(sql, (after, *params, limit)).fetchall()
            if len(rows) == limit:
                following = int(rows[-1]["seq"])
            else:
                last = "SELECT MAX(seq) FROM session_events WHERE session_id = ?"
                (top,) = conn.execute(last, (filters.session_id,)).fetchone()
                if top is None:
                    msg = f"unknown session {filters.session_id} in {path}"
                    raise UnknownSessionError(msg)
                following = max(after, int(top))
        finally:
            if conn.in_transaction:  # a read stopped by the timeout rolled it back
                conn.execute("COMMIT")
    return [dict(row) for row in rows], following


def seq_at(database: str | None, session_id: str, ts: float) -> int:
    """Return the ``seq`` of a session's first event at or after ``ts``.

    When none is, one past its last ``seq`` (1 for a session with none): the
    events that come later, and no earlier one, follow it.

    Raises:
        DatabaseNotFoundError: There is no database.
        DatabaseError: The database has no mirror of this version.
    """
    path, conn = _open_mirror(database)
    with contextlib.closing(conn), reading(path):
        row = conn.execute(
            "SELECT seq FROM session_events WHERE session_id = ? AND ts >= ? ORDER BY ts LIMIT 1",
            (session_id, ts),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT coalesce(MAX(seq), 0) + 1 FROM session_events WHERE session_id = ?",
                (session_id,),
            ).fetchone()
    return int(row[0])


def timeline(database: str | None, session_id: str, *, bins: int = 120) -> dict[str, Any]:
    """Return what a session's timeline draws: its span, processes, alerts and event counts.

    Args:
        database: The database path, as for :func:`query`.
        session_id: The session.
        bins: How many equal slices of time the counts are given in.

    Returns:
        ``start`` and ``end`` (Unix seconds, first and last event), ``bins``
        (events per slice, all processes), ``processes``: per pid its
        ``spans`` (``[start_ts, end_ts or None, status or None]`` from its
        start/end records), ``alerts`` (``[ts, level, seq]``, warnings and
        worse, at most :data:`ALERT_LIMIT` per session) and ``bins`` (its events per slice;
        only when the session has at most :data:`TIMELINE_EXACT_EVENTS`
        events, else None), and ``exact``: whether every process's bins were
        counted.

    Raises:
        DatabaseNotFoundError: There is no database.
        UnknownSessionError: The session has no events.
        DatabaseError: The database has no mirror of this version.
    """
    validate_session_id(session_id)
    path, conn = _open_mirror(database)
    with contextlib.closing(conn), reading(path):
        conn.execute("BEGIN")
        try:
            summary = conn.execute(
                "SELECT events, first_ts, last_ts FROM session_summary WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if summary is None:
                msg = f"unknown session {session_id} in {path}"
                raise UnknownSessionError(msg)
            marks = conn.execute(
                f"SELECT seq, ts, kind, {_PID} AS pid,"  # noqa: S608 - constants
                " json_extract(CASE WHEN json_valid(data) THEN data END, '$.status') AS status"
                " FROM session_events WHERE session_id = ? AND kind <> 'message' ORDER BY +seq",
                (session_id,),
            ).fetchall()
            alerts = conn.execute(
                f"SELECT seq, ts, level, {_PID} AS pid FROM session_events"  # noqa: S608
                f" WHERE session_id = ? AND {ALERT_LEVELS} ORDER BY +seq LIMIT ?",
                (session_id, ALERT_LIMIT),
            ).fetchall()
            start, end = summary["first_ts"], summary["last_ts"]
            exact = summary["events"] <= TIMELINE_EXACT_EVENTS
            counts = _bin_counts(conn, session_id, start, end, bins, per_pid=exact)
        finally:
            if conn.in_transaction:  # a read stopped by the timeout rolled it back
                conn.execute("COMMIT")
    return timeline_shape(start, end, bins, marks, alerts, counts=counts, exact=exact)


def _bin_counts(
    conn: sqlite3.Connection,
    session_id: str,
    start: float | None,
    end: float | None,
    bins: int,
    *,
    per_pid: bool,
) -> list[tuple[Any, int, int]]:
    # (pid or None, bin, count). Every row's pid only for a small session;
    # else one COUNT per slice along the (session_id, ts) index, which walks
    # no table row (a GROUP BY over the slice number costs 4x: a temporary
    # B-tree over every row).
    if start is None or end is None:
        return []
    width = max(end - start, 1e-9) / bins
    if per_pid:
        sql = (
            f"SELECT {_PID} AS pid, MIN(CAST((ts - ?) / ? AS INTEGER), {bins - 1}),"  # noqa: S608
            " COUNT(*) FROM session_events WHERE session_id = ? AND ts IS NOT NULL GROUP BY 1, 2"
        )
        return [tuple(row) for row in conn.execute(sql, (start, width, session_id))]
    count = "SELECT COUNT(*) FROM session_events WHERE session_id = ? AND ts >= ? AND ts < ?"
    edges = [start + index * width for index in range(bins)] + [float("inf")]
    return [
        (
            None,
            index,
            conn.execute(count, (session_id, edges[index], edges[index + 1])).fetchone()[0],
        )
        for index in range(bins)
    ]
