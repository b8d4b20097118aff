"""PostgreSQL: the mirror many machines share (``sync_to_postgres``).

``sync_to_postgres`` runs the same engine as ``sync_to_sqlite`` (``_mirror/engine.py``)
over a :class:`PostgresTarget`. Rows are keyed by ``(source_id, session_id,
seq)``: ``source_id`` names one sessions folder, so a CI matrix sharing one
``CODEX_SESSION_ID`` on many hosts lands side by side, each file exactly once.

Each batch is one transaction: a compare-and-set on the watermark of
``(source_id, session_id)`` first, then the rows by ``COPY``. A sync that lost a
race finds the watermark moved, rolls back and says so. The connection, the
schema and its migrations live in ``_postgres/db.py``; the reads of the CLI in
``_postgres/read.py``.

Rows are stored compact (``_mirror/compact.py``): the session once in
``session_keys``, the common fields in columns, the others as JSON text; the
``session_events`` view gives back ``data``, the whole record.

NUL cannot be stored in PostgreSQL text. A record's ``\\u0000`` escape becomes
U+FFFD in the ``kind``/``level``/``logger``/``role``/``message`` columns, and
that field stays in the row's other fields with its escape (JSON escapes NUL,
so the JSON text never holds one): ``data`` gives back the record as written.
A line PostgreSQL text cannot hold goes to quarantine, never altered.
A quarantined line that is not text (bad UTF-8, a raw NUL) is shown in ``raw``
with U+FFFD and kept byte for byte in ``raw_bytes``; the line is
``coalesce(raw_bytes, convert_to(raw, 'UTF8'))``.

psycopg is imported on first use only (``_pg_db.import_psycopg``): a hook
script that only logs never pays for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Final

from codex_logging._mirror import target as _target
from codex_logging._mirror.engine import run_sync
from codex_logging._mirror.lines import ErrorRow, EventRow, split_of
from codex_logging._mirror.target import Progress, SyncReport
from codex_logging._postgres.db import (
    BUSY_TIMEOUT,
    COPY_ROWS,
    COPY_TYPES,
    END_STATUS,
    SUMMARY_BATCH,
    SUMMARY_BATCH_ENDS,
    SUMMARY_BATCH_PIDS,
    connect,
    display_url,
    finite_json,
    import_psycopg,
    migrate,
    schema_version,
    session_key,
    transaction,
    translated,
)
from codex_logging._settings import sessions_dir_path

_INSERT_ROW: Final = (
    "INSERT INTO session_rows (sid, seq, ts, pid, shape, kind, level, logger, role, message,"
    " fields) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_INSERT_ERROR: Final = (
    "INSERT INTO session_ingest_errors"
    " (source_id, session_id, seq, byte_offset, error, raw, raw_bytes)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_MARK_COLUMNS: Final = (
    "seq, byte_offset, head_len, head_sha256, file_dev, file_ino, scanned_to, scan_sha256,"
    " source_dir, tail_sha256, updated_at"
)


def _safe(value: object) -> Any:
    # A record's \u0000 escape parses to NUL, which PostgreSQL text refuses;
    # data keeps the line, so the column shows U+FFFD (module docstring).
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _safe_row(row: EventRow) -> EventRow:
    # Only the parsed columns: data is the line itself, and a line PostgreSQL
    # cannot hold as it is must be refused and quarantined, not altered.
    return (*map(_safe, row[:8]), *row[8:])


def _compact(sid: int, row: EventRow) -> tuple[Any, ...]:
    """Return the ``session_rows`` values of an event row (:data:`COPY_ROWS` order).

    A column the mirror made safe (U+FFFD for a NUL) no longer is the
    record's value, so that field stays in ``fields``, escaped.
    """
    if "\\u0000" in row[8]:  # only an escape parses to NUL
        row = _safe_row(row)
    pid, shape, fields = split_of(row)
    if fields is None:
        if not shape:
            fields = "{}"  # the empty record: data is never NULL
    elif "Infinity" in fields:
        fields = finite_json(fields)
    return (sid, row[1], row[2], pid, shape, row[3], row[4], row[5], row[6], row[7], fields)


def _error_values(source: str, row: ErrorRow) -> tuple[object, ...]:
    # raw is the line as text, or its bytes when they are not UTF-8: kept as
    # text where PostgreSQL can hold it exactly, else shown with U+FFFD and
    # kept byte for byte in raw_bytes (module docstring).
    session, seq, offset, error, raw = row
    exact = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    text = exact.decode("utf-8", "replace")
    if "\x00" not in text and text.encode("utf-8") == exact:
        return (source, session, seq, offset, _safe(error), text, None)
    return (source, session, seq, offset, _safe(error), text.replace("\x00", "\ufffd"), exact)


class PostgresTarget:
    """The engine's database target for PostgreSQL (see ``_mirror/target.py``).

    It connects on first use, so a sync of a missing folder touches no server.

    Args:
        url: The database URL.
        folder: The absolute sessions folder being synced.
        busy_timeout: Seconds to wait for a lock held by another sync.
    """

    #: Batches commit in the engine's worker thread while the next is read:
    #: the server's COPY and fsync overlap the parsing (``_mirror/engine.py``).
    pipelined = True
    #: No parse worker: the server does much of the work, and on the machine
    #: that syncs it needs the other processor (slower with one, measured).
    parse_worker = False

    def __init__(self, url: str, folder: str, busy_timeout: float) -> None:
        self.name = display_url(url)
        self.url = url
        self.folder = folder
        self.busy_timeout = busy_timeout
        self.source = ""
        self._conn: Any = None
        #: ``session_keys`` ids of committed sessions (a key is never deleted).
        self._keys: dict[str, int] = {}
        #: Whether the summary keeps each session's latest end (``END_STATUS``).
        self._ends = True

    @property
    def conn(self) -> Any:
        """The connection, opened, migrated and this folder registered on first use."""
        if self._conn is None:
            import socket  # noqa: PLC0415 - only a sync into PostgreSQL needs it

            host = socket.gethostname()
            conn = connect(self.url, busy_timeout=self.busy_timeout)
            try:
                migrate(conn, self.name, self.busy_timeout)
                with translated(self.name):
                    # A move left for later leaves an older summary (migrate).
                    self._ends = schema_version(conn) >= END_STATUS
                with translated(self.name):
                    # A folder without its id file takes the id its path
                    # last had on this host (docs/scale-out.md).
                    self.source = _target.source_id(
                        self.folder, lambda folder: _earlier_source(conn, host, folder)
                    )
                    now = time.time()
                    conn.execute(
                        "INSERT INTO sources (source_id, host, folder, first_seen, last_seen)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source_id) DO UPDATE SET"
                        " host = excluded.host, folder = excluded.folder,"
                        " last_seen = excluded.last_seen",
                        (self.source, host, self.folder, now, now),
                    )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def open_source(self, folder: str) -> str:
        """Return this folder's id, connecting first (see ``Target.open_source``).

        Args:
            folder: The absolute sessions folder (the one given to the target).

        Returns:
            Its id.
        """
        if folder != self.folder:  # pragma: no cover - the engine passes the target's folder
            msg = f"this target syncs {self.folder}, not {folder}"
            raise ValueError(msg)
        _ = self.conn
        return self.source

    def same_file(
        self, source_id: str, file_dev: int, file_ino: int
    ) -> list[tuple[str, _target.Watermark]]:
        """Return this folder's watermarks of the file ``(dev, ino)`` (see ``Target.same_file``)."""
        conn = self.conn
        with translated(self.name):
            rows = conn.execute(
                f"SELECT session_id, {_MARK_COLUMNS} FROM session_ingest_watermark"  # noqa: S608 - constant
                " WHERE source_id = %s AND file_ino = %s AND file_dev = %s",
                (source_id, file_ino, file_dev),
            ).fetchall()
        return [(row[0], self._watermark(row[1:])) for row in rows]

    def settled_files(self, source_id: str) -> dict[str, _target.SettledRow]:
        """Return the watermarks of this folder with no pending line (see ``_mirror/target.py``).

        Args:
            source_id: The sessions folder's id (the one this target keys its rows by).

        Returns:
            ``session_id`` -> ``(session_id, byte_offset, file_dev, file_ino, updated_at)``.
        """
        conn = self.conn
        with translated(self.name):
            rows = conn.execute(
                "SELECT session_id, byte_offset, coalesce(file_dev, 0), coalesce(file_ino, 0),"
                " coalesce(updated_at, 0.0) FROM session_ingest_watermark"
                " WHERE source_id = %s AND scanned_to <= byte_offset",
                (source_id,),
            ).fetchall()
        return {row[0]: row for row in rows}

    def read_watermark(self, session_id: str) -> _target.Watermark | None:
        """Return the stored watermark of this folder's session, if any."""
        conn = self.conn
        with translated(self.name):
            row = conn.execute(
                f"SELECT {_MARK_COLUMNS} FROM session_ingest_watermark"  # noqa: S608 - constant
                " WHERE source_id = %s AND session_id = %s",
                (self.source, session_id),
            ).fetchone()
        return None if row is None else self._watermark(row)

    def _watermark(self, row: Sequence[Any]) -> _target.Watermark:
        seq, offset, head_len, head, dev, ino, scanned, scan, folder, tail, _at = row
        return _target.Watermark(
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
            tail_sha256=tail,
        )

    def commit(self, batch: _target.Batch) -> int:
        """Store one batch with its watermark in one transaction (see ``Target.commit``).

        Returns:
            The number of event rows inserted.

        Raises:
            WatermarkMovedError: Another sync moved the watermark since it was read.
        """
        psycopg = import_psycopg()
        refused = (psycopg.DataError, psycopg.IntegrityError, UnicodeError)
        with translated(self.name):
            try:
                inserted, sid = self._store(batch, one_by_one=False)
            except refused:
                # The server refused a row: the batch again, row by row, each
                # refused row quarantined with the server's message.
                inserted, sid = self._store(batch, one_by_one=True)
            if batch.events:
                # Committed: the key stays (a rolled-back batch took a new one with it).
                self._keys[batch.session_id] = sid
            return inserted

    def _store(self, batch: _target.Batch, *, one_by_one: bool) -> tuple[int, int]:
        session_id, events = batch.session_id, batch.events
        with transaction(self.conn, self.busy_timeout):
            self._move_watermark(session_id, batch.expected_seq, batch.mark)
            sid = self._key(session_id) if events else 0
            if one_by_one:
                inserted = self._one_by_one(sid, batch)
            else:
                self._copy(sid, events)
                self._insert_errors(batch.errors)
                inserted = len(events)
            self._summarise(session_id, sid, batch.expected_seq, batch.mark.seq, events)
        return inserted, sid

    def _one_by_one(self, sid: int, batch: _target.Batch) -> int:
        psycopg = import_psycopg()
        refused = (psycopg.DataError, psycopg.IntegrityError, UnicodeError)
        conn = self.conn
        inserted = 0
        quarantine: list[ErrorRow] = []
        for row, offset in zip(batch.events, batch.offsets, strict=True):
            try:
                with conn.transaction():
                    conn.execute(_INSERT_ROW, _compact(sid, row))
                inserted += 1
            except refused as exc:
                quarantine.append(_target.rejected_event(row, offset, exc))
        for error in batch.errors:
            try:
                with conn.transaction():
                    self._insert_errors([error])
            except refused as exc:
                quarantine.append(_target.rejected_error(error, exc))
        self._insert_errors(quarantine)
        return inserted

    def _key(self, session_id: str) -> int:
        found = self._keys.get(session_id)
        return session_key(self.conn, self.source, session_id) if found is None else found

    def _move_watermark(self, session_id: str, expected_seq: int, mark: _target.Watermark) -> None:
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
            mark.tail_sha256,
            time.time(),
        )
        cur = self.conn.execute(
            "UPDATE session_ingest_watermark SET seq = %s, byte_offset = %s, head_len = %s,"
            " head_sha256 = %s, file_dev = %s, file_ino = %s, scanned_to = %s,"
            " scan_sha256 = %s, source_dir = %s, tail_sha256 = %s, updated_at = %s"
            " WHERE source_id = %s AND session_id = %s AND seq = %s",
            (*values, self.source, session_id, expected_seq),
        )
        if cur.rowcount == 1:
            return
        if expected_seq == 0:
            cur = self.conn.execute(
                "INSERT INTO session_ingest_watermark"  # noqa: S608 - constant columns
                f" (source_id, session_id, {_MARK_COLUMNS})"
                f" VALUES ({', '.join(['%s'] * 13)}) ON CONFLICT DO NOTHING",
                (self.source, session_id, *values),
            )
            if cur.rowcount == 1:
                return
        msg = f"{session_id}: the watermark moved from seq {expected_seq}"
        raise _target.WatermarkMovedError(msg)

    def _summarise(
        self, session_id: str, sid: int, after: int, upto: int, events: Sequence[EventRow]
    ) -> None:
        # This batch's rows (seq after the old watermark, up to the new one)
        # added to the session's summary, in the batch's transaction.
        if not events:
            return
        params = (self.source, session_id, sid, after, upto)
        if any(row[3] != "message" for row in events):
            self.conn.execute(SUMMARY_BATCH_PIDS, params)
        self.conn.execute(SUMMARY_BATCH_ENDS if self._ends else SUMMARY_BATCH, params)

    def _copy(self, sid: int, events: Sequence[EventRow]) -> None:
        if not events:
            return
        with self.conn.cursor().copy(COPY_ROWS) as copy:
            copy.set_types(COPY_TYPES)
            write = copy.write_row
            for row in events:
                write(_compact(sid, row))

    def _insert_errors(self, errors: Sequence[ErrorRow]) -> None:
        if errors:
            with self.conn.cursor() as cur:
                cur.executemany(_INSERT_ERROR, [_error_values(self.source, e) for e in errors])

    def cancel(self) -> None:
        """Ask the server to cancel the statement the worker thread waits on (thread-safe)."""
        conn = self._conn
        if conn is None:
            return
        try:
            cancel = getattr(conn, "cancel_safe", None) or conn.cancel  # cancel_safe: psycopg 3.2+
            cancel()
        except Exception:  # best effort: the engine waits for the commit anyway
            return

    def close(self) -> None:
        """Close the connection, if one was opened; safe twice."""
        if self._conn is not None:
            self._conn.close()


def _earlier_source(conn: Any, host: str, folder: str) -> str | None:
    """Return the id the sessions folder at ``folder`` on ``host`` last had, if any.

    ``sources`` keeps each id's latest host and path: an id that moved on to
    another path is not taken back.
    """
    row = conn.execute(
        "SELECT source_id FROM sources WHERE folder = %s AND host = %s"
        " ORDER BY last_seen DESC LIMIT 1",
        (folder, host),
    ).fetchone()
    return None if row is None else str(row[0])


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
    one database at once. Needs psycopg 3, the ``postgres`` extra (docs/scale-out.md, "Installing").

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
