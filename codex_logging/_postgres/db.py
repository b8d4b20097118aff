"""PostgreSQL: connecting, the schema and its migrations (as ``_sqlite/db.py`` is for SQLite).

psycopg is imported on first use only: a hook script that only logs never pays
for it, and without it the error names the extra to install.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from codex_logging._errors import (
    DatabaseError,
    DatabaseLockedError,
    PostgresNotInstalledError,
    hide_secrets,
)
from codex_logging._mirror.compact import BIT, MOVABLE, split
from codex_logging._mirror.lines import loads
from codex_logging._settings import BUSY_TIMEOUT as BUSY_TIMEOUT  # noqa: PLC0414 - re-exported

if TYPE_CHECKING:
    import psycopg

#: The key of the advisory lock migrations hold ("codexlog" in ASCII).
_MIGRATION_LOCK: Final = 0x636F6465786C6F67

#: Rows added to their sessions' summaries: ``{rows}`` says which (FROM,
#: WHERE, GROUP BY or HAVING), ``{keys}`` their source and session, ``{json}``
#: the column holding a row's JSON; ``{end_...}``: the latest end's columns
#: (:data:`SUMMARY_BATCH_ENDS`). Each column is what the first ``sessions``
#: view computed.
_SUMMARY_UPSERT: Final = """
    INSERT INTO session_summary AS old (source_id, session_id, events, marks, warnings, errors,
        start_ts, end_ts, first_ts, last_ts, failed{end_columns})
    SELECT {keys},
        count(*),
        count(*) FILTER (WHERE kind <> 'message'),
        count(*) FILTER (WHERE level IN ('WARNING', 'WARN')),
        count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL', 'FATAL')),
        min(ts) FILTER (WHERE kind = 'start'),
        max(ts) FILTER (WHERE kind = 'end'),
        min(ts),
        max(ts),
        coalesce(bool_or(codex_json({json}) ->> 'status' = 'error') FILTER (WHERE kind = 'end'),
            false){end_values}
    {rows}
    ON CONFLICT (source_id, session_id) DO UPDATE SET{end_updates}
        events = old.events + excluded.events,
        marks = old.marks + excluded.marks,
        warnings = old.warnings + excluded.warnings,
        errors = old.errors + excluded.errors,
        start_ts = least(old.start_ts, excluded.start_ts),
        end_ts = greatest(old.end_ts, excluded.end_ts),
        first_ts = least(old.first_ts, excluded.first_ts),
        last_ts = greatest(old.last_ts, excluded.last_ts),
        failed = old.failed OR excluded.failed
"""
#: A summary's rows from ``session_events`` rows matching ``{where}`` (with
#: ``%s`` parameters): the whole table when migration 2 builds the summary
#: (a sync adds a batch's rows with :data:`SUMMARY_BATCH`); the pids are the
#: ``events`` view's.
SUMMARY_ROWS: Final = _SUMMARY_UPSERT.format(
    keys="source_id, session_id",
    json="data",
    rows="FROM session_events\n    WHERE {where}\n    GROUP BY source_id, session_id",
    end_columns="",
    end_values="",
    end_updates="",
)
SUMMARY_PIDS: Final = """
    INSERT INTO session_summary_pids (source_id, session_id, pid)
    SELECT DISTINCT source_id, session_id, (codex_json(data) ->> 'pid')::bigint
    FROM session_events
    WHERE {where} AND kind <> 'message' AND codex_json(data) ->> 'pid' ~ '^-?[0-9]{{1,18}}$'
    ON CONFLICT DO NOTHING
"""

#: The ``events`` view; ``{time}`` is its first column, ``{trace}`` adds the
#: trace context columns (migration 3).
EVENTS_VIEW: Final = """CREATE OR REPLACE VIEW events AS
            SELECT
                {time} AS time,
                e.session_id, e.seq, e.ts, e.kind, e.level, e.logger, e.role, e.message,
                CASE WHEN j ->> 'pid' ~ '^-?[0-9]{{1,18}}$' THEN (j ->> 'pid')::bigint END AS pid,
                j ->> 'status' AS status,
                j ->> 'error_type' AS error_type,
                j ->> 'error' AS error,
                CASE WHEN j ->> 'duration_s' ~ '^-?[0-9]{{1,15}}([.][0-9]*)?$'
                    THEN (j ->> 'duration_s')::double precision END AS duration_s,
                e.data,
                e.source_id,
                s.host{trace}
            FROM session_events e
            CROSS JOIN LATERAL codex_json(e.data) AS j
            LEFT JOIN sources s USING (source_id)"""
#: ``time`` as text, as the first migrations made it (truncated to the millisecond).
_TEXT_TIME: Final = """to_char(to_timestamp(e.ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
#: ``time`` as a ``timestamptz`` on the millisecond SQLite's view shows: SQLite
#: turns Unix seconds into whole milliseconds of the Julian day in double
#: precision, ``(ts * 1000 + 210866760000000 + 0.5)`` truncated; the same
#: arithmetic here gives the same millisecond for every ``ts``.
_TIMESTAMP: Final = (
    "to_timestamp((trunc(e.ts * 1000::float8 + 210866760000000::float8 + 0.5::float8)"
    " - 210866760000000::float8) / 1000::float8)"
)
_TRACE_COLUMNS: Final = """,
                j ->> 'trace_id' AS trace_id,
                j ->> 'span_id' AS span_id,
                j ->> 'trace_flags' AS trace_flags"""

#: The shortest text that reads back as the same double, always a JSON float
#: as Python writes it (``1.0``, not ``1``), an infinity as ``1e999`` (as
#: :func:`finite_json` spells it). The server's own output is the shortest
#: round trip while ``extra_float_digits`` is above 0 (the default).
_FLOAT_FUNCTION: Final = """CREATE OR REPLACE FUNCTION codex_float(x double precision)
            RETURNS text LANGUAGE sql IMMUTABLE AS $$
                SELECT CASE
                    WHEN x::text ~ '^-?[0-9]+$' THEN x::text || '.0'
                    WHEN x = 'Infinity' THEN '1e999'
                    WHEN x = '-Infinity' THEN '-1e999'
                    ELSE x::text
                END
            $$"""


def _data(row: str = "r", session: str = "k.session_id") -> str:
    """Return the expression that gives back the whole record of a compact row as JSON text.

    The PostgreSQL twin of ``_mirror/compact.py``'s ``sqlite_data``: the moved
    fields as ``"name":value`` members in ``MOVABLE`` order, then the members
    of ``fields``. A row that moved nothing (``shape`` 0) is ``fields`` as it
    is: a line a tool wrote through the view, or one the move could not read,
    is given back byte for byte.

    Args:
        row: The alias of the ``session_rows`` row.
        session: The expression of its session id text.

    Returns:
        A SQL expression.
    """
    values = {
        "ts": f"codex_float({row}.ts)",
        "session_id": f"to_json({session})::text",
        "pid": f"{row}.pid::text",
    }
    members = " || ".join(
        f"CASE WHEN {row}.shape & {BIT[name]} <> 0 THEN"
        f""" ',"{name}":' || {values.get(name, f"to_json({row}.{name})::text")} ELSE '' END"""
        for name in MOVABLE
    )
    rest = (
        f"CASE WHEN {row}.fields IS NULL THEN '' ELSE"
        f" ',' || substr({row}.fields, 2, length({row}.fields) - 2) END"
    )
    # The leading comma of the first member is dropped.
    return (
        f"CASE WHEN {row}.shape = 0 THEN {row}.fields"
        f" ELSE '{{' || substr({members} || {rest}, 2) || '}}' END"
    )


#: The ``pid`` of a compact row ``r``, as the ``events`` view has always read
#: it: an integer of at most 18 digits, else NULL.
_ROW_PID: Final = f"""CASE WHEN r.shape & {BIT["pid"]} <> 0
                    THEN CASE WHEN r.pid BETWEEN -999999999999999999 AND 999999999999999999
                        THEN r.pid END
                    WHEN codex_json(r.fields) ->> 'pid' ~ '^-?[0-9]{{1,18}}$'
                    THEN (codex_json(r.fields) ->> 'pid')::bigint END"""

#: ``session_events`` over the compact tables: the columns and meaning of the
#: table it replaced, ``data`` the whole record (docs/mirror.md, "Schema").
_COMPACT_EVENTS: Final = f"""SELECT k.source_id, k.session_id, r.seq, r.ts, r.kind, r.level,
                r.logger, r.role, r.message, {_data()} AS data
            FROM session_rows r JOIN session_keys k ON k.id = r.sid"""  # noqa: S608 - constants

#: ``events`` over the compact tables: migration 5's columns, each field read
#: from its column where it has one, else from the row's other fields.
_COMPACT_EVENTS_VIEW: Final = f"""CREATE VIEW events AS
            SELECT
                {_TIMESTAMP.replace("e.ts", "r.ts")} AS time,
                k.session_id, r.seq, r.ts, r.kind, r.level, r.logger, r.role, r.message,
                {_ROW_PID} AS pid,
                j ->> 'status' AS status,
                j ->> 'error_type' AS error_type,
                j ->> 'error' AS error,
                CASE WHEN j ->> 'duration_s' ~ '^-?[0-9]{{1,15}}([.][0-9]*)?$'
                    THEN (j ->> 'duration_s')::double precision END AS duration_s,
                {_data()} AS data,
                k.source_id,
                s.host{_TRACE_COLUMNS}
            FROM session_rows r
            JOIN session_keys k ON k.id = r.sid
            CROSS JOIN LATERAL codex_json(r.fields) AS j
            LEFT JOIN sources s ON s.source_id = k.source_id"""  # noqa: S608 - constants

#: The table migration 6 renames ``session_events`` to while its rows move.
LEGACY_TABLE: Final = "session_events_legacy"

#: The views over the old table, dropped by the step after the move before it
#: takes the table: a reader locks a view, then the tables under it, so the
#: step takes them in the same order (the other order deadlocks with a reader
#: holding the view and waiting for the table).
_DROP_VIEWS: Final = ("DROP VIEW IF EXISTS events", "DROP VIEW IF EXISTS session_events")

#: The levels the alert indexes hold, as the reads say them.
_ALERTS: Final = "level IN ('WARNING', 'WARN', 'ERROR', 'CRITICAL', 'FATAL')"

#: A session's key, made on first use (by the sync, the move, and the
#: trigger a tool's ``INSERT`` into ``session_events`` runs).
_KEY_FUNCTION: Final = """CREATE OR REPLACE FUNCTION codex_session_key(source text, session text)
            RETURNS bigint LANGUAGE plpgsql AS $$
            DECLARE
                found bigint;
            BEGIN
                SELECT id INTO found FROM session_keys
                    WHERE session_id = session AND source_id = source;
                IF found IS NULL THEN
                    INSERT INTO session_keys (source_id, session_id) VALUES (source, session)
                        ON CONFLICT DO NOTHING RETURNING id INTO found;
                END IF;
                IF found IS NULL THEN
                    SELECT id INTO found FROM session_keys
                        WHERE session_id = session AND source_id = source;
                END IF;
                RETURN found;
            END
            $$"""

#: A row a tool (or an older version's sync) writes to ``session_events``
#: goes into the compact tables whole: ``fields`` the line, ``shape`` 0.
_INSERT_FUNCTION: Final = """CREATE OR REPLACE FUNCTION codex_session_events_insert()
            RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO session_rows (sid, seq, ts, pid, shape, kind, level, logger, role,
                    message, fields)
                VALUES (codex_session_key(NEW.source_id, NEW.session_id), NEW.seq, NEW.ts,
                    NULL, 0, NEW.kind, NEW.level, NEW.logger, NEW.role, NEW.message, NEW.data);
                RETURN NEW;
            END
            $$"""
_DELETE_ROW: Final = """DELETE FROM session_rows WHERE seq = OLD.seq AND sid = (
                    SELECT id FROM session_keys
                    WHERE session_id = OLD.session_id AND source_id = OLD.source_id)"""
#: ``{legacy}`` also deletes from the old table while its rows move.
_DELETE_FUNCTION: Final = """CREATE OR REPLACE FUNCTION codex_session_events_delete()
            RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {delete};{legacy}
                RETURN OLD;
            END
            $$"""
_LEGACY_DELETE: Final = f"""
                IF NOT FOUND THEN
                    DELETE FROM {LEGACY_TABLE} WHERE source_id = OLD.source_id
                        AND session_id = OLD.session_id AND seq = OLD.seq;
                END IF;"""  # noqa: S608 - constants
_TRIGGERS: Final = (
    """CREATE TRIGGER session_events_insert INSTEAD OF INSERT ON session_events
            FOR EACH ROW EXECUTE FUNCTION codex_session_events_insert()""",
    """CREATE TRIGGER session_events_delete INSTEAD OF DELETE ON session_events
            FOR EACH ROW EXECUTE FUNCTION codex_session_events_delete()""",
)

#: Each migration is a named step; ``codex_schema_version`` counts those applied.
MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "create the session tables",
        (
            """CREATE TABLE IF NOT EXISTS sources (
                source_id text PRIMARY KEY,
                host text,
                folder text,
                first_seen double precision,
                last_seen double precision
            )""",
            """CREATE TABLE IF NOT EXISTS session_events (
                source_id text NOT NULL,
                session_id text NOT NULL,
                seq bigint NOT NULL,
                ts double precision,
                kind text,
                level text,
                logger text,
                role text,
                message text,
                data text,
                PRIMARY KEY (source_id, session_id, seq)
            )""",
            (
                "CREATE INDEX IF NOT EXISTS session_events_session_ts"
                " ON session_events (session_id, ts)"
            ),
            "CREATE INDEX IF NOT EXISTS session_events_ts ON session_events (ts)",
            """CREATE TABLE IF NOT EXISTS session_ingest_watermark (
                source_id text NOT NULL,
                session_id text NOT NULL,
                seq bigint NOT NULL,
                byte_offset bigint NOT NULL,
                head_len integer NOT NULL DEFAULT 0,
                head_sha256 text,
                file_dev numeric(20),
                file_ino numeric(20),
                scanned_to bigint NOT NULL DEFAULT 0,
                scan_sha256 text,
                source_dir text,
                updated_at double precision,
                PRIMARY KEY (source_id, session_id)
            )""",
            # A torn fragment and the record glued to it share a seq (docs/mirror.md:
            # seq is the line number), so the offset is part of the key.
            """CREATE TABLE IF NOT EXISTS session_ingest_errors (
                source_id text NOT NULL,
                session_id text NOT NULL,
                seq bigint NOT NULL,
                byte_offset bigint NOT NULL,
                error text NOT NULL,
                raw text,
                raw_bytes bytea,
                PRIMARY KEY (source_id, session_id, seq, byte_offset)
            )""",
            # json, not jsonb: a record may hold escapes jsonb rejects. The
            # views read a few fields of the line; a line whose fields json
            # could not give as text (\u0000, a surrogate escape, NaN, which
            # Python's json accepts) shows them as NULL instead of failing.
            """CREATE OR REPLACE FUNCTION codex_json(line text) RETURNS json
            LANGUAGE sql IMMUTABLE AS $$
                SELECT CASE
                    WHEN line ~ '\\\\u(0000|[dD][89a-fA-F])' OR line ~ '(NaN|Infinity)' THEN NULL
                    ELSE line::json
                END
            $$""",
            # The same columns as the SQLite views, plus the source
            # and its host; ISO-8601 UTC times.
            EVENTS_VIEW.format(time=_TEXT_TIME, trace=""),
            # One row per session id, merging every source (a CI matrix sharing
            # one CODEX_SESSION_ID): status is error if any end record failed,
            # ok if the session ended, else NULL.
            """CREATE OR REPLACE VIEW sessions AS
            SELECT
                session_id,
                to_char(to_timestamp(start_ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS start_time,
                to_char(to_timestamp(end_ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS end_time,
                CASE WHEN failed THEN 'error' WHEN end_ts IS NOT NULL THEN 'ok' END AS status,
                events,
                messages,
                warnings,
                errors,
                processes,
                round((end_ts - start_ts)::numeric, 3)::double precision AS duration_s,
                start_ts,
                end_ts,
                first_ts,
                last_ts,
                sources
            FROM (
                SELECT
                    session_id,
                    coalesce(min(ts) FILTER (WHERE kind = 'start'), min(ts)) AS start_ts,
                    max(ts) FILTER (WHERE kind = 'end') AS end_ts,
                    min(ts) AS first_ts,
                    max(ts) AS last_ts,
                    count(*) AS events,
                    count(*) - count(*) FILTER (WHERE kind <> 'message') AS messages,
                    count(*) FILTER (WHERE level IN ('WARNING', 'WARN')) AS warnings,
                    count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL', 'FATAL')) AS errors,
                    count(DISTINCT (source_id, pid)) FILTER (WHERE kind <> 'message')
                        AS processes,
                    coalesce(bool_or(kind = 'end' AND status = 'error'), false) AS failed,
                    count(DISTINCT source_id) AS sources
                FROM events
                GROUP BY session_id
            ) s""",
        ),
    ),
    (
        # As the SQLite mirror's migration 4: `sessions` reads one
        # row per (source, session), kept in each batch's transaction
        # (_postgres.PostgresTarget._summarise), instead of every event.
        "keep a per-session summary",
        (
            """CREATE TABLE IF NOT EXISTS session_summary (
                source_id text NOT NULL,
                session_id text NOT NULL,
                events bigint NOT NULL,
                marks bigint NOT NULL,
                warnings bigint NOT NULL,
                errors bigint NOT NULL,
                start_ts double precision,
                end_ts double precision,
                first_ts double precision,
                last_ts double precision,
                failed boolean NOT NULL,
                PRIMARY KEY (source_id, session_id)
            )""",
            # The distinct pids of each source's start/end records.
            """CREATE TABLE IF NOT EXISTS session_summary_pids (
                source_id text NOT NULL,
                session_id text NOT NULL,
                pid bigint NOT NULL,
                PRIMARY KEY (session_id, source_id, pid)
            )""",
            SUMMARY_PIDS.format(where="TRUE"),
            SUMMARY_ROWS.format(where="TRUE"),
            """CREATE OR REPLACE VIEW sessions AS
            SELECT
                session_id,
                to_char(to_timestamp(start_ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS start_time,
                to_char(to_timestamp(end_ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS end_time,
                CASE WHEN failed THEN 'error' WHEN end_ts IS NOT NULL THEN 'ok' END AS status,
                events,
                messages,
                warnings,
                errors,
                processes,
                round((end_ts - start_ts)::numeric, 3)::double precision AS duration_s,
                start_ts,
                end_ts,
                first_ts,
                last_ts,
                sources
            FROM (
                SELECT
                    s.session_id,
                    coalesce(min(s.start_ts), min(s.first_ts)) AS start_ts,
                    max(s.end_ts) AS end_ts,
                    min(s.first_ts) AS first_ts,
                    max(s.last_ts) AS last_ts,
                    sum(s.events)::bigint AS events,
                    sum(s.events - s.marks)::bigint AS messages,
                    sum(s.warnings)::bigint AS warnings,
                    sum(s.errors)::bigint AS errors,
                    (SELECT count(*) FROM session_summary_pids p
                        WHERE p.session_id = s.session_id) AS processes,
                    bool_or(s.failed) AS failed,
                    count(*) AS sources
                FROM session_summary s
                GROUP BY s.session_id
            ) s""",
        ),
    ),
    (
        # Records carry the OpenTelemetry trace context; the view
        # shows it as columns, at the end (CREATE OR REPLACE keeps the rest).
        "the trace context as columns of events",
        (EVENTS_VIEW.format(time=_TEXT_TIME, trace=_TRACE_COLUMNS),),
    ),
    (
        # As the SQLite mirror's migration 6: a file renamed, moved or
        # restored is known by its identity and content (docs/mirror.md, "Sync").
        "remember the bytes before each watermark, find a watermark by its file",
        (
            "ALTER TABLE session_ingest_watermark ADD COLUMN IF NOT EXISTS tail_sha256 text",
            """CREATE INDEX IF NOT EXISTS session_ingest_watermark_file
            ON session_ingest_watermark (source_id, file_ino)""",
            "CREATE INDEX IF NOT EXISTS sources_folder ON sources (folder)",
        ),
    ),
    (
        # A time a client can compute with: the column's type changes, so
        # the view is made anew (nothing depends on it).
        "events.time as timestamptz, rounded to the millisecond as in SQLite",
        (
            "DROP VIEW IF EXISTS events",
            EVENTS_VIEW.format(time=_TIMESTAMP, trace=_TRACE_COLUMNS),
        ),
    ),
    (
        # Each value stored once (docs/mirror.md, "Each value stored once"):
        # the source and session ids once per session, the common fields in
        # columns, only the others as JSON text. The old table's rows move
        # over in batches after this step (move_legacy_rows); until then the
        # view shows both. 8-byte columns first: no padding between columns.
        "each value stored once: session_keys and session_rows; session_events a view",
        (
            """CREATE TABLE IF NOT EXISTS session_keys (
                id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                source_id text NOT NULL,
                session_id text NOT NULL,
                UNIQUE (session_id, source_id)
            )""",
            """CREATE TABLE IF NOT EXISTS session_rows (
                sid bigint NOT NULL,
                seq bigint NOT NULL,
                ts double precision,
                pid bigint,
                shape smallint NOT NULL,
                kind text,
                level text,
                logger text,
                role text,
                message text,
                fields text,
                PRIMARY KEY (sid, seq)
            )""",
            "CREATE INDEX IF NOT EXISTS session_rows_session_ts ON session_rows (sid, ts)",
            "CREATE INDEX IF NOT EXISTS session_rows_ts ON session_rows (ts)",
            # A session's start and end records (its timeline, its processes).
            """CREATE INDEX IF NOT EXISTS session_rows_marks
            ON session_rows (sid, ts) WHERE kind <> 'message'""",
            # A session's warnings and errors, and --level warning --tail N
            # across sessions.
            f"""CREATE INDEX IF NOT EXISTS session_rows_alerts
            ON session_rows (sid, ts) WHERE {_ALERTS}""",
            f"""CREATE INDEX IF NOT EXISTS session_rows_alerts_ts
            ON session_rows (ts) WHERE {_ALERTS}""",
            _FLOAT_FUNCTION,
            _KEY_FUNCTION,
            _INSERT_FUNCTION,
            _DELETE_FUNCTION.format(delete=_DELETE_ROW, legacy=_LEGACY_DELETE),
            "DROP VIEW IF EXISTS events",
            f"ALTER TABLE session_events RENAME TO {LEGACY_TABLE}",
            f"""CREATE VIEW session_events AS {_COMPACT_EVENTS}
            UNION ALL
            SELECT source_id, session_id, seq, ts, kind, level, logger, role, message, data
            FROM {LEGACY_TABLE}""",  # noqa: S608 - constants
            # While rows move: migration 5's view, over the union.
            EVENTS_VIEW.format(time=_TIMESTAMP, trace=_TRACE_COLUMNS),
            *_TRIGGERS,
        ),
    ),
    (
        "drop the emptied old table; the views read the compact tables alone",
        (
            *_DROP_VIEWS,
            f"DROP TABLE IF EXISTS {LEGACY_TABLE}",
            _DELETE_FUNCTION.format(delete=_DELETE_ROW, legacy=""),
            f"CREATE VIEW session_events AS {_COMPACT_EVENTS}",
            *_TRIGGERS,
            _COMPACT_EVENTS_VIEW,
        ),
    ),
)

#: Each summary's latest ``end`` (by ts, then seq): its seq and its status.
_END_BACKFILL: Final = """
    UPDATE session_summary s SET end_seq = e.seq, end_status = e.status
    FROM (
        SELECT DISTINCT ON (r.sid) r.sid, r.seq, codex_json(r.fields) ->> 'status' AS status
        FROM session_rows r
        WHERE r.kind <> 'message' AND r.kind = 'end' AND r.ts IS NOT NULL
        ORDER BY r.sid, r.ts DESC, r.seq DESC
    ) e JOIN session_keys k ON k.id = e.sid
    WHERE k.source_id = s.source_id AND k.session_id = s.session_id
"""

MIGRATIONS += (
    (
        # As the SQLite mirror's migration 10: a session a signal ended says
        # so (docs/scale-out.md). Each source's summary keeps its latest
        # end's seq and status; the view takes the latest of every source's.
        "a session whose latest end is terminated has the status terminated",
        (
            "ALTER TABLE session_summary ADD COLUMN IF NOT EXISTS end_seq bigint",
            "ALTER TABLE session_summary ADD COLUMN IF NOT EXISTS end_status text",
            _END_BACKFILL,
            """CREATE OR REPLACE VIEW sessions AS
            SELECT
                session_id,
                to_char(to_timestamp(start_ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS start_time,
                to_char(to_timestamp(end_ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS end_time,
                CASE WHEN failed THEN 'error' WHEN end_ts IS NULL THEN NULL
                    WHEN end_status = 'terminated' THEN 'terminated' ELSE 'ok' END AS status,
                events,
                messages,
                warnings,
                errors,
                processes,
                round((end_ts - start_ts)::numeric, 3)::double precision AS duration_s,
                start_ts,
                end_ts,
                first_ts,
                last_ts,
                sources
            FROM (
                SELECT
                    s.session_id,
                    coalesce(min(s.start_ts), min(s.first_ts)) AS start_ts,
                    max(s.end_ts) AS end_ts,
                    min(s.first_ts) AS first_ts,
                    max(s.last_ts) AS last_ts,
                    sum(s.events)::bigint AS events,
                    sum(s.events - s.marks)::bigint AS messages,
                    sum(s.warnings)::bigint AS warnings,
                    sum(s.errors)::bigint AS errors,
                    (SELECT count(*) FROM session_summary_pids p
                        WHERE p.session_id = s.session_id) AS processes,
                    bool_or(s.failed) AS failed,
                    (array_agg(s.end_status ORDER BY s.end_ts DESC NULLS LAST,
                        s.end_seq DESC NULLS LAST, s.source_id DESC))[1] AS end_status,
                    count(*) AS sources
                FROM session_summary s
                GROUP BY s.session_id
            ) s""",
        ),
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
#: The schema whose old table empties in batches before the next step.
MOVING: Final = 6
#: The schema whose summary keeps each session's latest end (a sync into a
#: database whose move was left for later writes the summary without it).
END_STATUS: Final = 8

#: A batch's rows (``sid``, seq after the old watermark, up to the new one)
#: added to its session's summary, read from the compact table (with the
#: latest end's columns from :data:`END_STATUS` on). Parameters: source,
#: session, sid, after, upto.
_BATCH_SUMMARY: Final = {
    "keys": "%s, %s",
    "json": "fields",
    "rows": (
        "FROM session_rows\n    WHERE sid = %s AND seq > %s AND seq <= %s\n    HAVING count(*) > 0"
    ),
}
#: Whether the batch's latest end is later (by ts, then seq) than the summary's.
_LATER_END: Final = """excluded.end_ts IS NOT NULL AND (old.end_ts IS NULL
            OR excluded.end_ts > old.end_ts
            OR (excluded.end_ts = old.end_ts AND excluded.end_seq > old.end_seq))"""
#: :data:`SUMMARY_BATCH` at :data:`END_STATUS` and after: the batch's latest
#: end (by ts, then seq) replaces the summary's when it is later.
SUMMARY_BATCH_ENDS: Final = _SUMMARY_UPSERT.format(
    **_BATCH_SUMMARY,
    end_columns=", end_seq, end_status",
    end_values=""",
        (array_agg(seq ORDER BY ts DESC, seq DESC)
            FILTER (WHERE kind = 'end' AND ts IS NOT NULL))[1],
        (array_agg(codex_json(fields) ->> 'status' ORDER BY ts DESC, seq DESC)
            FILTER (WHERE kind = 'end' AND ts IS NOT NULL))[1]""",
    end_updates=f"""
        end_seq = CASE WHEN {_LATER_END} THEN excluded.end_seq ELSE old.end_seq END,
        end_status = CASE WHEN {_LATER_END} THEN excluded.end_status ELSE old.end_status END,""",
)
SUMMARY_BATCH: Final = _SUMMARY_UPSERT.format(
    **_BATCH_SUMMARY, end_columns="", end_values="", end_updates=""
)
#: The distinct pids of a batch's start and end records (as :data:`SUMMARY_PIDS`).
SUMMARY_BATCH_PIDS: Final = f"""
    INSERT INTO session_summary_pids (source_id, session_id, pid)
    SELECT DISTINCT %s, %s, pid FROM (
        SELECT {_ROW_PID} AS pid
        FROM session_rows r
        WHERE r.sid = %s AND r.seq > %s AND r.seq <= %s AND r.kind <> 'message'
    ) p
    WHERE pid IS NOT NULL
    ON CONFLICT DO NOTHING
"""  # noqa: S608 - constants


def import_psycopg() -> Any:
    """Return the psycopg module.

    Raises:
        PostgresNotInstalledError: It is not installed.
    """
    try:
        import psycopg  # noqa: PLC0415 - optional extra, imported on first use only
    except ImportError as exc:
        msg = (
            "PostgreSQL support needs psycopg 3: pip install 'psycopg[binary]>=3.1'"
            f" (the postgres extra: pip install '.[postgres]' in a checkout) ({exc})"
        )
        raise PostgresNotInstalledError(msg) from exc
    return psycopg


def display_url(url: str) -> str:
    """Return ``url`` without its passwords, for messages (:func:`hide_secrets`).

    Args:
        url: A ``postgresql://`` URL, well formed or not.

    Returns:
        The URL with every password replaced by ``***``.
    """
    return hide_secrets(url, url)


@contextmanager
def translated(name: str) -> Iterator[None]:
    """Turn psycopg's errors in the block into this package's, naming ``name``."""
    psycopg = import_psycopg()
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        msg = hide_secrets(f"database {name} stayed locked by another sync: {exc}")
        raise DatabaseLockedError(msg) from exc
    except psycopg.Error as exc:
        msg = hide_secrets(f"cannot use database {name}: {str(exc).strip()}")
        raise DatabaseError(msg) from exc


def connect(url: str, *, busy_timeout: float = BUSY_TIMEOUT, read_only: bool = False) -> Any:
    """Open a connection in autocommit mode; work inside :func:`transaction`.

    Nothing is set for the whole session, and no statement is prepared on
    the server: behind a transaction-pooling pgbouncer either would reach
    other clients or get lost, so each transaction sets what it needs with
    ``SET LOCAL``.

    Args:
        url: A ``postgresql://`` URL (libpq's ``PG*`` variables fill the rest).
        busy_timeout: Seconds to wait for the server to answer the login.
        read_only: Every transaction is ``READ ONLY`` (the query commands).

    Returns:
        A ``psycopg.Connection``.

    Raises:
        PostgresNotInstalledError: psycopg is not installed.
        DatabaseError: The server cannot be reached or refuses the login.
    """
    psycopg = import_psycopg()
    failure: str | None = None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(busy_timeout)))
        # psycopg prepares a statement run five times on the server; behind a
        # transaction-pooling pgbouncer the next transaction may reach another
        # server connection that does not have it.
        conn.prepare_threshold = None
    except psycopg.Error as exc:
        # libpq quotes what it cannot parse, a password or a piece of one: the
        # message is cleaned, and the driver's error is left out of the chain
        # (a traceback would print it).
        failure = hide_secrets(f"cannot use database {url}: {str(exc).strip()}", url)
    if failure is not None:
        raise DatabaseError(failure)
    conn.read_only = read_only
    return conn


@contextmanager
def transaction(conn: psycopg.Connection[Any], busy_timeout: float) -> Iterator[None]:
    """Run a block in one transaction that waits at most ``busy_timeout`` for a lock.

    Args:
        conn: A connection from :func:`connect`.
        busy_timeout: Seconds; past them a lock wait fails with
            ``LockNotAvailable`` (:class:`DatabaseLockedError` through
            :func:`translated`).
    """
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = {max(1, int(busy_timeout * 1000)):d}")
        yield


#: Rows moved per transaction while the old table empties: each batch is
#: copied and deleted in one transaction, so a kill at any point loses at most
#: the batch in flight, which is still in the old table.
MOVE_BATCH: Final = 20_000
#: A batch ends early past this many bytes of text (long lines).
MOVE_BYTES: Final = 64 << 20

#: Called with (rows moved so far, rows to move in all) while the old table empties.
MoveProgress = Callable[[int, int], None]


def migrate(
    conn: psycopg.Connection[Any],
    name: str = "database",
    busy_timeout: float = BUSY_TIMEOUT,
    progress: MoveProgress | None = None,
) -> None:
    """Apply the migrations this database has not had yet.

    Concurrent ``CREATE ... IF NOT EXISTS`` statements fail on the catalog's
    unique index, so every migrating connection first takes one advisory lock,
    held to the end of the transaction (never a session-level one, which
    outlives its transaction behind a transaction-pooling pgbouncer).

    Before the step that drops the old ``session_events`` table, its rows
    move to the compact tables in batches (:func:`move_legacy_rows`); many
    connections may move at once, each its own rows. That last step waits
    for the moves in flight; when the old table stays locked past
    ``busy_timeout`` by a reader it is left for the next writer: the views
    show every row meanwhile.

    Args:
        conn: A connection from :func:`connect`.
        name: The database, for messages.
        busy_timeout: Seconds to wait for another connection's migration.
        progress: Told how far the rows' move got, after each batch.
    """
    with translated(name):
        if schema_version(conn) >= SCHEMA_VERSION:
            return
        _apply(conn, busy_timeout, MOVING)
        idle = 0
        while schema_version(conn) == MOVING:
            moved = move_legacy_rows(conn, name, busy_timeout, progress)
            taken = _finish_move(conn, busy_timeout)
            if taken is None:
                return
            # Rows left after a move that found none to move, twice: they cannot move.
            idle = 0 if taken or moved else idle + 1
            if idle > 1:
                msg = f"{name}: the rows of {LEGACY_TABLE} do not move (is it a table?)"
                raise DatabaseError(msg)
        _apply(conn, busy_timeout, SCHEMA_VERSION)


def _apply(conn: psycopg.Connection[Any], busy_timeout: float, upto: int) -> None:
    """Apply the migrations up to number ``upto`` in one transaction, under the lock.

    A new database (no ``session_events`` yet) gets every migration in this
    one transaction: it has no rows to move, and no reader sees a step
    between two migrations.
    """
    if schema_version(conn) >= upto:
        return
    with transaction(conn, busy_timeout):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS codex_schema_version (version integer)")
        version = schema_version(conn)
        if version == 0:
            if not table_exists(conn, "session_events"):
                upto = SCHEMA_VERSION
            conn.execute("INSERT INTO codex_schema_version VALUES (0)")
        for number in range(version + 1, upto + 1):
            _name, statements = MIGRATIONS[number - 1]
            for statement in statements:
                conn.execute(statement)
            conn.execute("UPDATE codex_schema_version SET version = %s", (number,))


def _finish_move(conn: psycopg.Connection[Any], busy_timeout: float) -> bool | None:
    """Take the step after the move once the old table is empty.

    Returns:
        True when the step was taken (here or by another connection), False
        when rows are left to move (a batch in flight was rolled back), None
        when the old table stayed locked (the step is left for later).
    """
    psycopg = import_psycopg()
    left = False
    try:
        with transaction(conn, busy_timeout):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if schema_version(conn) != MOVING:
                return True
            for statement in _DROP_VIEWS:
                conn.execute(statement)
            if table_exists(conn, LEGACY_TABLE):
                # Waits for the batches other connections have in flight.
                conn.execute(f"LOCK TABLE {LEGACY_TABLE} IN ACCESS EXCLUSIVE MODE")
                if conn.execute(f"SELECT 1 FROM {LEGACY_TABLE} LIMIT 1").fetchone():  # noqa: S608
                    left = True
                    # psycopg's way out of a transaction block: the views' drop is undone.
                    raise psycopg.Rollback
            for statement in MIGRATIONS[MOVING][1]:
                conn.execute(statement)
            conn.execute("UPDATE codex_schema_version SET version = %s", (MOVING + 1,))
    except psycopg.errors.LockNotAvailable:
        return None
    return not left


#: The next rows to move, locked (rows another connection is moving are
#: skipped), with their sizes (``octet_length`` reads no TOASTed value).
_LEGACY_KEYS: Final = f"""
    SELECT source_id, session_id, seq,
        coalesce(octet_length(data), 0) + coalesce(octet_length(message), 0)
    FROM {LEGACY_TABLE}
    WHERE (source_id, session_id, seq) > (%s, %s, %s)
    ORDER BY source_id, session_id, seq
    LIMIT %s
    FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - constants
#: Those rows, deleted and given back.
_LEGACY_TAKE: Final = f"""
    DELETE FROM {LEGACY_TABLE} l
    USING unnest(%s::text[], %s::text[], %s::bigint[]) AS b(source_id, session_id, seq)
    WHERE l.source_id = b.source_id AND l.session_id = b.session_id AND l.seq = b.seq
    RETURNING l.source_id, l.session_id, l.seq, l.ts, l.kind, l.level, l.logger, l.role,
        l.message, l.data
"""  # noqa: S608 - constants

#: One batch of compact rows, by ``COPY`` (the sync and the move write them).
COPY_ROWS: Final = (
    "COPY session_rows (sid, seq, ts, pid, shape, kind, level, logger, role, message, fields)"
    " FROM STDIN (FORMAT BINARY)"
)
COPY_TYPES: Final = ("int8", "int8", "float8", "int8", "int2", *("text",) * 6)


def move_legacy_rows(
    conn: psycopg.Connection[Any],
    name: str = "database",
    busy_timeout: float = BUSY_TIMEOUT,
    progress: MoveProgress | None = None,
) -> int:
    """Move the rows of the old ``session_events`` table into the compact tables.

    Each batch is deleted from the old table and written to the new ones in
    one transaction: killed at any point, a rerun goes on from the last
    commit, and the views show every row exactly once meanwhile. Rows another
    connection is moving are skipped (``SKIP LOCKED``), so many can move at once.

    Args:
        conn: A connection at schema :data:`MOVING`.
        name: The database, for messages.
        busy_timeout: Seconds to wait for a lock.
        progress: Told (moved, total) after each batch.

    Returns:
        The rows moved by this call.
    """
    gone = import_psycopg().errors.UndefinedTable
    moved = 0
    with translated(name):
        try:
            total = estimated_rows(conn, LEGACY_TABLE)
            after: tuple[str, str, int] = ("", "", 0)
            while True:
                keys: dict[tuple[str, str], int] = {}  # a rolled-back batch takes its new keys
                with transaction(conn, busy_timeout):
                    batch = _take(conn, after)
                    if not batch:
                        break
                    rows = [compact_row(conn, keys, row) for row in batch]  # before the COPY
                    with conn.cursor().copy(COPY_ROWS) as copy:
                        copy.set_types(COPY_TYPES)
                        for row in rows:
                            copy.write_row(row)
                after = batch.last
                moved += len(batch)
                total = max(total, moved)
                if progress is not None:
                    progress(moved, total)
        except gone:
            pass  # another connection finished the move and dropped the old table
    return moved


class _Batch(list[tuple[Any, ...]]):
    """Rows taken from the old table, and the last key taken (in the server's order)."""

    last: tuple[str, str, int] = ("", "", 0)


def _take(conn: psycopg.Connection[Any], after: tuple[str, str, int]) -> _Batch:
    """Delete and return the next rows of the old table after key ``after``, in a transaction."""
    keys = conn.execute(_LEGACY_KEYS, (*after, MOVE_BATCH)).fetchall()
    size = 0
    for count, key in enumerate(keys):
        size += key[3]
        if size > MOVE_BYTES and count:
            del keys[count:]  # the rest stay locked until the commit, and unmoved
            break
    batch = _Batch()
    if keys:
        columns = ([key[0] for key in keys], [key[1] for key in keys], [key[2] for key in keys])
        batch.extend(conn.execute(_LEGACY_TAKE, columns).fetchall())
        batch.last = keys[-1][:3]
    return batch


def estimated_rows(conn: psycopg.Connection[Any], table: str) -> int:
    # An exact count of a big table reads all of it: the planner's estimate
    # is enough for a progress report (a small table is counted).
    row = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
        (table,),
    ).fetchone()
    estimate = int(row[0]) if row else 0
    if estimate >= 1_000_000:
        return estimate
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - a constant name
    return int(row[0]) if row else 0


def session_key(conn: psycopg.Connection[Any], source: str, session_id: str) -> int:
    """Return the ``session_keys`` id of a session, adding it if new.

    Args:
        conn: A connection, inside the transaction that writes the rows (a
            rolled-back batch takes its new key with it).
        source: The sessions folder's id.
        session_id: The session.

    Returns:
        Its id.
    """
    row = conn.execute("SELECT codex_session_key(%s, %s)", (source, session_id)).fetchone()
    return int(row[0])  # type: ignore[index]  # a SELECT of one value gives one row


_COLUMN_FIELDS: Final = ("ts", "kind", "level", "logger", "role", "message")

#: A JSON string, or an infinity Python's json wrote outside one.
_STRING_OR_INFINITY: Final = re.compile(r'"(?:[^"\\]|\\.)*"|-?Infinity')


def finite_json(fields: str | None) -> str | None:
    """Return the JSON text ``fields`` with an infinity spelled as a number (``1e999``).

    Python's json writes an infinite float (a line's ``1e400``) as
    ``Infinity``, which the server's json refuses (``codex_json`` gives NULL
    for the whole record); ``1e999`` is a number both read, and Python's json
    reads it back as the same infinity.

    Args:
        fields: A row's other fields, or None.

    Returns:
        The same JSON text, its infinities (outside strings) spelled ``1e999``.
    """
    if fields is None or "Infinity" not in fields:
        return fields
    return _STRING_OR_INFINITY.sub(
        lambda m: m[0] if m[0][0] == '"' else m[0].replace("Infinity", "1e999"), fields
    )


def compact_row(
    conn: psycopg.Connection[Any], keys: dict[tuple[str, str], int], row: tuple[Any, ...]
) -> tuple[Any, ...]:
    """Return the compact row (:data:`COPY_ROWS` order) of an old ``session_events`` row.

    Args:
        conn: A connection in the batch's transaction (for a session's key).
        keys: The keys already looked up in this transaction's caller.
        row: ``(source_id, session_id, seq, ts, kind, level, logger, role, message, data)``.

    Returns:
        The row; a ``data`` that is not a JSON object is kept whole (``shape`` 0).
    """
    source, session_id, seq, ts, kind, level, logger, role, message, data = row
    sid = keys.get((source, session_id))
    if sid is None:
        sid = keys[source, session_id] = session_key(conn, source, session_id)
    try:
        obj = loads(data.encode("utf-8"))
    except (ValueError, TypeError, AttributeError, RecursionError, UnicodeError):
        obj = None
    if type(obj) is not dict or not obj:
        return (sid, seq, ts, None, 0, kind, level, logger, role, message, data)
    # A column moves only where it holds the line's own value: the stored
    # columns are the parser's (U+FFFD for a NUL, a repaired text), so a
    # field is moved only when its stored column equals it.
    stored = (ts, kind, level, logger, role, message)
    columns = tuple(
        obj.get(field) if obj.get(field) == value and type(obj.get(field)) is type(value) else value
        for field, value in zip(_COLUMN_FIELDS, stored, strict=True)
    )
    pid, shape, fields = split(obj, session_id, columns)
    if shape == 0:
        return (sid, seq, ts, None, 0, kind, level, logger, role, message, data)
    return (sid, seq, *columns[:1], pid, shape, *columns[1:], finite_json(fields))


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """Return how many migrations the database has had (0 for none)."""
    if not table_exists(conn, "codex_schema_version"):
        return 0
    (version,) = conn.execute("SELECT max(version) FROM codex_schema_version").fetchone() or (0,)
    return int(version or 0)


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    (found,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() or (False,)
    return bool(found)
