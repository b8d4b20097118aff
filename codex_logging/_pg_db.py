"""PostgreSQL: connecting, the schema and its migrations (as ``_db`` is for SQLite).

psycopg is imported on first use only: a hook script that only logs never pays
for it, and without it the error names the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from codex_logging._errors import DatabaseError, DatabaseLockedError, PostgresNotInstalledError

if TYPE_CHECKING:
    import psycopg

#: Default wait for a row or table lock held by another sync (as SQLite's).
BUSY_TIMEOUT: Final = 10.0
#: The key of the advisory lock migrations hold ("codexlog" in ASCII).
_MIGRATION_LOCK: Final = 0x636F6465786C6F67

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
            # A torn fragment and the record glued to it share a seq (SPEC:
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
            # json, not jsonb: a record may hold escapes jsonb rejects. A line
            # whose status cannot be read is no reason to fail the view.
            """CREATE OR REPLACE FUNCTION codex_end_status(line text) RETURNS text
            LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN
                RETURN line::json ->> 'status';
            EXCEPTION WHEN others THEN
                RETURN NULL;
            END $$""",
            # One row per session id, merging every source (a CI matrix sharing
            # one CODEX_SESSION_ID); status is error if any end record failed.
            """CREATE OR REPLACE VIEW sessions AS
            SELECT
                session_id,
                coalesce(min(ts) FILTER (WHERE kind = 'start'), min(ts)) AS start_ts,
                max(ts) FILTER (WHERE kind = 'end') AS end_ts,
                CASE
                    WHEN bool_or(kind = 'end' AND codex_end_status(data) = 'error')
                        THEN 'error'
                    ELSE (array_agg(codex_end_status(data) ORDER BY ts DESC, seq DESC)
                          FILTER (WHERE kind = 'end'))[1]
                END AS status,
                min(ts) AS first_ts,
                max(ts) AS last_ts,
                count(*) AS events,
                count(DISTINCT source_id) AS sources,
                to_char(to_timestamp(min(ts)) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS first_time
            FROM session_events
            GROUP BY session_id""",
            # The events of every source, with the host and an ISO-8601 UTC time.
            """CREATE OR REPLACE VIEW events AS
            SELECT
                e.session_id, e.source_id, s.host, e.seq, e.ts,
                to_char(to_timestamp(e.ts) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
                e.kind, e.level, e.logger, e.role, e.message, e.data
            FROM session_events e LEFT JOIN sources s USING (source_id)""",
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
        msg = f"PostgreSQL support needs psycopg 3: pip install 'codex-logging[postgres]' ({exc})"
        raise PostgresNotInstalledError(msg) from exc
    return psycopg


def display_url(url: str) -> str:
    """Return ``url`` without its password, for messages.

    Args:
        url: A ``postgresql://`` URL.

    Returns:
        The URL with any password replaced by ``***``.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


@contextmanager
def translated(name: str) -> Iterator[None]:
    """Turn psycopg's errors in the block into this package's, naming ``name``."""
    psycopg = import_psycopg()
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        msg = f"database {name} stayed locked by another sync: {exc}"
        raise DatabaseLockedError(msg) from exc
    except psycopg.Error as exc:
        msg = f"cannot use database {name}: {str(exc).strip()}"
        raise DatabaseError(msg) from exc


def connect(url: str, *, busy_timeout: float = BUSY_TIMEOUT, read_only: bool = False) -> Any:
    """Open a connection in autocommit mode; work inside :func:`transaction`.

    Nothing is set for the whole session: behind a transaction-pooling
    pgbouncer a session setting would reach other clients or get lost, so each
    transaction sets what it needs with ``SET LOCAL``.

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
    name = display_url(url)
    with translated(name):
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(busy_timeout)))
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
