"""Retiring old sessions: their NDJSON files, and on request their rows.

A session is retired once its last ``end`` record is older than a cutoff. Its
file goes only when every byte of it is in the mirror (the watermark's byte
offset is the file's size, and the file is the one the watermark describes),
its rows read back intact (every line of the file has its row, with the same
seq, time and kind: see :meth:`_Retire._read_back`), and nothing was written to
it since the cutoff. These checks run under the same ``portalocker`` lock on
``<SESSION_ID>.ndjson`` that the sync takes, so a sync never reads a file
halfway through its removal (docs/mirror.md, "Retiring old sessions").

Writers take no lock, so a file that passed is not unlinked at once: it is
renamed aside (``.<SESSION_ID>.ndjson.retiring-<SIZE>``, a name the sync and
the writers never use), and only after :data:`ASIDE_SECONDS` (by then every
writer has looked at the path again and opened a new file there) is it
unlinked, if it still has the size that was checked. Lines a writer appended
meanwhile are put back at the path for the next sync (docs/guarantees.md,
"Prune and writers"). A prune killed halfway leaves such a file, which the
next prune finishes the same way.

This is the rule alone: the database is a :class:`Mirror`, which
:mod:`codex_logging._sqlite.prune` and :mod:`codex_logging._postgres.prune`
implement, and the command line picks one (``_cli.commands``).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final, Protocol

from codex_logging._errors import CodexLoggingError, InvalidFilterError, UnknownSessionError
from codex_logging._mirror.filters import MAX_AGE_DAYS
from codex_logging._mirror.lines import ErrorRow, EventRow, LineParser
from codex_logging._mirror.target import Mark
from codex_logging._settings import BUSY_TIMEOUT, SUFFIX, is_valid_session_id

#: A file written to in the last seconds may still have a writer holding it
#: open, whatever the cutoff: such a file is kept.
QUIET_SECONDS: Final = 2.0
#: How long a file stays renamed aside before it is unlinked: twice the time a
#: writer trusts a cached descriptor before it looks at the path again
#: (``RECHECK_SECONDS`` in ``_write/writer.py``; a test keeps them in step).
ASIDE_SECONDS: Final = 1.0
#: Files set aside before the wait: the lock of each stays open meanwhile.
ASIDE_BATCH: Final = 128
#: The name of a file set aside: the session, the size that was checked.
ASIDE_NAME: Final = re.compile(r"\.(?P<sid>.+)\.ndjson\.retiring-(?P<size>[0-9]+)")
_READ_BYTES: Final = 1 << 20


class Mirror(Protocol):
    """What prune needs of a mirror database."""

    #: The database, for messages.
    name: str

    def check(self) -> None:
        """Check the database as a whole before any file goes; raise if it is damaged."""

    def candidates(self) -> list[tuple[str, float, float]]:
        """Return ``(session, last end ts, last ts)`` of every session with an ``end``."""

    def has_session(self, session_id: str) -> bool:
        """Return whether the session has any row."""

    def watermark(self, session_id: str) -> Mark | None:
        """Return the session's watermark (this folder's, in PostgreSQL)."""

    def event_keys(
        self, session_id: str, first: int, last: int
    ) -> Iterable[tuple[int, float | None, str | None]]:
        """Yield ``(seq, ts, kind)`` of the events ``first..last`` in order; read every column."""

    def error_keys(self, session_id: str, first: int, last: int) -> Iterable[tuple[int, int]]:
        """Yield ``(seq, byte_offset)`` of the quarantined lines ``first..last`` in order."""

    def delete_rows(self, session_id: str) -> int:
        """Delete the session's rows, quarantined lines and watermark; return the rows."""

    def finish(self) -> None:
        """Give the space back after rows were deleted."""

    def close(self) -> None:
        """Close the connection."""


@dataclasses.dataclass
class PruneReport:
    """What one :func:`prune` call did, or would do with ``dry_run``.

    Attributes:
        cutoff: Sessions that ended before this moment (Unix seconds) were looked at.
        retired: Sessions whose file (and with ``rows``, rows) went, or would go.
        kept: ``(session, reason)`` for each old session that had to stay.
        files_deleted: Session files deleted.
        rows_deleted: Rows deleted from ``session_events``.
        dry_run: Nothing was deleted.
    """

    cutoff: float
    retired: list[str] = dataclasses.field(default_factory=list)
    kept: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    files_deleted: int = 0
    rows_deleted: int = 0
    dry_run: bool = False


#: Why a session named to prune, whose rows hold no ``end`` record, stays.
NO_END: Final = (
    "no end record of it is here (still running, its processes were killed, or it"
    " ended in another folder's file): a session without one is never retired"
)


def prune(
    mirror: Mirror,
    folder: str,
    *,
    older_than: float,
    rows: bool = False,
    dry_run: bool = False,
    session_id: str | None = None,
    busy_timeout: float = BUSY_TIMEOUT,
) -> PruneReport:
    """Retire the sessions that ended more than ``older_than`` seconds ago.

    By default only their NDJSON files are deleted, and only files whose every
    byte is in the mirror: the rows stay. ``rows=True`` also deletes their rows,
    quarantined lines and watermarks, then gives the space back. A file not
    fully synced, replaced since its sync, or written to since the cutoff is kept.

    Args:
        mirror: The database, opened read-only for ``dry_run``; the caller closes it.
        folder: The folder of session files.
        older_than: Seconds: sessions whose last ``end`` is older are retired;
            0 retires every session that has ended.
        rows: Also delete the sessions' rows and watermarks.
        dry_run: Report what would go, delete nothing.
        session_id: Only this session.
        busy_timeout: Seconds to wait for a sync holding a file's lock.

    Returns:
        A :class:`PruneReport`.

    Raises:
        InvalidFilterError: ``older_than`` is negative or over 100 years.
        UnknownSessionError: ``session_id`` has no events.
        DatabaseError: The database cannot be used.
    """
    if not 0 <= older_than <= MAX_AGE_DAYS * 86400:  # also NaN
        msg = (
            f"older_than must be 0 to {MAX_AGE_DAYS * 86400} seconds ({MAX_AGE_DAYS} days),"
            f" not {older_than!r}"
        )
        raise InvalidFilterError(msg)
    now = time.time()
    report = PruneReport(cutoff=now - older_than, dry_run=dry_run)
    candidates = mirror.candidates()
    if session_id is not None:
        if not mirror.has_session(session_id):
            msg = f"unknown session {session_id} in {mirror.name}"
            raise UnknownSessionError(msg)
        candidates = [row for row in candidates if row[0] == session_id]
        if not candidates:  # named, and not retired: say why
            report.kept.append((session_id, NO_END))
    # The database as a whole first (SQLite's quick_check): a damaged mirror
    # raises here, before any file is touched.
    mirror.check()
    retire = _Retire(mirror, report, rows=rows, busy_timeout=busy_timeout)
    retire.run(candidates, folder, min(report.cutoff, now - QUIET_SECONDS))
    if report.rows_deleted and not dry_run:
        mirror.finish()
    return report


@dataclasses.dataclass
class _Aside:
    """A file renamed aside, still locked, waiting to be unlinked."""

    sid: str
    path: str
    aside: str
    lock: Any
    size: int
    dev: int
    ino: int


class _Retire:
    """Retires sessions, each checked under its file's lock, then set aside."""

    def __init__(
        self, mirror: Mirror, report: PruneReport, *, rows: bool, busy_timeout: float
    ) -> None:
        self.mirror = mirror
        self.report = report
        self.rows = rows
        self.busy_timeout = busy_timeout
        self.parser = LineParser()
        self.pending: list[_Aside] = []
        self.set_aside_at = 0.0

    def run(self, candidates: list[tuple[str, float, float]], folder: str, fresh: float) -> None:
        """Retire the ``(session, end ts, last ts)`` that ended before the cutoff."""
        report = self.report
        try:
            if not report.dry_run:
                self.recover(folder)
            for sid, end_ts, last_ts in candidates:
                if end_ts >= report.cutoff:
                    continue
                if not is_valid_session_id(sid):
                    # Never a path built from a name the sync would not have made.
                    report.kept.append((sid, "not a valid session id"))
                    continue
                if last_ts >= report.cutoff:
                    report.kept.append((sid, "it has events after the cutoff"))
                    continue
                path = os.path.join(folder, sid + SUFFIX)
                if os.path.lexists(path):
                    self.session(sid, path, fresh)
                elif self.rows:  # its file went earlier: only rows are left to retire
                    report.retired.append(sid)
                    if not report.dry_run:
                        report.rows_deleted += self.mirror.delete_rows(sid)
        except BaseException:
            # Files set aside passed every check: they are finished even when a
            # later session failed (their rows are then left for the next prune).
            self.settle(rows=False)
            raise
        self.settle(rows=self.rows)

    def session(self, sid: str, path: str, fresh: float) -> None:
        """Check one session's file under its lock; set it aside if it may go."""
        lock = self._lock(sid, path)
        if lock is None:
            return
        fd = lock.fh.fileno()
        handed_on = False
        try:
            info = os.fstat(fd)
            reason = self._why_keep(sid, path, fd, info, fresh)
            if reason is not None:
                self.report.kept.append((sid, reason))
            elif self.report.dry_run:
                self.report.retired.append(sid)
            else:
                self._set_aside(_Aside(sid, path, "", lock, info.st_size, info.st_dev, info.st_ino))
                handed_on = True
        except CodexLoggingError:
            raise  # the database failed: said once, by the caller
        except OSError as exc:
            self.report.kept.append((sid, f"cannot read {path}: {exc.strerror or exc}"))
        finally:
            if not handed_on:
                lock.release()
        if len(self.pending) >= ASIDE_BATCH:
            self.settle(rows=self.rows)

    def _lock(self, sid: str, path: str) -> Any:
        """Take the sync's lock (an exclusive flock on the file itself), or say why not."""
        import portalocker  # noqa: PLC0415 - as the sync: not paid on import

        try:
            lock = portalocker.Lock(
                path,
                mode="rb",
                timeout=self.busy_timeout,
                check_interval=0.05,
                flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
            )
            lock.acquire()
        except portalocker.LockException:
            self.report.kept.append((sid, f"a sync held its lock for {self.busy_timeout:g} s"))
            return None
        except OSError as exc:
            self.report.kept.append((sid, f"cannot read {path}: {exc.strerror or exc}"))
            return None
        return lock

    def _why_keep(
        self, sid: str, path: str, fd: int, info: os.stat_result, fresh: float
    ) -> str | None:
        if (info.st_dev, info.st_ino) != _identity(path):
            return "its file changed while being locked"
        mark = self.mirror.watermark(sid)
        if mark is None:
            return "its file was never synced"
        offset, head_len, head_hash, dev, ino, seq = mark
        if offset != info.st_size:
            return f"not fully synced ({offset} of {info.st_size} bytes in the mirror)"
        # The watermark must describe this very file: its (dev, ino) when
        # the sync recorded them, and its first bytes.
        same_inode = not (dev and ino) or (dev, ino) == (info.st_dev, info.st_ino)
        if not same_inode or (head_len and _head_hash(fd, head_len) != head_hash):
            return "its file was replaced since its last sync"
        if info.st_mtime >= fresh:
            return "its file was written to after the cutoff"
        return self._read_back(sid, fd, offset, seq)

    def _read_back(self, sid: str, fd: int, size: int, last: int) -> str | None:
        """Return why the session's rows do not match its file, or None.

        The file's lines are parsed as the sync parses them; the mirror reads
        back every row of the same lines (the last ones of the session: a file
        the sync found replaced went on from the seq it had reached). Their
        count and a hash of each line's ``(seq, ts, kind)`` (of its event) and
        ``(seq, byte offset)`` (of a quarantined line) must be equal: values
        that redaction may change are read, not compared.
        """
        lines, events, errors, file_events, file_errors = self._file_digest(sid, fd, size)
        first = last - lines + 1
        if first < 1:
            return f"its rows do not match its file ({lines} lines, the mirror has {last})"
        db_events, db_errors = _Digest(first), _Digest(first)
        for seq, ts, kind in self.mirror.event_keys(sid, first, last):
            db_events.event(seq, ts, kind)
        for seq, offset in self.mirror.error_keys(sid, first, last):
            db_errors.error(seq, offset)
        if (db_events.count, db_errors.count) != (file_events.count, file_errors.count) or (
            db_events.digest() != file_events.digest() or db_errors.digest() != file_errors.digest()
        ):
            return (
                f"its rows in {self.mirror.name} do not match its file: read back"
                f" {db_events.count} events and {db_errors.count} quarantined lines of"
                f" {events} and {errors}"
            )
        return None

    def _file_digest(self, sid: str, fd: int, size: int) -> tuple[int, int, int, _Digest, _Digest]:
        parser = self.parser
        file_events, file_errors = _Digest(1), _Digest(1)
        rows: list[EventRow] = []
        bad: list[ErrorRow] = []
        seq = 0
        for offset, raw in _lines(fd, size):
            seq += 1
            parser.take(sid, seq, offset, raw, rows, bad)
            for row in rows:
                file_events.event(row[1], row[2], row[3])
            for error in bad:
                file_errors.error(error[1], error[2])
            rows.clear()
            bad.clear()
            parser.begin()  # no redaction is due: only seq, ts and kind are compared
        return seq, file_events.count, file_errors.count, file_events, file_errors

    def _set_aside(self, entry: _Aside) -> None:
        folder, name = os.path.split(entry.path)
        entry.aside = os.path.join(folder, f".{name}.retiring-{entry.size}")
        os.rename(entry.path, entry.aside)
        self.pending.append(entry)
        self.set_aside_at = time.monotonic()

    def settle(self, *, rows: bool) -> None:
        """Unlink the files set aside once no writer can still be appending to them.

        Interrupted during the wait, they stay aside, unlocked: the next prune
        finishes them.
        """
        pending, self.pending = self.pending, []
        try:
            while (left := self.set_aside_at + ASIDE_SECONDS - time.monotonic()) > 0:
                time.sleep(left)
        except BaseException:
            for entry in pending:
                entry.lock.release()
            raise
        for index, entry in enumerate(pending):
            try:
                self._finish(entry, rows=rows)
            except BaseException:
                for later in pending[index + 1 :]:
                    later.lock.release()  # left aside: the next prune finishes them
                raise

    def _finish(self, entry: _Aside, *, rows: bool) -> None:
        report = self.report
        try:
            grew = _put_back(entry.aside, entry.path, entry.size, entry.dev, entry.ino)
        except OSError as exc:
            report.kept.append((entry.sid, f"cannot finish {entry.aside}: {exc.strerror or exc}"))
            return
        finally:
            entry.lock.release()
        if grew:
            why = f"{grew} bytes were appended while it was retired: put back at {entry.path}"
            report.kept.append((entry.sid, why + " for the next sync"))
            return
        report.retired.append(entry.sid)
        report.files_deleted += 1
        if rows:
            report.rows_deleted += self.mirror.delete_rows(entry.sid)

    def recover(self, folder: str) -> None:
        """Finish the files an earlier prune set aside and did not unlink (it was killed)."""
        import portalocker  # noqa: PLC0415 - as the sync: not paid on import

        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            found = ASIDE_NAME.fullmatch(name)
            if found is None or not is_valid_session_id(found["sid"]):
                continue
            aside = os.path.join(folder, name)
            path = os.path.join(folder, found["sid"] + SUFFIX)
            try:
                lock = portalocker.Lock(
                    aside,
                    mode="rb",
                    flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
                    fail_when_locked=True,  # not portalocker's 5 s of retries
                )
                locked = lock.acquire()
            except (portalocker.LockException, OSError):
                continue  # another prune is finishing it
            try:
                info = os.fstat(locked.fileno())
                if time.time() - info.st_ctime < ASIDE_SECONDS:
                    continue  # just set aside: a prune running now finishes it
                _put_back(aside, path, int(found["size"]), info.st_dev, info.st_ino)
            except OSError as exc:
                self.report.kept.append(
                    (found["sid"], f"cannot finish {aside}: {exc.strerror or exc}")
                )
            finally:
                lock.release()


def _put_back(aside: str, path: str, size: int, dev: int, ino: int) -> int:
    """Unlink ``aside``; if it grew past ``size``, put it back at ``path`` first.

    Back under its name when nothing is at ``path``; else what was written
    past ``size`` is appended to the file a writer made there.

    Returns:
        The bytes put back (0: the file still had the size that was checked).
    """
    if _identity(aside) != (dev, ino):
        msg = f"{aside} is no longer the file that was set aside"
        raise OSError(errno.ESTALE, msg)
    with open(aside, "rb") as f:
        f.seek(size)
        extra = f.read()
    if extra and _rename_back(aside, path):
        # Nothing was made at the path meanwhile: the whole file is back under
        # its name, its inode unchanged, so a writer that still holds it and
        # the sync (which goes on from its watermark) both see the same file.
        return len(extra)
    if extra:
        if not extra.endswith(b"\n"):
            extra += b"\n"  # a writer's fragment stands alone, as the writer ends its own
        # As a writer would: appended whole to the file now at the path, or
        # a new one (the sync takes it as a replaced file, from the next seq).
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(extra)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    os.unlink(aside)
    return len(extra)


#: ``renameat2`` flags and its "current folder" descriptor (Linux).
_RENAME_NOREPLACE: Final = 1
_AT_FDCWD: Final = -100


def _rename_back(aside: str, path: str) -> bool:
    """Rename ``aside`` to ``path`` unless something is at ``path``; False when not done.

    A plain rename would replace a file a writer made at the path meanwhile;
    Linux's ``renameat2(RENAME_NOREPLACE)`` does it only if the name is free,
    in one step. Where it is missing the caller copies the new lines instead.
    """
    import ctypes  # noqa: PLC0415 - rare: only when a file grew while set aside

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(aside), _AT_FDCWD, os.fsencode(path), _RENAME_NOREPLACE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in {errno.EEXIST, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}:
        return False
    raise OSError(code, os.strerror(code), aside)


class _Digest:
    """A count and a hash of line keys, seqs taken from ``first``."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.count = 0
        self.last_seq = 0
        self.hash = hashlib.sha256()

    def event(self, seq: int, ts: float | None, kind: str | None) -> None:
        self.count += 1
        self.hash.update(f"{seq - self.first}\t{ts!r}\t{kind}\n".encode())

    def error(self, seq: int, offset: int) -> None:
        # One per line: a line can leave two (a torn fragment, then the record
        # after it failing), and SQLite keeps one row per seq.
        if seq == self.last_seq:
            return
        self.last_seq = seq
        self.count += 1
        self.hash.update(f"{seq - self.first}\t{offset}\n".encode())

    def digest(self) -> bytes:
        return self.hash.digest()


def _lines(fd: int, size: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, line)`` of the complete lines in the first ``size`` bytes."""
    pos = 0
    line_start = 0
    pieces: list[bytes] = []  # a line longer than a chunk, joined once its end is read
    while pos < size:
        chunk = os.pread(fd, min(_READ_BYTES, size - pos), pos)
        if not chunk:
            break
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if pieces:
                pieces.append(chunk[start:end])
                line = b"".join(pieces)
                pieces = []
            else:
                line = chunk[start:end]
            yield line_start, line
            start = end + 1
            line_start = pos + start
        if start < len(chunk):
            pieces.append(chunk[start:])
        pos += len(chunk)


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path, follow_symlinks=False)
    return info.st_dev, info.st_ino


def _head_hash(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()
