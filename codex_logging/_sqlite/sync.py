"""sync_to_sqlite: the SQLite target of the sync engine (``_mirror/engine.py``).

The engine reads the files; this module only writes: each batch of rows with
its watermark in one ``BEGIN IMMEDIATE`` transaction (docs/mirror.md, "Sync").
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Final

from codex_logging._errors import DatabaseDamagedError, InvalidFilterError
from codex_logging._mirror import target as _target
from codex_logging._mirror.compact import encoded, rest_of
from codex_logging._mirror.engine import LONG_LINE_BYTES, run_sync
from codex_logging._mirror.lines import ErrorRow, EventRow, column_text, record_in, values_of
from codex_logging._mirror.target import WATERMARK_FIELDS, Progress, SyncReport
from codex_logging._settings import db_path as resolve_db_path
from codex_logging._settings import sessions_dir_path
from codex_logging._sqlite.db import (
    BUSY_TIMEOUT,
    INSERT_ROW,
    PID_OF,
    atomic,
    changed_outside,
    connect,
    put_back,
    quick_check,
    remember_state,
    session_key,
    set_aside,
    translated,
)

_INSERT_ERROR: Final = (
    "INSERT INTO session_ingest_errors (session_id, seq, byte_offset, error, raw)"
    " VALUES (?, ?, ?, ?, ?)"
)
#: The watermark's columns after session_id, in the order of :class:`Watermark`'s fields.
_WATERMARK_COLUMNS: Final = ", ".join(WATERMARK_FIELDS)
_UPSERT_WATERMARK: Final = (
    f"INSERT INTO session_ingest_watermark (session_id, {_WATERMARK_COLUMNS}, updated_at)"  # noqa: S608 - constants only
    f" VALUES (?, {', '.join('?' for _ in WATERMARK_FIELDS)}, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in (*WATERMARK_FIELDS, "updated_at"))
)


#: Whether the batch's latest end is later (by ts, then seq) than the row's.
_LATER_END: Final = (
    "excluded.end_ts IS NOT NULL AND (end_ts IS NULL OR excluded.end_ts > end_ts"
    " OR (excluded.end_ts = end_ts AND excluded.end_seq > end_seq))"
)
#: One session's batch added to its ``session_summary`` row (migrations 4
#: and 10): counts add up, bounds widen (SQLite's two-argument min/max are
#: NULL when either side is, hence the COALESCE), a failure stays, the latest
#: end's seq and status follow the later end. The SET expressions all read
#: the row as it was.
_UPSERT_SUMMARY: Final = (
    "INSERT INTO session_summary (session_id, events, marks, warnings, errors, processes,"  # noqa: S608 - constants only
    " start_ts, end_ts, first_ts, last_ts, failed, end_seq, end_status)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET"
    f" end_seq = CASE WHEN {_LATER_END} THEN excluded.end_seq ELSE end_seq END,"
    f" end_status = CASE WHEN {_LATER_END} THEN excluded.end_status ELSE end_status END,"
    " events = events + excluded.events, marks = marks + excluded.marks,"
    " warnings = warnings + excluded.warnings, errors = errors + excluded.errors,"
    " processes = processes + excluded.processes,"
    " start_ts = COALESCE(min(start_ts, excluded.start_ts), start_ts, excluded.start_ts),"
    " end_ts = COALESCE(max(end_ts, excluded.end_ts), end_ts, excluded.end_ts),"
    " first_ts = COALESCE(min(first_ts, excluded.first_ts), first_ts, excluded.first_ts),"
    " last_ts = COALESCE(max(last_ts, excluded.last_ts), last_ts, excluded.last_ts),"
    " failed = max(failed, excluded.failed)"
)
#: The JSON of a start/end line is read by SQLite's own functions, as the
#: summary's backfill and the view before it read it.
#: Plain ``?`` placeholders, the line bound once in a subquery: Python 3.12.1
#: warns (DeprecationWarning, an error under ``-W error``) on numbered ones
#: (``?1``) bound from a tuple (python/cpython#117995).
_ADD_PID: Final = (
    "INSERT OR IGNORE INTO session_summary_pids (session_id, pid)"  # noqa: S608 - constants only
    f" SELECT ?, pid FROM (SELECT {PID_OF.format(line='d')}"
    " AS pid FROM (SELECT ? AS d)) WHERE pid IS NOT NULL"
)
_FAILED: Final = (
    "SELECT json_extract(CASE WHEN json_valid(d) THEN d END, '$.status') = 'error'"
    " FROM (SELECT ? AS d)"
)
_STATUS: Final = (
    "SELECT json_extract(CASE WHEN json_valid(d) THEN d END, '$.status') FROM (SELECT ? AS d)"
)
#: :data:`INSERT_ROW` split at its values, which are written in with the
#: session's key (an integer): a batch's rows then bind one value fewer each,
#: and a row split from its line's text binds its values as they are. (One
#: statement text a session: a session new to the run is compiled once.)
_INSERT_HEAD, _INSERT_VALUES = INSERT_ROW.split("VALUES ")
_ROW_VALUES: Final = _INSERT_VALUES.replace("(?, ", "({sid}, ", 1)
#: Rows a statement inserts: one multi-row VALUES for many rows runs in about
#: three quarters of the time of one statement per row (bench/bench_compact.py).
_ROWS_PER_STATEMENT: Final = 32
_WARNINGS: Final = ("WARNING", "WARN")
_ERRORS: Final = ("ERROR", "CRITICAL", "FATAL")
_TS = itemgetter(2)
_LEVEL = itemgetter(4)

_SQLITE_TOOBIG: Final = 18
#: Room left under SQLite's length limit for a handed-off row's other columns.
_ROW_MARGIN: Final = 1 << 20


def _refused(exc: BaseException) -> bool:
    """Return whether an insert failed because of the row's values, not the database."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # pragma: no cover - Python 3.10 has no error codes
            return "too big" in str(exc)
        return int(code) & 0xFF == _SQLITE_TOOBIG
    return isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | ValueError | OverflowError)


class SqliteTarget:
    """The SQLite database as a sync target; connects on first use."""

    #: Its connection stays in the thread that made it.
    pipelined = False
    #: Its commits are this process's work: a large sync parses in a second
    #: process meanwhile (about 1.4x the rows/s on two processors).
    parse_worker = True

    def __init__(self, path: str, busy_timeout: float) -> None:
        """Remember where; nothing is opened or created yet.

        Args:
            path: The absolute database path.
            busy_timeout: Seconds to wait for another writer's lock.
        """
        self.name = path
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._sound = False  # opened, and checked if it had to be
        # The file as it is at the end is this sync's own when it changed it
        # (created, migrated or committed to it), or when it is as this sync
        # found it sound. A round that wrote nothing and finds the file
        # changed at its end leaves the record alone: damage done meanwhile
        # is still found by the next sync.
        self._wrote = False
        self._seen: tuple[int, int] | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, opened (and the database created) on first use.

        A database whose size or mtime changed since the last sync or prune
        recorded them (something else wrote it) passes SQLite's
        ``quick_check`` first (docs/production.md, "A damaged mirror").
        """
        if self._conn is None:
            changed = changed_outside(self.name)
            before = _file_state(self.name)
            conn = connect(self.name, busy_timeout=self.busy_timeout)
            self._wrote = _file_state(self.name) != before
            if changed:
                try:
                    quick_check(conn, self.name)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
            self._sound = True
            self._seen = _file_state(self.name)
        return self._conn

    def settled_files(self, source_id: str) -> dict[str, _target.SettledRow]:
        """Return the watermarks of folder ``source_id`` with no pending line (see ``Target``).

        Args:
            source_id: The sessions folder's id.

        Returns:
            ``session_id`` -> ``(session_id, byte_offset, file_dev, file_ino, updated_at)``.
        """
        with translated(self.name, self.busy_timeout):
            rows = self.conn.execute(
                "SELECT session_id, byte_offset, coalesce(file_dev, 0), coalesce(file_ino, 0),"
                " coalesce(updated_at, 0.0) FROM session_ingest_watermark"
                " WHERE source_id = ? AND scanned_to <= byte_offset",
                (source_id,),
            )
            return {row[0]: row for row in rows}

    def open_source(self, folder: str) -> str:
        """Return the id of the sessions folder ``folder`` (see ``Target.open_source``).

        Args:
            folder: The absolute sessions folder.

        Returns:
            Its id, the one this database last saw at its path when it has
            no id file.
        """
        return _target.source_id(folder, self._earlier_source)

    def _earlier_source(self, folder: str) -> str | None:
        """Return the id whose latest watermark was written from the path ``folder``, if any.

        Only asked when a folder has no id file. A database belongs to one
        machine, so the path alone names the folder; an id whose latest
        watermark came from another path is a folder that moved there.
        """
        latest: dict[str, tuple[float, str | None]] = {}
        with translated(self.name, self.busy_timeout):
            rows = self.conn.execute(
                "SELECT source_id, coalesce(updated_at, 0.0), source_dir"
                " FROM session_ingest_watermark WHERE source_id IS NOT NULL"
            ).fetchall()
        for source, updated, path in rows:
            if source not in latest or updated >= latest[source][0]:
                latest[source] = (updated, path)
        mine = [(updated, source) for source, (updated, path) in latest.items() if path == folder]
        return max(mine)[1] if mine else None

    def same_file(
        self, source_id: str, file_dev: int, file_ino: int
    ) -> list[tuple[str, _target.Watermark]]:
        """Return this folder's watermarks of the file ``(dev, ino)`` (see ``Target.same_file``)."""
        with translated(self.name, self.busy_timeout):
            rows = self.conn.execute(
                f"SELECT session_id, {_WATERMARK_COLUMNS} FROM session_ingest_watermark"  # noqa: S608 - constant
                " WHERE file_ino = ? AND file_dev = ? AND source_id = ?",
                (file_ino, file_dev, source_id),
            ).fetchall()
        return [(row[0], _target.Watermark.from_row(row[1:])) for row in rows]

    def read_watermark(self, session_id: str) -> _target.Watermark | None:
        """Return one session's watermark.

        Args:
            session_id: The session.

        Returns:
            Its watermark, or None when it has none yet.
        """
        with translated(self.name, self.busy_timeout):
            row = self.conn.execute(
                f"SELECT {_WATERMARK_COLUMNS} FROM session_ingest_watermark WHERE session_id = ?",  # noqa: S608 - constant
                (session_id,),
            ).fetchone()
        return None if row is None else _target.Watermark.from_row(row)

    def commit(self, batch: _target.Batch) -> int:
        """Insert a batch and move the watermark in one transaction (see ``Target.commit``).

        Args:
            batch: The session's next rows and watermark.

        Returns:
            The number of event rows inserted.

        Raises:
            WatermarkMovedError: Another sync moved the watermark meanwhile.
        """
        self._wrote = True
        try:
            return self._commit(batch, one_by_one=False)
        except _RefusedError:
            # One row the database refuses must not fail the batch: the batch is
            # rolled back and written again row by row, the culprit quarantined.
            return self._commit(batch, one_by_one=True)

    def _commit(self, batch: _target.Batch, *, one_by_one: bool) -> int:
        session_id, events, errors = batch.session_id, batch.events, batch.errors
        conn = self.conn
        with atomic(conn, self.name, self.busy_timeout):
            # Compare and set: if the watermark moved since this sync read it
            # (another sync got a lock on a new file at the same path, after a
            # rotation), this batch is dropped rather than duplicated.
            row = conn.execute(
                "SELECT seq FROM session_ingest_watermark WHERE session_id = ?", (session_id,)
            ).fetchone()
            if (row[0] if row else 0) != batch.expected_seq:
                raise _target.WatermarkMovedError
            # Looked up in the transaction: a rolled-back batch takes its new key with it.
            sid = session_key(conn, {}, session_id) if events else 0
            handoff = None if one_by_one or errors else _handoff(conn, sid, events)
            if handoff is not None:
                if not _insert_handed_off(conn, handoff, events[0], batch.offsets[0]):
                    events = []
            elif one_by_one:
                events = _insert_one_by_one(conn, sid, events, errors, batch.offsets)
            else:
                try:
                    if events:
                        # A row split already (most are) holds its values: no call.
                        rows = [values_of(row) if row[10] is None else row[10] for row in events]
                        _insert_rows(conn, sid, rows)
                    if errors:
                        conn.executemany(_INSERT_ERROR, errors)
                except Exception as exc:
                    if _refused(exc):
                        raise _RefusedError from exc
                    raise
            if events:
                _add_to_summary(conn, session_id, events)
            values = (getattr(batch.mark, name) for name in WATERMARK_FIELDS)
            conn.execute(_UPSERT_WATERMARK, (session_id, *values, time.time()))
        return len(events)

    def damaged(self) -> None:
        """Leave no record of the database's state: the next sync checks it again."""
        self._sound = False

    def cancel(self) -> None:
        """Nothing to cancel: this target is not pipelined (see ``Target.cancel``)."""

    def close(self) -> None:
        """Close the connection if one was opened."""
        if self._conn is not None:
            # Judged before the close: the last connection's close checkpoints
            # the WAL (its own work, or a reader's left behind) into the file.
            own = self._wrote or _file_state(self.name) == self._seen
            self._conn.close()
            self._conn = None
            if self._sound and own:
                remember_state(self.name)


def _file_state(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns)


#: SQLite's default SQLITE_MAX_LENGTH, for Pythons without Connection.getlimit.
_DEFAULT_LENGTH_LIMIT: Final = 1_000_000_000


def _length_limit(conn: sqlite3.Connection) -> int:
    # Connection.getlimit and SQLITE_LIMIT_LENGTH are Python 3.11+; 3.10 is
    # supported, and then SQLite's default limit is assumed.
    getlimit = getattr(conn, "getlimit", None)
    code = getattr(sqlite3, "SQLITE_LIMIT_LENGTH", None)
    if getlimit is None or code is None:
        return _DEFAULT_LENGTH_LIMIT
    return int(getlimit(code))


class _Handoff:
    """A long text bound once: SQLite copies it, and Python's copy goes.

    ``sqlite3`` binds a ``str`` with ``SQLITE_TRANSIENT`` (SQLite keeps a copy
    of its own) and asks ``__conform__`` of any other object for the value, which
    it releases right after binding it. So while the INSERT builds its record,
    the text is held by SQLite alone, not also by Python (see
    docs/performance.md "Sync memory"). Bound once only: a second bind is NULL.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def __conform__(self, _protocol: object) -> str | None:
        value, self._value = self._value, None
        return value


def _insert_rows(conn: sqlite3.Connection, sid: int, values: list[tuple[object, ...]]) -> None:
    """Insert one session's rows (:func:`values_of` each), many to a statement."""
    one = _ROW_VALUES.format(sid=int(sid))
    many = len(values) - len(values) % _ROWS_PER_STATEMENT
    if many:
        width = _ROWS_PER_STATEMENT * len(values[0])
        flat = list(chain.from_iterable(values[:many]))
        conn.executemany(
            _INSERT_HEAD + "VALUES " + ", ".join([one] * _ROWS_PER_STATEMENT),
            [flat[at : at + width] for at in range(0, len(flat), width)],
        )
    if many < len(values):
        conn.executemany(_INSERT_HEAD + "VALUES " + one, values[many:])


def _handoff(
    conn: sqlite3.Connection, sid: int, events: Sequence[EventRow]
) -> tuple[object, ...] | None:
    """Return the INSERT parameters of a lone long line with its texts handed off, or None.

    Only the engine's list of one long ``message`` row qualifies (the summary
    reads the JSON of start/end lines after the insert), and only when its
    texts are ASCII and far below SQLite's length limit, so the database has no
    size to refuse. Its place in ``events`` keeps the row without its texts.
    """
    if len(events) != 1 or not isinstance(events, list):
        return None
    row = events[0]
    data, message = row[8], row[7]
    if (
        len(data) < LONG_LINE_BYTES
        or row[3] not in {"message", None}
        or not data.isascii()
        or (message is not None and not message.isascii())
        or len(data) + len(message or "") + _ROW_MARGIN > _length_limit(conn)
    ):
        return None
    head = row[:7]
    events[0] = (*head, None, "", {}, None)
    # The row's own copy of a long message goes first; the record is parsed
    # again from the line (a long row does not carry its record), which then
    # goes: the long value is held twice at most, never three times
    # (docs/performance.md, "Sync memory").
    del row, message
    record = record_in(data)
    escaped = "\\u" in data
    del data
    columns = (*head[2:7], column_text(record.get("message"), escaped))
    pid, shape, rest = rest_of(record, head[0], columns)
    message = columns[5]
    del record, columns
    # Written out, then the record dropped, then decoded.
    out = None if rest is None else encoded(rest)
    del rest
    fields = out if out is None or isinstance(out, str) else str(out, "utf-8")
    del out
    return (sid, *head[1:7], _handed(message), pid, shape, _handed(fields))


def _handed(text: str | None) -> object:
    return None if text is None else _Handoff(text)


def _insert_handed_off(
    conn: sqlite3.Connection, params: tuple[object, ...], event: EventRow, offset: int
) -> bool:
    """Insert the row of :func:`_handoff`; return False if it was refused and quarantined.

    Its texts are gone once bound, so a refusal (none is expected: see
    :func:`_handoff`) quarantines the line without them.
    """
    try:
        conn.execute(INSERT_ROW, params)
    except Exception as exc:
        if not _refused(exc):
            raise
        reason = f"database refused the row: {exc}; raw not stored (already handed to it)"
        _insert_error(conn, (event[0], event[1], offset, reason, b""))
        return False
    return True


class _RefusedError(Exception):
    """The database refused a row of the batch: write it again row by row."""


def _insert_one_by_one(
    conn: sqlite3.Connection,
    sid: int,
    events: Sequence[EventRow],
    errors: Sequence[ErrorRow],
    offsets: Sequence[int],
) -> list[EventRow]:
    """Insert rows one at a time (a failed INSERT undoes only itself); quarantine refusals.

    Returns:
        The event rows inserted.
    """
    inserted = []
    for event, offset in zip(events, offsets, strict=True):
        try:
            conn.execute(INSERT_ROW, (sid, *values_of(event)))
            inserted.append(event)
        except Exception as exc:
            if not _refused(exc):
                raise
            _insert_error(conn, _target.rejected_event(event, offset, exc))
    for error in errors:
        _insert_error(conn, error)
    return inserted


def _add_to_summary(conn: sqlite3.Connection, session_id: str, rows: Sequence[EventRow]) -> None:
    """Add one session's inserted rows to its ``session_summary`` row: one UPSERT.

    The counts and times are taken here; only the few start/end lines are
    handed to SQLite, for their pid and status.
    """
    times = _stored_times(rows)
    marks = [row for row in rows if row[3] != "message" and row[3] is not None]
    levels = Counter(map(_LEVEL, rows))
    start_ts = end_ts = end_seq = end_status = None
    processes = failed = 0
    if marks:
        ends = [row for row in marks if row[3] == "end"]
        start_ts = min(_stored_times([row for row in marks if row[3] == "start"]), default=None)
        end_ts = max(_stored_times(ends), default=None)
        processes = conn.executemany(_ADD_PID, [(session_id, row[8]) for row in marks]).rowcount
        failed = int(any(conn.execute(_FAILED, (row[8],)).fetchone()[0] for row in ends))
        if end_ts is not None:  # the latest end: the latest time, then the highest seq
            latest = max((row for row in ends if row[2] == end_ts), key=itemgetter(1))
            end_seq = latest[1]
            end_status = conn.execute(_STATUS, (latest[8],)).fetchone()[0]
    conn.execute(
        _UPSERT_SUMMARY,
        (
            session_id,
            len(rows),
            len(marks),
            sum(levels[name] for name in _WARNINGS),
            sum(levels[name] for name in _ERRORS),
            processes,
            start_ts,
            end_ts,
            min(times, default=None),
            max(times, default=None),
            failed,
            end_seq,
            end_status,
        ),
    )


def _stored_times(rows: Sequence[EventRow]) -> list[float]:
    """Return the rows' ``ts`` that SQLite stores as numbers (a NaN is stored as NULL)."""
    return [t for t in map(_TS, rows) if t is not None and t == t]  # noqa: PLR0124 - the NaN test


def _insert_error(conn: sqlite3.Connection, row: ErrorRow) -> None:
    try:
        conn.execute(_INSERT_ERROR, row)
    except Exception as exc:
        if not _refused(exc):
            raise
        conn.execute(_INSERT_ERROR, _target.rejected_error(row, exc))


def sync_to_sqlite(
    db_path: str | os.PathLike[str] | None = None,
    sessions_dir: str | os.PathLike[str] | None = None,
    *,
    session_id: str | None = None,
    busy_timeout: float = BUSY_TIMEOUT,
    progress: Progress | None = None,
    rebuild: bool = False,
) -> SyncReport:
    """Mirror every session file (or one) into the SQLite database, exactly once.

    Safe to run periodically, from several threads or processes at once, while
    programs keep writing: rows and the watermark advance in one transaction,
    and a partial last line waits for the next run.

    Example::

        report = sync_to_sqlite()
        print(report.rows_inserted, report.warnings)

    Args:
        db_path: The database; by default ``CODEX_LOG_DB_PATH`` or
            ``.codex/session_logs.db``. Created ``0600`` on first use; not
            created while the sessions folder does not exist.
        sessions_dir: The folder of session files; by default
            ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``.
        session_id: Sync only this session.
        busy_timeout: Seconds to wait for a database or file lock held by
            another writer or sync.
        progress: Called after each committed batch.
        rebuild: First move the database aside (``<name>.damaged-<UTC time>``,
            its WAL files with it) and mirror every session file afresh: the
            way out of a :class:`DatabaseDamagedError`. Sessions whose files
            prune already deleted are only in the copy moved aside. Not with
            ``session_id``.

    Returns:
        A :class:`SyncReport`.

    Raises:
        InvalidSessionId: ``session_id`` is not a valid id.
        InvalidFilterError: ``rebuild`` with a ``session_id``.
        UnknownSessionError: ``session_id`` has no session file.
        SessionsDirError: ``sessions_dir`` is a file, not a folder.
        DatabaseLockedError: The database stayed locked past ``busy_timeout``.
        DatabaseDamagedError: The database is damaged (SQLite says "malformed",
            "not a database", or its ``quick_check`` fails); the message says
            how to rebuild it.
        DatabaseError: The database cannot be opened or written.
    """
    path = resolve_db_path(db_path)
    if rebuild and session_id is not None:
        # One session mirrored afresh would leave every other out of the mirror.
        msg = f"a rebuild mirrors every session file: it takes no session id (got {session_id})"
        raise InvalidFilterError(msg)
    moved = set_aside(path) if rebuild else None
    target = SqliteTarget(path, busy_timeout)
    try:
        with contextlib.closing(target):
            try:
                report = run_sync(
                    target,
                    sessions_dir_path(sessions_dir),
                    session_id=session_id,
                    busy_timeout=busy_timeout,
                    progress=progress,
                )
            except DatabaseDamagedError:
                target.damaged()
                raise
    except BaseException:
        if moved is not None:  # a rebuild cut short: the database as it was
            put_back(path, moved)
        raise
    if moved is not None:
        report.warnings.insert(
            0, f"moved the damaged database aside to {moved}; mirrored the session files afresh"
        )
    return report
