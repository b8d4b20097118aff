"""Retiring old sessions: their NDJSON files, and on request their rows.

A session is retired once its last ``end`` record is older than a cutoff. Its
file goes only when every byte of it is in the mirror (the watermark's byte
offset is the file's size, and the file is the one the watermark describes)
and nothing was written to it since the cutoff. The check and the deletion run
under the same ``portalocker`` lock on ``<SESSION_ID>.ndjson`` that the sync
takes, so a sync never reads a file halfway through its removal
(docs/mirror.md, "Retiring old sessions").

This is the rule alone: the database is a :class:`Mirror`, which
:mod:`codex_logging._sqlite.prune` and :mod:`codex_logging._postgres.prune`
implement, and the command line picks one (``_cli.commands``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Final, Protocol

from codex_logging._errors import InvalidFilterError, UnknownSessionError
from codex_logging._mirror.filters import MAX_AGE_DAYS
from codex_logging._mirror.target import Mark
from codex_logging._settings import BUSY_TIMEOUT, SUFFIX, is_valid_session_id

#: A file written to in the last seconds may still have a writer holding it
#: open, whatever the cutoff: such a file is kept.
QUIET_SECONDS: Final = 2.0


class Mirror(Protocol):
    """What prune needs of a mirror database."""

    #: The database, for messages.
    name: str

    def candidates(self) -> list[tuple[str, float, float]]:
        """Return ``(session, last end ts, last ts)`` of every session with an ``end``."""

    def has_session(self, session_id: str) -> bool:
        """Return whether the session has any row."""

    def watermark(self, session_id: str) -> Mark | None:
        """Return the session's watermark (this folder's, in PostgreSQL)."""

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
    retire = _Retire(mirror, report, rows=rows, busy_timeout=busy_timeout)
    fresh = min(report.cutoff, now - QUIET_SECONDS)
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
        retire.session(sid, os.path.join(folder, sid + SUFFIX), fresh)
    if report.rows_deleted and not dry_run:
        mirror.finish()
    return report


class _Retire:
    """Retires one session at a time, each under its file's lock."""

    def __init__(
        self, mirror: Mirror, report: PruneReport, *, rows: bool, busy_timeout: float
    ) -> None:
        self.mirror = mirror
        self.report = report
        self.rows = rows
        self.busy_timeout = busy_timeout

    def session(self, sid: str, path: str, fresh: float) -> None:
        if not os.path.lexists(path):
            # Its file went earlier: only rows are left to retire.
            if self.rows:
                self._retire(sid, None)
            return
        import portalocker  # noqa: PLC0415 - as the sync: not paid on import

        try:
            # The sync's lock: exclusive flock on the session file itself.
            lock = portalocker.Lock(
                path,
                mode="rb",
                timeout=self.busy_timeout,
                check_interval=0.05,
                flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
            )
            with lock as locked:
                reason = self._why_keep(sid, path, os.fstat(locked.fileno()), fresh)
                if reason is None:
                    self._retire(sid, path)
                else:
                    self.report.kept.append((sid, reason))
        except portalocker.LockException:
            self.report.kept.append((sid, f"a sync held its lock for {self.busy_timeout:g} s"))
        except OSError as exc:
            self.report.kept.append((sid, f"cannot read {path}: {exc.strerror or exc}"))

    def _why_keep(self, sid: str, path: str, info: os.stat_result, fresh: float) -> str | None:
        if (info.st_dev, info.st_ino) != _identity(path):
            return "its file changed while being locked"
        mark = self.mirror.watermark(sid)
        if mark is None:
            return "its file was never synced"
        offset, head_len, head_hash, dev, ino = mark
        if offset != info.st_size:
            return f"not fully synced ({offset} of {info.st_size} bytes in the mirror)"
        # The watermark must describe this very file: its (dev, ino) when
        # the sync recorded them, and its first bytes.
        same_inode = not (dev and ino) or (dev, ino) == (info.st_dev, info.st_ino)
        if not same_inode or (head_len and _head_hash(path, head_len) != head_hash):
            return "its file was replaced since its last sync"
        if info.st_mtime >= fresh:
            return "its file was written to after the cutoff"
        return None

    def _retire(self, sid: str, path: str | None) -> None:
        report = self.report
        report.retired.append(sid)
        if report.dry_run:
            return
        if path is not None:
            os.unlink(path)
            report.files_deleted += 1
        if self.rows:
            report.rows_deleted += self.mirror.delete_rows(sid)


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path, follow_symlinks=False)
    return info.st_dev, info.st_ino


def _head_hash(path: str, length: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(length)).hexdigest()
