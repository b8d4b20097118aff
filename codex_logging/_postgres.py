"""PostgreSQL: the mirror many machines share, its schema and the reads of the CLI.

``sync_to_postgres`` runs the same engine as ``sync_to_sqlite`` (``_ingest``)
over a :class:`PostgresTarget`. Rows are keyed by ``(source_id, session_id,
seq)``: ``source_id`` names one sessions folder, so a CI matrix sharing one
``CODEX_SESSION_ID`` on many hosts lands side by side, each file exactly once.

Each batch is one transaction: a compare-and-set on the watermark of
``(source_id, session_id)`` first, then the rows by ``COPY``. A sync that lost a
race finds the watermark moved, rolls back and says so. Migrations run under a
transaction-scoped advisory lock (``pg_advisory_xact_lock``; a session-level
lock would outlive its transaction behind pgbouncer).

NUL cannot be stored in PostgreSQL text. A record's ``\\u0000`` escape becomes
U+FFFD in the ``kind``/``level``/``logger``/``role``/``message`` columns while
``data`` keeps the line exactly as written (JSON escapes NUL, so the line itself
never holds one): ``convert_to(data, 'UTF8') || '\\n'`` is the line in the file.
A quarantined line that is not text (bad UTF-8, a raw NUL) is shown in ``raw``
with U+FFFD and kept byte for byte in ``raw_bytes``; the line is
``coalesce(raw_bytes, convert_to(raw, 'UTF8'))``.

psycopg is imported only here, on first use: a hook script that only logs never
pays for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from codex_logging._errors import (
    DatabaseError,
    DatabaseLockedError,
    PostgresNotInstalledError,
    UnknownSessionError,
)
from codex_logging._ingest import (
    Progress,
    SyncReport,
    Watermark,
    WatermarkMovedError,
    rejected_error,
    rejected_event,
    run_sync,
    source_id,
)
from codex_logging._lines import ErrorRow, EventRow
from codex_logging._settings import sessions_dir_path

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

_COPY_EVENTS: Final = (
    "COPY session_events (source_id, session_id, seq, ts, kind, level, logger, role,"
    " message, data) FROM STDIN"
)
_INSERT_EVENT: Final = (
    "INSERT INTO session_events (source_id, session_id, seq, ts, kind, level, logger, role,"
    " message, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_INSERT_ERROR: Final = (
    "INSERT INTO session_ingest_errors"
    " (source_id, session_id, seq, byte_offset, error, raw, raw_bytes)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_MARK_COLUMNS: Final = (
    "seq, byte_offset, head_len, head_sha256, file_dev, file_ino, scanned_to, scan_sha256,"
    " source_dir, updated_at"
)


def _psycopg() -> Any:
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
def _translated(name: str) -> Iterator[None]:
    psycopg = _psycopg()
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        msg = f"database {name} stayed locked by another sync: {exc}"
        raise DatabaseLockedError(msg) from exc
    except psycopg.Error as exc:
        msg = f"cannot use database {name}: {str(exc).strip()}"
        raise DatabaseError(msg) from exc


def connect(url: str, *, busy_timeout: float = BUSY_TIMEOUT, read_only: bool = False) -> Any:
    """Open a connection in autocommit mode; write inside ``conn.transaction()``.

    Args:
        url: A ``postgresql://`` URL (libpq's ``PG*`` variables fill the rest).
        busy_timeout: Seconds a statement waits for a lock before failing.
        read_only: Refuse every write (the query commands).

    Returns:
        A ``psycopg.Connection``.

    Raises:
        PostgresNotInstalledError: psycopg is not installed.
        DatabaseError: The server cannot be reached or refuses the login.
    """
    psycopg = _psycopg()
    name = display_url(url)
    with _translated(name):
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(busy_timeout)))
        try:
            conn.execute(f"SET lock_timeout = {int(busy_timeout * 1000):d}")
            conn.read_only = read_only
        except BaseException:
            conn.close()
            raise
    return conn


def migrate(conn: psycopg.Connection[Any], name: str = "database") -> None:
    """Apply the migrations this database has not had yet.

    Concurrent ``CREATE ... IF NOT EXISTS`` statements fail on the catalog's
    unique index, so every migrating connection first takes one advisory lock,
    held to the end of the transaction (never a session-level one, which
    outlives its transaction behind a transaction-pooling pgbouncer).

    Args:
        conn: A connection from :func:`connect`.
        name: The database, for messages.
    """
    with _translated(name):
        if _schema_version(conn) >= SCHEMA_VERSION:
            return
        with conn.transaction():
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
    if not _exists(conn, "codex_schema_version"):
        return 0
    (version,) = conn.execute("SELECT max(version) FROM codex_schema_version").fetchone() or (0,)
    return int(version or 0)


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    (found,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() or (False,)
    return bool(found)


def _safe(value: object) -> Any:
    # A record's \u0000 escape parses to NUL, which PostgreSQL text refuses;
    # data keeps the line, so the column shows U+FFFD (module docstring).
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _error_values(source: str, row: ErrorRow) -> tuple[object, ...]:
    session, seq, offset, error, raw = row
    if isinstance(raw, str) and "\x00" not in raw:
        text, exact = raw, None
    else:
        exact = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        text = exact.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return (source, session, seq, offset, _safe(error), text, exact)


class PostgresTarget:
    """The engine's database target for PostgreSQL (see ``_ingest.Target``).

    It connects on first use, so a sync of a missing folder touches no server.

    Args:
        url: The database URL.
        folder: The absolute sessions folder being synced.
        busy_timeout: Seconds to wait for a lock held by another sync.
    """

    def __init__(self, url: str, folder: str, busy_timeout: float) -> None:
        self.name = display_url(url)
        self.url = url
        self.folder = folder
        self.busy_timeout = busy_timeout
        self.source = ""
        self._conn: Any = None

    @property
    def conn(self) -> Any:
        """The connection, opened, migrated and this folder registered on first use."""
        if self._conn is None:
            import socket  # noqa: PLC0415 - only a sync into PostgreSQL needs it

            # The engine made the folder's id before it asks for watermarks.
            self.source = source_id(self.folder)
            conn = connect(self.url, busy_timeout=self.busy_timeout)
            try:
                migrate(conn, self.name)
                now = time.time()
                with _translated(self.name):
                    conn.execute(
                        "INSERT INTO sources (source_id, host, folder, first_seen, last_seen)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source_id) DO UPDATE SET"
                        " host = excluded.host, folder = excluded.folder,"
                        " last_seen = excluded.last_seen",
                        (self.source, socket.gethostname(), self.folder, now, now),
                    )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def read_watermarks(self) -> dict[str, Watermark]:
        """Return the watermark of every session of this folder."""
        return dict(self._marks(""))

    def read_watermark(self, session_id: str) -> Watermark | None:
        """Return the stored watermark of this folder's session, if any."""
        return dict(self._marks(session_id)).get(session_id)

    def _marks(self, session_id: str) -> Iterator[tuple[str, Watermark]]:
        conn = self.conn
        sql = (
            f"SELECT session_id, {_MARK_COLUMNS} FROM session_ingest_watermark"  # noqa: S608
            " WHERE source_id = %s"
        )
        params: tuple[str, ...] = (self.source,)
        if session_id:
            sql += " AND session_id = %s"
            params += (session_id,)
        with _translated(self.name):
            rows = conn.execute(sql, params).fetchall()
        for sid, seq, offset, head_len, head, dev, ino, scanned, scan, folder, _at in rows:
            yield (
                sid,
                Watermark(
                    seq=seq,
                    byte_offset=offset,
                    head_len=head_len,
                    head_sha256=head,
                    file_dev=int(dev or 0),
                    file_ino=int(ino or 0),
                    source_id=self.source,
                    scanned_to=scanned,
                    source_dir=folder,
                    scan_sha256=scan,
                ),
            )

    def commit(
        self,
        session_id: str,
        expected_seq: int,
        events: Sequence[EventRow],
        errors: Sequence[ErrorRow],
        *,
        mark: Watermark,
        offsets: Sequence[int],
    ) -> int:
        """Store one batch with its watermark in one transaction.

        Returns:
            The number of event rows inserted.

        Raises:
            WatermarkMovedError: Another sync moved the watermark since it was read.
        """
        psycopg = _psycopg()
        refused = (psycopg.DataError, psycopg.IntegrityError, UnicodeError)
        conn = self.conn
        with _translated(self.name):
            try:
                with conn.transaction():
                    self._move_watermark(session_id, expected_seq, mark)
                    self._copy(events)
                    self._insert_errors(errors)
                    return len(events)
            except refused:
                pass
            # The server refused a row: the batch again, row by row, each
            # refused row quarantined with the server's message.
            with conn.transaction():
                self._move_watermark(session_id, expected_seq, mark)
                inserted = 0
                quarantine: list[ErrorRow] = []
                for row, offset in zip(events, offsets, strict=True):
                    try:
                        with conn.transaction():
                            conn.execute(_INSERT_EVENT, (self.source, *map(_safe, row)))
                        inserted += 1
                    except refused as exc:
                        quarantine.append(rejected_event(row, offset, exc))
                for error in errors:
                    try:
                        with conn.transaction():
                            self._insert_errors([error])
                    except refused as exc:
                        quarantine.append(rejected_error(error, exc))
                self._insert_errors(quarantine)
                return inserted

    def _move_watermark(self, session_id: str, expected_seq: int, mark: Watermark) -> None:
        # Compare and set, first in the transaction: a sync that raced this
        # one waits here on the row lock, then finds the seq moved.
        values = (
            mark.seq,
            mark.byte_offset,
            mark.head_len,
            mark.head_sha256,
            mark.file_dev,
            mark.file_ino,
            mark.scanned_to,
            mark.scan_sha256,
            mark.source_dir,
            time.time(),
        )
        cur = self.conn.execute(
            "UPDATE session_ingest_watermark SET seq = %s, byte_offset = %s, head_len = %s,"
            " head_sha256 = %s, file_dev = %s, file_ino = %s, scanned_to = %s,"
            " scan_sha256 = %s, source_dir = %s, updated_at = %s"
            " WHERE source_id = %s AND session_id = %s AND seq = %s",
            (*values, self.source, session_id, expected_seq),
        )
        if cur.rowcount == 1:
            return
        if expected_seq == 0:
            cur = self.conn.execute(
                "INSERT INTO session_ingest_watermark"  # noqa: S608 - constant columns
                f" (source_id, session_id, {_MARK_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (self.source, session_id, *values),
            )
            if cur.rowcount == 1:
                return
        msg = f"{session_id}: the watermark moved from seq {expected_seq}"
        raise WatermarkMovedError(msg)

    def _copy(self, events: Sequence[EventRow]) -> None:
        if not events:
            return
        source = self.source
        with self.conn.cursor().copy(_COPY_EVENTS) as copy:
            write = copy.write_row
            for row in events:
                if "\\u0000" in row[8]:
                    row = tuple(map(_safe, row))  # noqa: PLW2901 - the safe copy of this row
                write((source, *row))

    def _insert_errors(self, errors: Sequence[ErrorRow]) -> None:
        if errors:
            with self.conn.cursor() as cur:
                cur.executemany(_INSERT_ERROR, [_error_values(self.source, e) for e in errors])

    def close(self) -> None:
        """Close the connection, if one was opened; safe twice."""
        if self._conn is not None:
            self._conn.close()


def sync_to_postgres(
    url: str,
    sessions_dir: str | os.PathLike[str] | None = None,
    *,
    session_id: str | None = None,
    busy_timeout: float = BUSY_TIMEOUT,
    progress: Progress | None = None,
) -> SyncReport:
    """Mirror every session file (or one) into a PostgreSQL database, exactly once.

    The same contract as :func:`sync_to_sqlite`; many machines may sync into
    one database at once. Needs ``pip install 'codex-logging[postgres]'``.

    Example::

        report = sync_to_postgres("postgresql://logs@db.internal/logs")
        print(report.rows_inserted, report.warnings)

    Args:
        url: A ``postgresql://`` URL; libpq's ``PG*`` variables and
            ``~/.pgpass`` fill in what it leaves out.
        sessions_dir: The folder of session files; by default
            ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``.
        session_id: Sync only this session.
        busy_timeout: Seconds to wait for a lock held by another sync.
        progress: Called after each committed batch.

    Returns:
        A :class:`SyncReport`.

    Raises:
        PostgresNotInstalledError: psycopg is not installed.
        InvalidSessionId: ``session_id`` is not a valid id.
        UnknownSessionError: ``session_id`` has no session file.
        DatabaseLockedError: A lock stayed held past ``busy_timeout``.
        DatabaseError: The server cannot be reached or refuses a write.
    """
    folder = sessions_dir_path(sessions_dir)
    target = PostgresTarget(url, folder, busy_timeout)
    try:
        return run_sync(
            target, folder, session_id=session_id, busy_timeout=busy_timeout, progress=progress
        )
    finally:
        target.close()


# -- reads for the command line ----------------------------------------------

_QUERY_COLUMNS: Final = "session_id, seq, ts, kind, level, logger, role, message, data"
#: Level names in rising severity, for ``level`` (this level or worse).
_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@contextmanager
def _reader(url: str) -> Iterator[Any]:
    name = display_url(url)
    conn = connect(url, read_only=True)
    try:
        with _translated(name):
            if not _exists(conn, "session_events"):
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
    level: str | None = None,
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
        level: Only events of this level or a more severe one.
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
    levels = None
    if level is not None:
        name = level.upper()
        levels = list(_LEVELS[_LEVELS.index(name) :]) if name in _LEVELS else [name]
    filters = (
        ("session_id = %s", session_id),
        ("kind = %s", kind),
        ("upper(level) = ANY(%s)", levels),
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
    with _reader(url) as conn, conn.cursor(row_factory=_psycopg().rows.dict_row) as cur:
        if session_id is not None:
            probe = "SELECT 1 FROM session_events WHERE session_id = %s LIMIT 1"
            if cur.execute(probe, (session_id,)).fetchone() is None:
                msg = f"unknown session {session_id} in {display_url(url)}"
                raise UnknownSessionError(msg)
        rows = cur.execute(sql, (*params, tail)).fetchall()
    return list(reversed(rows))


def sessions_postgres(url: str) -> list[dict[str, Any]]:
    """Return one row per session id, every source merged, oldest first.

    Args:
        url: A ``postgresql://`` URL.

    Returns:
        Dicts with the keys session_id, start_ts, end_ts, status and events.

    Raises:
        DatabaseError: The database cannot be read or has no mirror tables.
    """
    with _reader(url) as conn, conn.cursor(row_factory=_psycopg().rows.dict_row) as cur:
        return list(
            cur.execute(
                "SELECT session_id, start_ts, end_ts, status, events"
                " FROM sessions ORDER BY start_ts, session_id"
            ).fetchall()
        )
