"""sync_to_sqlite: an exactly-once, incremental mirror of the NDJSON files.

Per session file, under a ``portalocker`` lock on that file: read the
watermark, read complete lines from its byte offset, and insert them in
batches, each batch in one transaction with the watermark (SPEC "SQLite mirror").
Writers never take the lock, so they are never blocked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, Final

from codex_logging._db import BUSY_TIMEOUT, atomic, connect
from codex_logging._errors import CodexLoggingError, UnknownSessionError
from codex_logging._settings import SUFFIX, sessions_dir_path, validate_session_id
from codex_logging._settings import db_path as resolve_db_path

#: Lines per transaction: large enough to be fast, small enough that memory
#: stays flat and a crash loses at most one uncommitted batch of work.
BATCH_LINES: Final = 5000
CHUNK_BYTES: Final = 1 << 20
#: Bytes at the start of a file remembered to notice a replaced file.
HEAD_BYTES: Final = 4096

_LEGACY_KINDS: Final = {"session_start": "start", "session_end": "end"}

_INSERT_EVENT: Final = (
    "INSERT INTO session_events (session_id, seq, ts, kind, level, logger, role, message, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ERROR: Final = (
    "INSERT INTO session_ingest_errors (session_id, seq, byte_offset, error, raw)"
    " VALUES (?, ?, ?, ?, ?)"
)
_UPSERT_WATERMARK: Final = (
    "INSERT INTO session_ingest_watermark"
    " (session_id, seq, byte_offset, head_len, head_sha256, file_dev, file_ino, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET seq = excluded.seq,"
    " byte_offset = excluded.byte_offset, head_len = excluded.head_len,"
    " head_sha256 = excluded.head_sha256, file_dev = excluded.file_dev,"
    " file_ino = excluded.file_ino, updated_at = excluded.updated_at"
)


def _make_loads() -> Callable[[bytes], Any]:
    try:
        import orjson  # noqa: PLC0415 - optional extra, looked up once
    except ImportError:
        return json.loads
    fast = orjson.loads

    def loads(raw: bytes) -> Any:
        try:
            return fast(raw)
        except orjson.JSONDecodeError:
            # Older hooks may write what only Python's json takes (NaN).
            return json.loads(raw)

    return loads


_loads = _make_loads()


@dataclasses.dataclass
class SyncReport:
    """What one :func:`sync_to_sqlite` call did.

    Attributes:
        files: Session files looked at.
        rows_inserted: Rows added to ``session_events``.
        lines_quarantined: Lines added to ``session_ingest_errors``.
        bytes_read: Bytes of complete lines consumed.
        warnings: One line per truncated, replaced, busy or refused file.
        sessions: The sessions that were looked at.
    """

    files: int = 0
    rows_inserted: int = 0
    lines_quarantined: int = 0
    bytes_read: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    sessions: list[str] = dataclasses.field(default_factory=list)


#: Called after each committed batch with (session_id, report so far).
Progress = Callable[[str, SyncReport], None]


def sync_to_sqlite(
    db_path: str | os.PathLike[str] | None = None,
    sessions_dir: str | os.PathLike[str] | None = None,
    *,
    session_id: str | None = None,
    busy_timeout: float = BUSY_TIMEOUT,
    progress: Progress | None = None,
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
            ``.codex/session_logs.db``. Created ``0600`` on first use.
        sessions_dir: The folder of session files; by default
            ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``.
        session_id: Sync only this session.
        busy_timeout: Seconds to wait for a database or file lock held by
            another writer or sync.
        progress: Called after each committed batch.

    Returns:
        A :class:`SyncReport`.

    Raises:
        InvalidSessionId: ``session_id`` is not a valid id.
        UnknownSessionError: ``session_id`` has no session file.
        DatabaseLockedError: The database stayed locked past ``busy_timeout``.
        DatabaseError: The database cannot be opened or written.
    """
    database = resolve_db_path(db_path)
    folder = sessions_dir_path(sessions_dir)
    report = SyncReport()
    if session_id is not None:
        validate_session_id(session_id)
        path = os.path.join(folder, session_id + SUFFIX)
        if not os.path.isfile(path):
            msg = f"unknown session {session_id}: no file {path}"
            raise UnknownSessionError(msg)
        targets = [(session_id, path)]
    else:
        targets = list(_session_files(folder))
    with contextlib.closing(connect(database, busy_timeout=busy_timeout)) as conn:
        run = _Run(conn, database, report, busy_timeout, progress)
        for sid, path in targets:
            report.files += 1
            report.sessions.append(sid)
            _FileSync(run, sid, path).run()
    return report


def _session_files(folder: str) -> Iterator[tuple[str, str]]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.endswith(SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        sid = entry.name[: -len(SUFFIX)]
        with contextlib.suppress(ValueError):
            yield validate_session_id(sid), entry.path


class _WatermarkMovedError(Exception):
    """Another sync advanced this session's watermark under our feet."""


@dataclasses.dataclass
class _Run:
    """What every file of one sync call shares."""

    conn: sqlite3.Connection
    database: str
    report: SyncReport
    busy_timeout: float
    progress: Progress | None


class _FileSync:
    """The ingestion of one session file, under its lock."""

    def __init__(self, run: _Run, sid: str, path: str) -> None:
        self.conn = run.conn
        self.database = run.database
        self.report = run.report
        self.busy_timeout = run.busy_timeout
        self.progress = run.progress
        self.sid = sid
        self.path = path
        self.committed = 0  # the byte offset the watermark holds now
        self.head_len = 0
        self.head_hash: str | None = None
        self.identity = (0, 0)
        self.reset = False  # the file was truncated or replaced: store the new start
        self.stored_seq = 0  # the watermark's seq as this sync last saw or wrote it
        self.events: list[tuple[Any, ...]] = []
        self.errors: list[tuple[Any, ...]] = []

    def run(self) -> None:
        # Imported here: it costs ~20 ms, which every short-lived process that
        # only logs (a hook script) would pay on import otherwise.
        import portalocker  # noqa: PLC0415

        try:
            # flock, not lockf: it excludes other threads of this process too.
            lock = portalocker.Lock(
                self.path,
                mode="rb",
                timeout=self.busy_timeout,
                check_interval=0.05,
                flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
            )
            with lock as locked:
                self._ingest(locked.fileno())
        except _WatermarkMovedError:
            self.report.warnings.append(
                f"{self.sid}: stopped, another sync moved its watermark (the file was rotated?)"
            )
        except portalocker.LockException:
            self.report.warnings.append(
                f"{self.sid}: skipped, another sync held its lock for {self.busy_timeout:g} s"
            )
        except CodexLoggingError:
            raise
        except OSError as exc:
            self.report.warnings.append(
                f"{self.sid}: skipped, cannot read {self.path}: {exc.strerror or exc}"
            )

    def _ingest(self, lock_fd: int) -> None:
        # The watermark is read under the file lock (SPEC): no other sync can
        # move it until this one is done with the file.
        row = self.conn.execute(
            "SELECT seq, byte_offset, head_len, head_sha256"
            " FROM session_ingest_watermark WHERE session_id = ?",
            (self.sid,),
        ).fetchone()
        seq, offset, self.head_len, self.head_hash = row or (0, 0, 0, None)
        self.stored_seq = seq
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=0) as f:
            info = os.fstat(fd)
            lock_info = os.fstat(lock_fd)
            if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
                lock_info.st_dev,
                lock_info.st_ino,
            ):
                self.report.warnings.append(
                    f"{self.sid}: skipped, {self.path} changed while being locked"
                )
                return
            size = info.st_size
            if offset > size:
                self.report.warnings.append(
                    f"{self.sid}: file shrank from {offset} to {size} bytes (truncated);"
                    f" its lines are taken again from seq {seq + 1}"
                )
                offset, self.head_len, self.head_hash, self.reset = 0, 0, None, True
            elif self.head_len and _head_hash(f, self.head_len) != self.head_hash:
                self.report.warnings.append(
                    f"{self.sid}: file was replaced (its first bytes differ);"
                    f" its lines are taken again from seq {seq + 1}"
                )
                offset, self.head_len, self.head_hash, self.reset = 0, 0, None, True
            self.committed = offset
            self._read_from(f, seq, offset, size)

    def _read_from(self, f: Any, seq: int, offset: int, size: int) -> None:
        f.seek(offset)
        pending = b""
        pos = offset  # file offset of the first byte of `pending`
        while pos + len(pending) < size:
            chunk = f.read(CHUNK_BYTES)
            if not chunk:
                break
            pending += chunk
            start = 0
            while True:
                end = pending.find(b"\n", start)
                if end < 0:
                    break
                seq += 1
                self._take(seq, pos + start, pending[start:end])
                start = end + 1
                if len(self.events) + len(self.errors) >= BATCH_LINES:
                    self._commit(f, seq, pos + start)
            pending = pending[start:]
            pos += start
        if self.events or self.errors or self.reset:
            self._commit(f, seq, pos)

    def _take(self, seq: int, offset: int, raw: bytes) -> None:
        """Queue line ``seq`` as an event, an error, or a torn fragment and its event."""
        try:
            obj = _loads(raw)
            if not isinstance(obj, dict):
                msg = f"not a JSON object but {type(obj).__name__}"
                raise TypeError(msg)  # noqa: TRY301 - one path for every bad line
            text = raw.decode("utf-8")
            fields: tuple[object, ...] = (
                obj.get("level"),
                obj.get("logger"),
                obj.get("role"),
                obj.get("message"),
            )
            if b"\\u" in raw:
                # An escaped lone surrogate (\ud800) parses, but SQLite text
                # cannot hold it: such columns get U+FFFD; data keeps the line.
                fields = tuple(_scrub(value) for value in fields)
        except (ValueError, TypeError, RecursionError) as exc:
            cut = _glued_record(raw)
            if cut is not None:
                # A writer died mid-record and another appended after it: the
                # torn fragment is quarantined and the record glued to it is
                # taken as the event, both under this line's seq (SPEC: seq
                # is the line number).
                self.errors.append((self.sid, seq, offset, "torn record", _raw_value(raw[:cut])))
                self._take(seq, offset + cut, raw[cut:])
                return
            self.errors.append(
                (self.sid, seq, offset, f"{type(exc).__name__}: {exc}", _raw_value(raw))
            )
            return
        self.events.append(
            (
                self.sid,
                seq,
                _ts(obj.get("ts")),
                _kind(obj),
                *(_text(value) for value in fields),
                text,
            )
        )

    def _commit(self, f: Any, seq: int, offset: int) -> None:
        if self.head_len < HEAD_BYTES and offset > self.head_len:
            self.head_len = min(HEAD_BYTES, offset)
            here = f.tell()
            self.head_hash = _head_hash(f, self.head_len)
            f.seek(here)
        with atomic(self.conn, self.database, self.busy_timeout):
            # Compare and set: if the watermark moved since this sync read it
            # (another sync got a lock on a new file at the same path, after a
            # rotation), this batch is dropped rather than duplicated.
            row = self.conn.execute(
                "SELECT seq FROM session_ingest_watermark WHERE session_id = ?", (self.sid,)
            ).fetchone()
            if (row[0] if row else 0) != self.stored_seq:
                raise _WatermarkMovedError
            if self.events:
                self.conn.executemany(_INSERT_EVENT, self.events)
            if self.errors:
                self.conn.executemany(_INSERT_ERROR, self.errors)
            self.conn.execute(
                _UPSERT_WATERMARK,
                (self.sid, seq, offset, self.head_len, self.head_hash, *self.identity, time.time()),
            )
        self.stored_seq = seq
        report = self.report
        report.bytes_read += offset - self.committed
        self.committed = offset
        report.rows_inserted += len(self.events)
        report.lines_quarantined += len(self.errors)
        self.events.clear()
        self.errors.clear()
        if self.progress is not None:
            self.progress(self.sid, report)


_GLUE_ATTEMPTS: Final = 16


def _glued_record(raw: bytes) -> int | None:
    """Return where a whole JSON object starts after a torn fragment, if it does."""
    start = raw.find(b'{"', 1)
    for _ in range(_GLUE_ATTEMPTS):
        if start < 0:
            return None
        try:
            if isinstance(_loads(raw[start:]), dict):
                return start
        except (ValueError, RecursionError):
            pass
        start = raw.find(b'{"', start + 1)
    return None


def _head_hash(f: Any, length: int) -> str:
    f.seek(0)
    return hashlib.sha256(f.read(length)).hexdigest()


def _raw_value(raw: bytes) -> str | bytes:
    # Text when it is UTF-8, so it reads naturally; the exact bytes otherwise.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _ts(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        # Older hooks: ISO 8601, "Z" or an offset; no offset means UTC.
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return None


def _kind(obj: dict[str, Any]) -> str:
    kind = obj.get("kind")
    if isinstance(kind, str):
        return kind
    legacy = obj.get("type")
    if isinstance(legacy, str) and legacy in _LEGACY_KINDS:
        return _LEGACY_KINDS[legacy]
    return "message"


def _scrub(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
