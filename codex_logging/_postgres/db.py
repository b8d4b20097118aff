"""PostgreSQL: connecting, the schema and its migrations (as ``_sqlite/db.py`` is for SQLite).

psycopg is imported on first use only: a hook script that only logs never pays
for it, and without it the error names the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from codex_logging._errors import (
    DatabaseError,
    DatabaseLockedError,
    PostgresNotInstalledError,
    hide_secrets,
)
from codex_logging._settings import BUSY_TIMEOUT as BUSY_TIMEOUT  # noqa: PLC0414 - re-exported

if TYPE_CHECKING:
    import psycopg

#: The key of the advisory lock migrations hold ("codexlog" in ASCII).
_MIGRATION_LOCK: Final = 0x636F6465786C6F67

#: A summary's rows from ``session_events`` rows matching ``{where}`` (with
#: ``%s`` parameters): the whole table when migration 2 builds the summary,
#: one batch's rows when a sync adds them. Each column is what the first
#: ``sessions`` view computed; the pids are the ``events`` view's.
SUMMARY_ROWS: Final = """
    INSERT INTO session_summary AS old (source_id, session_id, events, marks, warnings, errors,
        start_ts, end_ts, first_ts, last_ts, failed)
    SELECT source_id, session_id,
        count(*),
        count(*) FILTER (WHERE kind <> 'message'),
        count(*) FILTER (WHERE level IN ('WARNING', 'WARN')),
        count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL', 'FATAL')),
        min(ts) FILTER (WHERE kind = 'start'),
        max(ts) FILTER (WHERE kind = 'end'),
        min(ts),
        max(ts),
        coalesce(bool_or(codex_json(data) ->> 'status' = 'error') FILTER (WHERE kind = 'end'),
            false)
    FROM session_events
    WHERE {where}
    GROUP BY source_id, session_id
    ON CONFLICT (source_id, session_id) DO UPDATE SET
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

#: Each migration is a named step; ``codex_schema_version`` counts those applied.
MIGRATIONS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
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
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


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


def migrate(
    conn: psycopg.Connection[Any], name: str = "database", busy_timeout: float = BUSY_TIMEOUT
) -> None:
    """Apply the migrations this database has not had yet.

    Concurrent ``CREATE ... IF NOT EXISTS`` statements fail on the catalog's
    unique index, so every migrating connection first takes one advisory lock,
    held to the end of the transaction (never a session-level one, which
    outlives its transaction behind a transaction-pooling pgbouncer).

    Args:
        conn: A connection from :func:`connect`.
        name: The database, for messages.
        busy_timeout: Seconds to wait for another connection's migration.
    """
    with translated(name):
        if _schema_version(conn) >= SCHEMA_VERSION:
            return
        with transaction(conn, busy_timeout):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS codex_schema_version (version integer)")
            version = _schema_version(conn)
            if version == 0:
                conn.execute("INSERT INTO codex_schema_version VALUES (0)")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                _name, statements = MIGRATIONS[number - 1]
                for statement in statements:
                    conn.execute(statement)
                conn.execute("UPDATE codex_schema_version SET version = %s", (number,))


def _schema_version(conn: psycopg.Connection[Any]) -> int:
    if not table_exists(conn, "codex_schema_version"):
        return 0
    (version,) = conn.execute("SELECT max(version) FROM codex_schema_version").fetchone() or (0,)
    return int(version or 0)


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    (found,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() or (False,)
    return bool(found)
