"""SQLite: connecting, the schema and its migrations, and the one write transaction."""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final
from urllib.parse import quote

from codex_logging._errors import (
    DatabaseDamagedError,
    DatabaseError,
    DatabaseLockedError,
    DatabaseNotFoundError,
    UnsafePathError,
)
from codex_logging._mirror.compact import BIT, split, sqlite_data
from codex_logging._mirror.lines import loads
from codex_logging._settings import BUSY_TIMEOUT as BUSY_TIMEOUT  # noqa: PLC0414 - re-exported
from codex_logging._settings import ENV_QUERY_TIMEOUT, check_private, make_dirs, query_timeout

#: Called with (rows moved so far, rows in all) while the old table empties.
MoveProgress = Callable[[int, int], None]

#: The pid of the JSON line ``{line}`` as ``sessions`` counts it, or NULL: a
#: JSON integer, or a string of one, of 1 to 18 digits after an optional
#: ``-`` (what the PostgreSQL mirror counts: ``^-?[0-9]{1,18}$``), as an
#: integer, so ``"42"`` and ``42`` are one process and ``"worker"`` none.
PID_OF: Final = """(SELECT CAST(t AS INTEGER) FROM (
        SELECT t, CASE WHEN substr(t, 1, 1) = '-' THEN substr(t, 2) ELSE t END AS u FROM (
            SELECT CASE WHEN json_valid({line})
                AND json_type({line}, '$.pid') IN ('integer', 'text')
                THEN CAST(json_extract({line}, '$.pid') AS TEXT) END AS t))
    WHERE u <> '' AND u NOT GLOB '*[^0-9]*' AND length(u) <= 18)"""

_PIDS_BACKFILL: Final = f"""INSERT OR IGNORE INTO session_summary_pids (session_id, pid)
    SELECT session_id, pid FROM (
        SELECT session_id, {PID_OF.format(line="data")} AS pid
        FROM session_events WHERE kind <> 'message'
    ) WHERE pid IS NOT NULL"""  # noqa: S608 - constants only

#: Builds ``session_summary`` (and its pids) from ``session_events``: migration 4
#: runs it once, :func:`rebuild_summary` again. Each column is what the
#: ``sessions`` view of migration 2 computed, expression for expression, but
#: the pids (migration 6).
_SUMMARY_BACKFILL: Final = (
    _PIDS_BACKFILL,
    """INSERT OR REPLACE INTO session_summary (session_id, events, marks, warnings,
        errors, processes, start_ts, end_ts, first_ts, last_ts, failed)
    SELECT
        e.session_id,
        COUNT(*),
        COUNT(CASE WHEN e.kind <> 'message' THEN 1 END),
        COUNT(CASE WHEN e.level IN ('WARNING', 'WARN') THEN 1 END),
        COUNT(CASE WHEN e.level IN ('ERROR', 'CRITICAL', 'FATAL') THEN 1 END),
        (SELECT COUNT(*) FROM session_summary_pids p WHERE p.session_id = e.session_id),
        MIN(CASE WHEN e.kind = 'start' THEN e.ts END),
        MAX(CASE WHEN e.kind = 'end' THEN e.ts END),
        MIN(e.ts),
        MAX(e.ts),
        COALESCE(MAX(CASE WHEN e.kind = 'end' THEN json_extract(
            CASE WHEN json_valid(e.data) THEN e.data END, '$.status') = 'error' END), 0)
    FROM session_events e
    GROUP BY e.session_id""",
)

#: The levels the alert indexes hold, word for word as the reads that use
#: them say it: SQLite uses a partial index only for a WHERE that repeats its
#: condition, and avoids IN (...) here (a temporary table on every insert).
ALERT_LEVELS: Final = (
    "(level = 'WARNING' OR level = 'WARN' OR level = 'ERROR'"
    " OR level = 'CRITICAL' OR level = 'FATAL')"
)

#: The rows the ``--level`` index holds: every level but DEBUG and INFO (and
#: none), so a minimum above INFO, custom levels included, is answered from
#: it. The read adds this condition word for word to such a filter.
ABOVE_INFO: Final = "(level <> 'DEBUG' AND level <> 'INFO')"

#: Each migration is a named step; PRAGMA user_version counts those applied.
MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "create the session tables",
        (
            """CREATE TABLE IF NOT EXISTS session_events (
                session_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                ts REAL,
                kind TEXT,
                level TEXT,
                logger TEXT,
                role TEXT,
                message TEXT,
                data TEXT,
                PRIMARY KEY (session_id, seq)
            )""",
            "CREATE INDEX IF NOT EXISTS session_events_session_ts ON session_events (session_id, ts)",  # noqa: E501
            # --tail across sessions orders by ts: answered from this index.
            "CREATE INDEX IF NOT EXISTS session_events_ts ON session_events (ts)",
            """CREATE TABLE IF NOT EXISTS session_ingest_watermark (
                session_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                byte_offset INTEGER NOT NULL,
                head_len INTEGER NOT NULL DEFAULT 0,
                head_sha256 TEXT,
                file_dev INTEGER,
                file_ino INTEGER,
                updated_at REAL
            )""",
            """CREATE TABLE IF NOT EXISTS session_ingest_errors (
                session_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                byte_offset INTEGER NOT NULL,
                error TEXT NOT NULL,
                raw BLOB,
                PRIMARY KEY (session_id, seq)
            )""",
            """CREATE VIEW IF NOT EXISTS sessions AS
            SELECT
                e.session_id AS session_id,
                COALESCE(
                    (SELECT MIN(s.ts) FROM session_events s
                     WHERE s.session_id = e.session_id AND s.kind = 'start'),
                    MIN(e.ts)) AS start_ts,
                (SELECT MAX(s.ts) FROM session_events s
                 WHERE s.session_id = e.session_id AND s.kind = 'end') AS end_ts,
                (SELECT json_extract(s.data, '$.status') FROM session_events s
                 WHERE s.session_id = e.session_id AND s.kind = 'end'
                 ORDER BY s.seq DESC LIMIT 1) AS status,
                MIN(e.ts) AS first_ts,
                MAX(e.ts) AS last_ts,
                COUNT(*) AS events
            FROM session_events e
            GROUP BY e.session_id""",
        ),
    ),
    (
        # A schema a person can explore in sqlite3, Datasette and
        # sqlite-utils. Partial indexes hold only the rare rows (start/end,
        # warnings and errors), so the sync pays almost nothing for them. Their
        # conditions avoid IN (...): SQLite would build a temporary table for
        # it on every insert (+45% insert time, measured).
        "readable views: events, a richer sessions, indexes for the read shapes",
        (
            # --kind start|end --tail N across sessions; the sessions view's bounds.
            """CREATE INDEX IF NOT EXISTS session_events_marks
            ON session_events (session_id, kind, ts) WHERE kind <> 'message'""",
            """CREATE INDEX IF NOT EXISTS session_events_kind_ts
            ON session_events (kind, ts) WHERE kind <> 'message'""",
            """CREATE INDEX IF NOT EXISTS session_events_alerts
            ON session_events (session_id, level) WHERE (level = 'WARNING' OR level = 'WARN'
            OR level = 'ERROR' OR level = 'CRITICAL' OR level = 'FATAL')""",
            "DROP VIEW IF EXISTS events",
            # json_valid first: an older hook's NaN is a line Python's json
            # reads but SQLite's json_extract refuses.
            """CREATE VIEW events AS
            SELECT
                strftime('%Y-%m-%dT%H:%M:%fZ', ts, 'unixepoch') AS time,
                session_id, seq, ts, kind, level, logger, role, message,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.pid') AS pid,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.status') AS status,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.error_type')
                    AS error_type,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.error') AS error,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.duration_s')
                    AS duration_s,
                data
            FROM session_events""",
            "DROP VIEW IF EXISTS sessions",
            # Every subquery answers from an index: the counts from the primary
            # key, start/end/status/processes from session_events_marks, the
            # warnings and errors from session_events_alerts. Their WHERE
            # repeats each partial index's condition word for word, which is
            # how SQLite knows it may use it.
            """CREATE VIEW sessions AS
            SELECT
                session_id,
                strftime('%Y-%m-%dT%H:%M:%fZ', start_ts, 'unixepoch') AS start_time,
                strftime('%Y-%m-%dT%H:%M:%fZ', end_ts, 'unixepoch') AS end_time,
                start_ts,
                end_ts,
                ROUND(end_ts - start_ts, 3) AS duration_s,
                processes,
                events,
                events - marks AS messages,
                warnings,
                errors,
                CASE WHEN failed THEN 'error' WHEN end_ts IS NOT NULL THEN 'ok' END AS status,
                first_ts,
                last_ts
            FROM (
                SELECT
                    c.session_id AS session_id,
                    c.events AS events,
                    COALESCE(
                        (SELECT MIN(m.ts) FROM session_events m WHERE m.session_id = c.session_id
                         AND m.kind <> 'message' AND m.kind = 'start'),
                        (SELECT MIN(f.ts) FROM session_events f WHERE f.session_id = c.session_id)
                    ) AS start_ts,
                    (SELECT MAX(m.ts) FROM session_events m WHERE m.session_id = c.session_id
                     AND m.kind <> 'message' AND m.kind = 'end') AS end_ts,
                    (SELECT MIN(f.ts) FROM session_events f WHERE f.session_id = c.session_id)
                        AS first_ts,
                    (SELECT MAX(f.ts) FROM session_events f WHERE f.session_id = c.session_id)
                        AS last_ts,
                    (SELECT COUNT(*) FROM session_events m WHERE m.session_id = c.session_id
                     AND m.kind <> 'message') AS marks,
                    (SELECT COUNT(DISTINCT json_extract(
                        CASE WHEN json_valid(m.data) THEN m.data END, '$.pid'))
                     FROM session_events m WHERE m.session_id = c.session_id
                     AND m.kind <> 'message') AS processes,
                    (SELECT COUNT(*) FROM session_events a WHERE a.session_id = c.session_id
                     AND (a.level = 'WARNING' OR a.level = 'WARN' OR a.level = 'ERROR'
                          OR a.level = 'CRITICAL' OR a.level = 'FATAL')
                     AND a.level IN ('WARNING', 'WARN')) AS warnings,
                    (SELECT COUNT(*) FROM session_events a WHERE a.session_id = c.session_id
                     AND (a.level = 'WARNING' OR a.level = 'WARN' OR a.level = 'ERROR'
                          OR a.level = 'CRITICAL' OR a.level = 'FATAL')
                     AND a.level IN ('ERROR', 'CRITICAL', 'FATAL')) AS errors,
                    EXISTS (SELECT 1 FROM session_events m WHERE m.session_id = c.session_id
                     AND m.kind <> 'message' AND m.kind = 'end'
                     AND json_extract(CASE WHEN json_valid(m.data) THEN m.data END, '$.status')
                         = 'error') AS failed
                FROM (SELECT session_id, COUNT(*) AS events FROM session_events
                      GROUP BY session_id) c
            )""",
        ),
    ),
    (
        "record each watermark's sessions folder and how far its file was scanned",
        (
            # The folder a session's rows came from (docs/mirror.md: one database,
            # two folders); its path only for messages.
            "ALTER TABLE session_ingest_watermark ADD COLUMN source_id TEXT",
            "ALTER TABLE session_ingest_watermark ADD COLUMN source_dir TEXT",
            # No line end lies in [byte_offset, scanned_to): a pending partial
            # line is not read again, and an unchanged file is skipped unopened.
            "ALTER TABLE session_ingest_watermark ADD COLUMN scanned_to INTEGER NOT NULL DEFAULT 0",
            # The hash of the last (up to 4 KiB) bytes before scanned_to: a
            # pending line cut and written again is scanned again.
            "ALTER TABLE session_ingest_watermark ADD COLUMN scan_sha256 TEXT",
        ),
    ),
    (
        # `sessions` reads one row per session, not the history. The
        # sync adds each batch to its session's row in the batch's own
        # transaction (SqliteTarget.commit); this builds the rows of a database
        # that already has events. Each column is what the view before this
        # one computed, expression for expression.
        "a per-session summary kept by the sync; the sessions view reads it",
        (
            """CREATE TABLE IF NOT EXISTS session_summary (
                session_id TEXT PRIMARY KEY,
                events INTEGER NOT NULL,
                marks INTEGER NOT NULL,
                warnings INTEGER NOT NULL,
                errors INTEGER NOT NULL,
                processes INTEGER NOT NULL,
                start_ts REAL,
                end_ts REAL,
                first_ts REAL,
                last_ts REAL,
                failed INTEGER NOT NULL
            )""",
            # The distinct pids of a session's start/end records: `processes`
            # counts them, and a pid seen again is not counted twice.
            """CREATE TABLE IF NOT EXISTS session_summary_pids (
                session_id TEXT NOT NULL,
                pid NOT NULL,
                PRIMARY KEY (session_id, pid)
            ) WITHOUT ROWID""",
            *_SUMMARY_BACKFILL,
            "DROP VIEW IF EXISTS sessions",
            """CREATE VIEW sessions AS
            SELECT
                session_id,
                strftime('%Y-%m-%dT%H:%M:%fZ', start_ts, 'unixepoch') AS start_time,
                strftime('%Y-%m-%dT%H:%M:%fZ', end_ts, 'unixepoch') AS end_time,
                start_ts,
                end_ts,
                ROUND(end_ts - start_ts, 3) AS duration_s,
                processes,
                events,
                events - marks AS messages,
                warnings,
                errors,
                CASE WHEN failed THEN 'error' WHEN end_ts IS NOT NULL THEN 'ok' END AS status,
                first_ts,
                last_ts
            FROM (
                SELECT session_id, events, marks, warnings, errors, processes, end_ts,
                    COALESCE(start_ts, first_ts) AS start_ts, first_ts, last_ts, failed
                FROM session_summary
            )""",
        ),
    ),
    (
        # Records carry the OpenTelemetry trace context; the view
        # shows it as columns, after the others.
        "the trace context as columns of events",
        (
            "DROP VIEW IF EXISTS events",
            """CREATE VIEW events AS
            SELECT
                strftime('%Y-%m-%dT%H:%M:%fZ', ts, 'unixepoch') AS time,
                session_id, seq, ts, kind, level, logger, role, message,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.pid') AS pid,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.status') AS status,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.error_type')
                    AS error_type,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.error') AS error,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.duration_s')
                    AS duration_s,
                data,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.trace_id') AS trace_id,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.span_id') AS span_id,
                json_extract(CASE WHEN json_valid(data) THEN data END, '$.trace_flags')
                    AS trace_flags
            FROM session_events""",
        ),
    ),
    (
        # `processes` counts the pids the PostgreSQL mirror counts (PID_OF).
        "count only integer pids as processes",
        (
            "DELETE FROM session_summary_pids",
            _PIDS_BACKFILL,
            """UPDATE session_summary SET processes = (SELECT COUNT(*) FROM session_summary_pids p
            WHERE p.session_id = session_summary.session_id)""",
        ),
    ),
    (
        # A file renamed, moved or restored is known by its identity and
        # content (docs/mirror.md, "Sync").
        "remember the bytes before each watermark, find a watermark by its file",
        (
            "ALTER TABLE session_ingest_watermark ADD COLUMN tail_sha256 TEXT",
            """CREATE INDEX IF NOT EXISTS session_ingest_watermark_file
            ON session_ingest_watermark (file_ino)""",
        ),
    ),
)


#: The record's session id as the compact row ``r`` gives it: the one text of
#: its ``session_keys`` row ``k``.
_DATA: Final = sqlite_data("r", "k.session_id")


def _field(name: str) -> str:
    # A field that never has a column, from the row's other fields (json_valid
    # first: an older hook's NaN is text Python's json wrote and SQLite refuses).
    return f"json_extract(CASE WHEN json_valid(r.fields) THEN r.fields END, '$.{name}')"


#: The pid column of ``events``: its column, or the field when it was no integer.
_PID: Final = f"CASE WHEN r.shape & {BIT['pid']} THEN r.pid ELSE {_field('pid')} END"

#: ``session_events`` over the compact tables: the same columns and meaning as
#: the table it replaced, ``data`` the whole record (docs/mirror.md, "Schema").
_COMPACT_EVENTS: Final = f"""SELECT k.session_id AS session_id, r.seq AS seq, r.ts AS ts,
        r.kind AS kind, r.level AS level, r.logger AS logger, r.role AS role,
        r.message AS message, {_DATA} AS data
    FROM session_rows r JOIN session_keys k ON k.id = r.sid"""  # noqa: S608 - constants only

#: The rows of ``session_events`` with the order they landed in (the compact
#: row's rowid) as ``_rowid``, and the row's ``_shape`` and ``_fields``: what
#: the read commands read.
COMPACT_LANDED: Final = (
    f"(SELECT r.rowid AS _rowid, r.shape AS _shape, r.fields AS _fields,"
    f" {_COMPACT_EVENTS.removeprefix('SELECT ')})"
)

#: ``events`` over the compact tables: the columns of migration 5, each read
#: from its own column where it has one.
_COMPACT_EVENTS_VIEW: Final = f"""CREATE VIEW events AS
    SELECT
        strftime('%Y-%m-%dT%H:%M:%fZ', r.ts, 'unixepoch') AS time,
        k.session_id AS session_id, r.seq AS seq, r.ts AS ts, r.kind AS kind,
        r.level AS level, r.logger AS logger, r.role AS role, r.message AS message,
        {_PID} AS pid,
        {_field("status")} AS status,
        {_field("error_type")} AS error_type,
        {_field("error")} AS error,
        {_field("duration_s")} AS duration_s,
        {_DATA} AS data,
        {_field("trace_id")} AS trace_id,
        {_field("span_id")} AS span_id,
        {_field("trace_flags")} AS trace_flags
    FROM session_rows r JOIN session_keys k ON k.id = r.sid"""  # noqa: S608 - constants only

#: A row written to ``session_events`` by a tool (or an older test) goes into
#: the compact tables whole: ``fields`` the line, ``shape`` 0 (no field moved).
#: A row a tool writes to ``session_events`` goes into the compact tables
#: whole: ``fields`` its ``data`` (a JSON object, minified by SQLite's
#: ``json()``; any other text is refused, as the whole record could not be
#: given back), ``shape`` 0. The session's key is added only when missing, so
#: an outer ``INSERT OR REPLACE`` (sqlite-utils' upsert) cannot replace it and
#: leave the session's other rows under a key no longer its own.
_INSERT_TRIGGER: Final = """CREATE TRIGGER session_events_insert
    INSTEAD OF INSERT ON session_events
    BEGIN
        SELECT RAISE(ABORT, 'session_events.data must be a JSON object (the whole record)')
        WHERE NEW.data IS NOT NULL
            AND NOT (json_valid(NEW.data) AND json_type(NEW.data) = 'object');
        INSERT INTO session_keys (session_id) SELECT NEW.session_id
        WHERE NOT EXISTS (SELECT 1 FROM session_keys WHERE session_id = NEW.session_id);
        INSERT INTO session_rows (sid, seq, ts, kind, level, logger, role, message, pid,
            shape, fields)
        VALUES ((SELECT id FROM session_keys WHERE session_id = NEW.session_id), NEW.seq,
            NEW.ts, NEW.kind, NEW.level, NEW.logger, NEW.role, NEW.message, NULL, 0,
            json(NEW.data));
    END"""

_DELETE_TRIGGER: Final = """CREATE TRIGGER session_events_delete
    INSTEAD OF DELETE ON session_events
    BEGIN
        DELETE FROM session_rows WHERE seq = OLD.seq
            AND sid = (SELECT id FROM session_keys WHERE session_id = OLD.session_id);
    END"""

#: The table migration 8 renames ``session_events`` to while its rows move.
LEGACY_TABLE: Final = "session_events_legacy"

MIGRATIONS += (
    (
        # Each value stored once (docs/mirror.md, "Each value stored once"):
        # the session id once per session, the common fields in columns, only
        # the others as JSON. The old table's rows move over in batches after
        # this step (move_legacy_rows); until then the view shows both.
        "each value stored once: session_keys and session_rows; session_events a view",
        (
            """CREATE TABLE IF NOT EXISTS session_keys (
                id INTEGER PRIMARY KEY,
                session_id TEXT NOT NULL UNIQUE
            )""",
            """CREATE TABLE IF NOT EXISTS session_rows (
                sid INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                ts REAL,
                kind TEXT,
                level TEXT,
                logger TEXT,
                role TEXT,
                message TEXT,
                pid INTEGER,
                shape INTEGER NOT NULL,
                fields TEXT,
                PRIMARY KEY (sid, seq)
            )""",
            "CREATE INDEX IF NOT EXISTS session_rows_session_ts ON session_rows (sid, ts)",
            "CREATE INDEX IF NOT EXISTS session_rows_ts ON session_rows (ts)",
            """CREATE INDEX IF NOT EXISTS session_rows_marks
            ON session_rows (sid, kind, ts) WHERE kind <> 'message'""",
            """CREATE INDEX IF NOT EXISTS session_rows_kind_ts
            ON session_rows (kind, ts) WHERE kind <> 'message'""",
            f"""CREATE INDEX IF NOT EXISTS session_rows_alerts
            ON session_rows (sid, level) WHERE {ALERT_LEVELS}""",
            # --level warning (or any level above INFO) --tail N across
            # sessions: the rows above INFO, custom levels included.
            f"""CREATE INDEX IF NOT EXISTS session_rows_above_info_ts
            ON session_rows (ts) WHERE {ABOVE_INFO}""",
            "DROP VIEW IF EXISTS events",
            f"ALTER TABLE session_events RENAME TO {LEGACY_TABLE}",
            f"""CREATE VIEW session_events AS {_COMPACT_EVENTS}
            UNION ALL
            SELECT session_id, seq, ts, kind, level, logger, role, message, data
            FROM {LEGACY_TABLE}""",  # noqa: S608 - constants only
            # While rows are moving: the old view's columns, from the union.
            MIGRATIONS[4][1][1],
            _INSERT_TRIGGER,
            _DELETE_TRIGGER,
        ),
    ),
    (
        "drop the emptied old table; the views read the compact tables alone",
        (
            f"DROP TABLE {LEGACY_TABLE}",
            "DROP VIEW session_events",
            f"CREATE VIEW session_events AS {_COMPACT_EVENTS}",
            _INSERT_TRIGGER,
            _DELETE_TRIGGER,
            "DROP VIEW events",
            _COMPACT_EVENTS_VIEW,
        ),
    ),
)

#: The ``end`` rows a session's latest end is chosen from: those with a time,
#: as ``end_ts`` is their latest time (a NaN time is stored as NULL).
_ENDS: Final = "r.kind <> 'message' AND r.kind = 'end' AND r.ts IS NOT NULL"

#: Each summary's latest ``end`` (by ts, then seq): its seq and its status
#: (migration 10, and :func:`rebuild_summary` after :data:`_SUMMARY_BACKFILL`).
_END_BACKFILL: Final = f"""UPDATE session_summary SET (end_seq, end_status) = (
        SELECT r.seq, {_field("status")}
        FROM session_rows r JOIN session_keys k ON k.id = r.sid
        WHERE k.session_id = session_summary.session_id AND {_ENDS}
        ORDER BY r.ts DESC, r.seq DESC LIMIT 1)
    WHERE end_ts IS NOT NULL"""  # noqa: S608 - constants only

#: A session's status (docs/mirror.md, "Schema"): ``error`` when any end
#: failed, ``terminated`` when its latest end says so (a signal ended it),
#: ``ok`` when it ended otherwise, NULL while it has no end.
_SESSIONS_VIEW: Final = """CREATE VIEW sessions AS
    SELECT
        session_id,
        strftime('%Y-%m-%dT%H:%M:%fZ', start_ts, 'unixepoch') AS start_time,
        strftime('%Y-%m-%dT%H:%M:%fZ', end_ts, 'unixepoch') AS end_time,
        start_ts,
        end_ts,
        ROUND(end_ts - start_ts, 3) AS duration_s,
        processes,
        events,
        events - marks AS messages,
        warnings,
        errors,
        CASE WHEN failed THEN 'error' WHEN end_ts IS NULL THEN NULL
            WHEN end_status = 'terminated' THEN 'terminated' ELSE 'ok' END AS status,
        first_ts,
        last_ts
    FROM (
        SELECT session_id, events, marks, warnings, errors, processes, end_ts,
            COALESCE(start_ts, first_ts) AS start_ts, first_ts, last_ts, failed, end_status
        FROM session_summary
    )"""

MIGRATIONS += (
    (
        # A session a signal ended says so (docs/mirror.md, "Schema"): the
        # summary keeps its latest end's seq and status, the sync widens them
        # as it widens end_ts.
        "a session whose latest end is terminated has the status terminated",
        (
            "ALTER TABLE session_summary ADD COLUMN end_seq INTEGER",
            "ALTER TABLE session_summary ADD COLUMN end_status TEXT",
            _END_BACKFILL,
            "DROP VIEW IF EXISTS sessions",
            _SESSIONS_VIEW,
        ),
    ),
    (
        "a row written to session_events keeps its session's key and a whole JSON record",
        ("DROP TRIGGER IF EXISTS session_events_insert", _INSERT_TRIGGER),
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
#: The schema whose old table is emptied in batches before the next step.
_MOVING: Final = 8


def _create_private(path: str) -> None:
    # SQLite creates -wal and -shm with the mode of the database file, so a
    # 0600 database keeps its journal files 0600 too (docs/production.md, "Permissions").
    folder = os.path.dirname(path) or "."  # a bare file name is in the working directory
    make_dirs(folder)
    # The mirror holds every record: a database, journal or folder that
    # another user owns or may write is refused, as the session files are
    # (docs/production.md; CODEX_ALLOW_SHARED=1 opts out).
    check_private(folder, os.stat(folder))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        check_private(path, os.fstat(fd))
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            check_private(path + suffix, os.stat(path + suffix, follow_symlinks=False))


def connect(
    path: str, *, busy_timeout: float = BUSY_TIMEOUT, progress: MoveProgress | None = None
) -> sqlite3.Connection:
    """Open (creating if needed) the database for writing, migrated to the current schema.

    Args:
        path: The absolute database path.
        busy_timeout: Seconds to wait for another writer's lock.
        progress: Told how far a migration that moves rows got (see :func:`migrate`).

    Returns:
        A connection in autocommit mode; write through :func:`atomic`.

    Raises:
        DatabaseError: The file cannot be opened or is not a database.
        DatabaseLockedError: Another writer held the lock too long.
        UnsafePathError: The database, its journal or its folder is shared with other users.
    """
    try:
        _create_private(path)
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except UnsafePathError:
        raise
    except (OSError, sqlite3.Error) as exc:
        if is_damage(exc):
            raise damaged(path, exc) from exc
        msg = f"cannot open database {path}: {exc}"
        raise DatabaseError(msg) from exc
    try:
        with translated(path, busy_timeout):
            refuse_foreign(conn, path)
            _enable_wal(conn, busy_timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn, path, busy_timeout, progress)
    except BaseException:
        conn.close()
        raise
    return conn


#: Tables of which a mirror holds one, whatever its schema version: the
#: session tables (before the compact layout, and since), or the older
#: tools' ``logs`` table (see LOGS_COLUMNS).
_MIRROR_TABLES: Final = frozenset(
    {"session_events", "session_ingest_watermark", "session_rows", "session_keys"}
)
#: The columns of the older tools' ``logs (ts, session, kind, message)``: an
#: application's own ``logs`` table is another program's.
LOGS_COLUMNS: Final = frozenset({"ts", "session", "kind", "message"})


def refuse_foreign(conn: sqlite3.Connection, path: str) -> None:
    """Refuse another program's database, given as ``--db`` by mistake.

    It is left as it was, not filled with the mirror's tables (nor switched
    to WAL): a database that holds tables, none of them a mirror's, whatever
    its ``user_version`` (many programs set theirs). An empty file, a new one
    and a mirror of any schema pass.

    Raises:
        DatabaseError: It is not a mirror.
    """
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if not tables or tables & _MIRROR_TABLES:
        return
    if "logs" in tables:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(logs)")}
        if columns >= LOGS_COLUMNS:
            return
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    msg = (
        f"{path} is not a codex_logging mirror: it holds other tables ({shown});"
        " give a new file or an existing mirror"
    )
    raise DatabaseError(msg)


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    # Switching a new database to WAL needs its exclusive lock, and SQLite
    # answers "database is locked" at once, without its busy handler, when two
    # connections holding shared locks both ask for it. So: nothing to do when
    # another connection already switched it, and otherwise retry until the
    # same deadline the busy handler would have had.
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if mode != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        else:
            return


#: SQLite virtual-machine steps between two looks at a read's deadline.
_PROGRESS_STEPS: Final = 10_000


class _Deadline:
    """When the read statement running on one connection must stop."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def start(self, _statement: str) -> None:
        # SQLite's trace callback: a statement begins.
        self.at = time.monotonic() + self.seconds

    def passed(self) -> int:
        # SQLite's progress handler: non-zero interrupts the statement.
        return int(time.monotonic() > self.at)


def connect_readonly(path: str) -> sqlite3.Connection:
    """Open an existing database read-only; never create one.

    Every statement on it stops after ``CODEX_QUERY_TIMEOUT`` seconds (see
    :func:`reading`).

    Args:
        path: The absolute database path.

    Returns:
        A read-only connection.

    Raises:
        DatabaseNotFoundError: There is no file at ``path``.
        DatabaseError: It cannot be opened.
    """
    if os.path.isdir(path):
        example = os.path.join(path, "session_logs.db")
        msg = f"{path} is a folder, not a database file (name the file, e.g. {example})"
        raise DatabaseError(msg)
    if not os.path.isfile(path):
        msg = f"no database at {path} (run 'codex-logs sync' first)"
        raise DatabaseNotFoundError(msg)
    limit = query_timeout()
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise damaged(path, exc) from exc
        msg = f"cannot read database {path}: {exc}"
        raise DatabaseError(msg) from exc
    if limit:
        # A statement timeout: the clock starts as each statement starts (the
        # trace callback), and SQLite asks every few thousand steps whether to
        # stop (the progress handler). A view that never ends (WITH RECURSIVE)
        # in a database someone else made cannot hang a read.
        deadline = _Deadline(limit)
        conn.set_trace_callback(deadline.start)
        conn.set_progress_handler(deadline.passed, _PROGRESS_STEPS)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as exc:
        conn.close()  # not left for the garbage collector (a ResourceWarning from 3.13)
        if is_damage(exc):
            raise damaged(path, exc) from exc
        msg = f"cannot read database {path}: {exc}"
        raise DatabaseError(msg) from exc
    return conn


#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES: Final = frozenset({11, 26})
#: SQLite's words for a damaged file ("malformed JSON" is a bad value, not damage).
_DAMAGE_WORDS: Final = (
    "disk image is malformed",
    "malformed database schema",
    "corrupt",
    "not a database",
)


def is_damage(exc: BaseException) -> bool:
    """Return whether an SQLite error says the database file is damaged.

    Args:
        exc: The error.

    Returns:
        True for SQLITE_CORRUPT and SQLITE_NOTADB, and for the messages SQLite
        gives them ("database disk image is malformed", "file is not a database").
    """
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGE_CODES:
        return True
    text = str(exc).lower()
    return any(word in text for word in _DAMAGE_WORDS)


def damaged(path: str, detail: object) -> DatabaseDamagedError:
    """Return the error that names the damaged database ``path`` and the way out.

    Args:
        path: The database.
        detail: What SQLite said.

    Returns:
        A :class:`DatabaseDamagedError` with a one-line message.
    """
    said = " ".join(str(detail).split())
    msg = (
        f"database {path} is damaged ({said}); the NDJSON session files are intact:"
        f" rebuild the mirror from them with: codex-logs sync --rebuild --db {shlex.quote(path)}"
    )
    return DatabaseDamagedError(msg)


def quick_check(conn: sqlite3.Connection, path: str) -> None:
    """Run SQLite's ``PRAGMA quick_check`` over the whole database.

    It reads every page and checks the b-trees' structure, not that indexes
    match their tables (docs/performance.md, "quick_check on a 1.3 GiB mirror").

    Args:
        conn: Any connection.
        path: The database, for the message.

    Raises:
        DatabaseDamagedError: The check found a problem.
        DatabaseError: The check could not run.
    """
    with translated(path):
        found = [row[0] for row in conn.execute("PRAGMA quick_check(1)").fetchall()]
    if found != ["ok"]:
        raise damaged(path, f"quick_check: {'; '.join(found)}")


#: Beside the database: its size and mtime as the last sync or prune left them.
STATE_SUFFIX: Final = ".codex-state"


def remember_state(path: str) -> None:
    """Record the database file's size and mtime, as this process's writes left them.

    The next sync compares them with the file before it writes (see
    :func:`check_if_changed`). Best effort: a folder that cannot take the
    record only means the next sync checks the database again.

    Args:
        path: The database.
    """
    try:
        info = os.stat(path)
        state = path + STATE_SUFFIX
        if not changed_outside(path):
            return  # an idle round writes nothing
        temporary = f"{state}.{os.getpid()}.tmp"
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError:
        return
    try:
        try:
            os.write(fd, f"{info.st_size} {info.st_mtime_ns}\n".encode())
        finally:
            os.close(fd)
        os.replace(temporary, state)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk: no empty file left behind
            os.unlink(temporary)


def changed_outside(path: str) -> bool:
    """Return whether the database file changed since a sync or prune last recorded it.

    Args:
        path: The database.

    Returns:
        True when its size or mtime differ from the record, or there is no
        record; False for a database not created yet.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        with open(path + STATE_SUFFIX, "rb") as f:
            size, mtime = (int(part) for part in f.read(64).split())
    except (OSError, ValueError):
        return True
    return (size, mtime) != (info.st_size, info.st_mtime_ns)


def set_aside(path: str) -> str | None:
    """Move a (damaged) database aside as ``<name>.damaged-<UTC time>``, with its WAL files.

    Args:
        path: The database.

    Returns:
        The name it has now, or None when there was no database.

    Raises:
        DatabaseError: It could not be moved.
    """
    if not os.path.lexists(path):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}.damaged-{stamp}"
    number = 1
    while os.path.lexists(aside):
        number += 1
        aside = f"{path}.damaged-{stamp}-{number}"
    try:
        # The WAL first: a database renamed without it would lose its last commits.
        for suffix in ("-wal", "-shm"):
            if os.path.lexists(path + suffix):
                os.rename(path + suffix, aside + suffix)
        os.rename(path, aside)
    except OSError as exc:
        msg = f"cannot move the database {path} aside: {exc.strerror or exc}"
        raise DatabaseError(msg) from exc
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + STATE_SUFFIX)
    return aside


def put_back(path: str, aside: str) -> None:
    """Undo :func:`set_aside`: the database moved to ``aside`` goes back to ``path``.

    For a rebuild that did not finish (a full disk, Ctrl-C): what it built
    at ``path`` is removed, and the database is as it was before. Best effort:
    if a file cannot be moved, the copy stays at ``aside``.

    Args:
        path: The database.
        aside: Where :func:`set_aside` moved it.
    """
    with contextlib.suppress(OSError):
        for suffix in ("-wal", "-shm", "", STATE_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        os.rename(aside, path)
        for suffix in ("-wal", "-shm"):  # after the database, as set_aside moved them before it
            if os.path.lexists(aside + suffix):
                os.rename(aside + suffix, path + suffix)


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn SQLite errors raised while reading into this package's errors.

    Args:
        path: The database path, for messages.

    Raises:
        DatabaseDamagedError: The file is damaged (malformed, not a database).
        DatabaseError: A statement ran past ``CODEX_QUERY_TIMEOUT`` and was
            stopped, or any other SQLite failure.
    """
    try:
        yield
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise damaged(path, exc) from exc
        if str(exc) == _UDF_FAILED:
            # The read's own functions take any value; what fails before
            # they run is a text Python cannot decode: the sync stores only
            # UTF-8, so the bytes changed under it.
            raise damaged(path, "a stored text is not UTF-8") from exc
        if not isinstance(exc, sqlite3.OperationalError) or not _interrupted(exc):
            msg = f"cannot read database {path}: {exc}"
            raise DatabaseError(msg) from exc
        msg = (
            f"reading {path} took longer than {query_timeout():g} s and was stopped"
            f" (a view in it may never end; {ENV_QUERY_TIMEOUT} sets the limit, 0 for none)"
        )
        raise DatabaseError(msg) from None


def _interrupted(exc: sqlite3.Error) -> bool:
    # SQLITE_INTERRUPT: what a progress handler's stop raises (the code is
    # on the exception from Python 3.11; its message before).
    return getattr(exc, "sqlite_errorcode", None) == _SQLITE_INTERRUPT or str(exc) == "interrupted"


#: What Python's sqlite3 says when a function's argument could not be made
#: a Python value (or the function raised).
_UDF_FAILED: Final = "user-defined function raised exception"

#: SQLite's result code for a statement stopped by its progress handler.
_SQLITE_INTERRUPT: Final = 9


@contextlib.contextmanager
def translated(path: str, busy_timeout: float = BUSY_TIMEOUT) -> Iterator[None]:
    """Turn SQLite errors raised in the block into this package's errors.

    Args:
        path: The database path, for messages.
        busy_timeout: The wait that was set, for messages.

    Raises:
        DatabaseDamagedError: The file is damaged (malformed, not a database).
        DatabaseLockedError: Busy or locked past the wait.
        DatabaseError: Any other SQLite failure.
    """
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise damaged(path, exc) from exc
        if not isinstance(exc, sqlite3.OperationalError):
            msg = f"cannot use database {path}: {exc}"
            raise DatabaseError(msg) from exc
        if is_busy(exc):
            msg = f"database {path} stayed locked by another writer for {busy_timeout:g} s"
            raise DatabaseLockedError(msg) from exc
        msg = f"cannot write database {path}: {exc}"
        raise DatabaseError(msg) from exc


@contextlib.contextmanager
def atomic(
    conn: sqlite3.Connection, path: str, busy_timeout: float = BUSY_TIMEOUT
) -> Iterator[None]:
    """Run a block in one ``BEGIN IMMEDIATE`` transaction; roll back on any failure.

    Args:
        conn: A connection from :func:`connect`.
        path: The database path, for error messages.
        busy_timeout: The wait already set on the connection, for error messages.

    Raises:
        DatabaseLockedError: The write lock could not be had in time.
        DatabaseError: Any other SQLite failure.
    """
    with translated(path, busy_timeout):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # As sqlite-utils' Database.atomic: roll back only a transaction
            # that is still open (SQLite already rolled back after a full disk,
            # and a ROLLBACK then would mask the real error), and also when
            # COMMIT itself failed, which leaves the transaction open.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise


#: SQLite's primary result codes for a database another connection holds.
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED


def is_busy(exc: sqlite3.Error) -> bool:
    """Return whether an SQLite error means another connection held the database.

    Classified by the error code (Python 3.11+), by the message before that.

    Args:
        exc: The error.

    Returns:
        True for SQLITE_BUSY and SQLITE_LOCKED, extended codes included.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # pragma: no cover - Python 3.10 has no error codes
        text = str(exc)
        return "locked" in text or "busy" in text
    return code & 0xFF in _BUSY_CODES


#: Rows moved per transaction while the old table empties: each batch commits
#: on its own, so a kill at any point loses at most the batch in flight, which
#: is still in the old table.
MOVE_BATCH: Final = 20_000


def migrate(
    conn: sqlite3.Connection,
    path: str,
    busy_timeout: float = BUSY_TIMEOUT,
    progress: MoveProgress | None = None,
) -> None:
    """Apply the migrations this database has not had yet, each in its own transaction.

    Before the step that drops the old ``session_events`` table, its rows
    move to the compact tables in batches (:func:`move_legacy_rows`).

    Args:
        conn: A writable connection.
        path: The database path, for error messages.
        busy_timeout: For error messages.
        progress: Told how far the rows' move got, after each batch.
    """
    with translated(path, busy_timeout):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    for number in range(version + 1, SCHEMA_VERSION + 1):
        if number == _MOVING + 1:
            move_legacy_rows(conn, path, busy_timeout, progress)
        _name, statements = MIGRATIONS[number - 1]
        with atomic(conn, path, busy_timeout):
            (current,) = conn.execute("PRAGMA user_version").fetchone()
            if current >= number:  # another process migrated meanwhile
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number:d}")


_LEGACY_ROWS: Final = f"""SELECT rowid, session_id, seq, ts, kind, level, logger, role,
    message, data FROM {LEGACY_TABLE} ORDER BY rowid LIMIT ?"""  # noqa: S608 - constants only


def move_legacy_rows(
    conn: sqlite3.Connection,
    path: str,
    busy_timeout: float = BUSY_TIMEOUT,
    progress: MoveProgress | None = None,
) -> int:
    """Move the rows of the old ``session_events`` table into the compact tables.

    Each batch is copied and deleted in one transaction: killed at any point,
    a rerun goes on from where the last commit left it, and the views show
    every row exactly once meanwhile.

    Args:
        conn: A writable connection at schema 8.
        path: The database path, for error messages.
        busy_timeout: For error messages.
        progress: Told (moved, total) after each batch.

    Returns:
        The rows moved by this call.
    """
    moved = total = 0
    while True:
        with atomic(conn, path, busy_timeout):
            # Asked in each transaction: another process may be moving them too.
            if LEGACY_TABLE not in table_names(conn):
                break
            if not total:
                (total,) = conn.execute(f"SELECT COUNT(*) FROM {LEGACY_TABLE}").fetchone()  # noqa: S608
            batch = conn.execute(_LEGACY_ROWS, (MOVE_BATCH,)).fetchall()
            if not batch:
                break
            rows = [compact_row(conn, {}, row[1:]) for row in batch]
            conn.executemany(INSERT_ROW, rows)
            conn.execute(
                f"DELETE FROM {LEGACY_TABLE} WHERE rowid <= ?",  # noqa: S608 - constants only
                (batch[-1][0],),
            )
        moved += len(batch)
        if progress is not None:
            progress(moved, total)
    return moved


_COLUMN_FIELDS: Final = ("ts", "kind", "level", "logger", "role", "message")

#: One compact row, as the sync and the move write it.
INSERT_ROW: Final = """INSERT INTO session_rows
    (sid, seq, ts, kind, level, logger, role, message, pid, shape, fields)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def session_key(conn: sqlite3.Connection, keys: dict[str, int], session_id: str) -> int:
    """Return the ``session_keys`` id of a session, adding it if new (inside a transaction).

    Args:
        conn: A writable connection.
        keys: The ids already looked up by this caller.
        session_id: The session.

    Returns:
        Its id.
    """
    found = keys.get(session_id)
    if found is None:
        row = conn.execute(
            "SELECT id FROM session_keys WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO session_keys (session_id) VALUES (?) RETURNING id", (session_id,)
            ).fetchone()
        found = keys[session_id] = int(row[0])
    return found


def compact_row(
    conn: sqlite3.Connection, keys: dict[str, int], row: Sequence[Any]
) -> tuple[Any, ...]:
    """Return the compact row of an old ``session_events`` row.

    Args:
        conn: A writable connection (for a session's id).
        keys: The ids already looked up.
        row: ``(session_id, seq, ts, kind, level, logger, role, message, data)``.

    Returns:
        The parameters of :data:`INSERT_ROW`; a ``data`` that is not a JSON
        object is kept whole (``shape`` 0).
    """
    session_id, seq, ts, kind, level, logger, role, message, data = row
    sid = session_key(conn, keys, session_id)
    try:
        obj = loads(data.encode() if isinstance(data, str) else data)
    except (ValueError, TypeError, AttributeError, RecursionError, UnicodeError):
        obj = None
    if type(obj) is not dict:
        return (sid, seq, ts, kind, level, logger, role, message, None, 0, data)
    # The columns as stored hold the line's own values only where they equal them.
    stored = (ts, kind, level, logger, role, message)
    columns = tuple(
        obj.get(name) if obj.get(name) == value and type(obj.get(name)) is type(value) else value
        for name, value in zip(_COLUMN_FIELDS, stored, strict=True)
    )
    pid, shape, fields = split(obj, session_id, columns)
    return (sid, seq, *columns, pid, shape, fields)


#: The opt-in full-text index for ``--grep`` (docs/mirror.md, "The grep index"):
#: SQLite's FTS5 with the trigram tokenizer (substrings, any case) over the
#: message, logger, role and other fields of each compact row, kept by triggers in the
#: transaction of the rows themselves.
GREP_INDEX: Final = "session_grep"
_GREP_INDEX_ON: Final = (
    """CREATE VIRTUAL TABLE session_grep USING fts5(message, logger, role, fields,
        content='session_rows', content_rowid='rowid', tokenize='trigram')""",
    """CREATE TRIGGER session_grep_insert AFTER INSERT ON session_rows BEGIN
        INSERT INTO session_grep (rowid, message, logger, role, fields)
        VALUES (NEW.rowid, NEW.message, NEW.logger, NEW.role, NEW.fields);
    END""",
    """CREATE TRIGGER session_grep_delete AFTER DELETE ON session_rows BEGIN
        INSERT INTO session_grep (session_grep, rowid, message, logger, role, fields)
        VALUES ('delete', OLD.rowid, OLD.message, OLD.logger, OLD.role, OLD.fields);
    END""",
    """CREATE TRIGGER session_grep_update AFTER UPDATE ON session_rows BEGIN
        INSERT INTO session_grep (session_grep, rowid, message, logger, role, fields)
        VALUES ('delete', OLD.rowid, OLD.message, OLD.logger, OLD.role, OLD.fields);
        INSERT INTO session_grep (rowid, message, logger, role, fields)
        VALUES (NEW.rowid, NEW.message, NEW.logger, NEW.role, NEW.fields);
    END""",
    # The rows already there.
    "INSERT INTO session_grep (session_grep) VALUES ('rebuild')",
)
_GREP_INDEX_OFF: Final = (
    "DROP TRIGGER IF EXISTS session_grep_insert",
    "DROP TRIGGER IF EXISTS session_grep_delete",
    "DROP TRIGGER IF EXISTS session_grep_update",
    "DROP TABLE IF EXISTS session_grep",
)


def set_grep_index(conn: sqlite3.Connection, path: str, *, on: bool) -> bool:
    """Build or drop the full-text index ``--grep`` answers from; return whether it changed.

    Args:
        conn: A writable connection at the current schema.
        path: The database path, for error messages.
        on: Build it (and fill it from the rows there), or drop it.

    Returns:
        False when it already was as asked.

    Raises:
        DatabaseError: This SQLite has no FTS5 or trigram tokenizer (3.34+), or
            the database cannot be written.
    """
    with atomic(conn, path):
        if (GREP_INDEX in table_names(conn)) == on:
            return False
        try:
            for statement in _GREP_INDEX_ON if on else _GREP_INDEX_OFF:
                conn.execute(statement)
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc) or "tokenizer" in str(exc):
                msg = f"this SQLite ({sqlite3.sqlite_version}) cannot build the grep index: {exc}"
                raise DatabaseError(msg) from exc
            raise
    return True


def table_names(conn: sqlite3.Connection) -> set[str]:
    """Return the names of the tables and views in the database.

    Args:
        conn: Any connection.

    Returns:
        The names.
    """
    return {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
        )
    }


def rebuild_summary(conn: sqlite3.Connection) -> None:
    """Recompute ``session_summary`` from ``session_events``, as migrations 4 and 10 built it.

    For rows written by something other than the sync (a bulk load, a test);
    run it inside a transaction.

    Args:
        conn: A writable connection at the current schema.
    """
    conn.execute("DELETE FROM session_summary_pids")
    conn.execute("DELETE FROM session_summary")
    for statement in _SUMMARY_BACKFILL:
        conn.execute(statement)
    conn.execute(_END_BACKFILL)
