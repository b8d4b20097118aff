"""What the sync engine and a database target share.

The watermark, the target's methods, the report, and the id of a sessions folder.

The engine (``_mirror/engine.py``) reads files and talks to a database only through a
:class:`Target`: ``_sqlite/sync.py`` implements it for SQLite, ``_postgres/sync.py``
for PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from codex_logging._errors import SourceIdError
from codex_logging._mirror.lines import ErrorRow, EventRow
from codex_logging._settings import ENV_SOURCE_ID

#: The file, inside a sessions folder, that holds the folder's id.
SOURCE_ID_FILE: Final = ".codex-source-id"


#: A settled watermark for the idle check (see :meth:`Target.settled_files`):
#: ``(session_id, byte_offset, file_dev, file_ino, updated_at)``.
SettledRow = tuple[str, int, int, int, float]


#: What prune compares with a session file: ``(byte_offset, head_len,
#: head_sha256, file_dev, file_ino, seq)`` of its :class:`Watermark`.
Mark = tuple[int, int, "str | None", "int | None", "int | None", int]


@dataclasses.dataclass
class Watermark:
    """Where the sync of one session file stands.

    Attributes:
        seq: The last seq taken (good or quarantined).
        byte_offset: The end of the last complete line taken.
        head_len: How many first bytes of the file ``head_sha256`` covers.
        head_sha256: Their hash, to notice a replaced file.
        file_dev: The file's ``st_dev`` (0: not known).
        file_ino: The file's ``st_ino`` (0: not known).
        source_id: The sessions folder this watermark belongs to (None: not known).
        scanned_to: Bytes looked at: no line end lies in
            ``[byte_offset, scanned_to)``, so a pending partial line is not
            read again (0: not known).
        source_dir: The path of that folder when it was last synced, for messages.
        scan_sha256: The hash of the last (up to 4 KiB) bytes before
            ``scanned_to``: if they changed, the pending line is scanned again.
        tail_sha256: The hash of the last (up to 4 KiB) bytes before
            ``byte_offset``: with ``head_sha256`` it tells the same content
            under a new inode (a restored or moved file) from another file.
    """

    seq: int = 0
    byte_offset: int = 0
    head_len: int = 0
    head_sha256: str | None = None
    file_dev: int = 0
    file_ino: int = 0
    source_id: str | None = None
    scanned_to: int = 0
    source_dir: str | None = None
    scan_sha256: str | None = None
    tail_sha256: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Watermark:
        """Return the watermark of a database row holding :data:`WATERMARK_FIELDS` in order."""
        seq, offset, head_len, head, dev, ino, source, scanned, folder, scan_hash, tail = row
        return cls(
            seq=int(seq),  # type: ignore[call-overload]
            byte_offset=int(offset),  # type: ignore[call-overload]
            head_len=int(head_len or 0),  # type: ignore[call-overload]
            head_sha256=head,  # type: ignore[arg-type]
            file_dev=int(dev or 0),  # type: ignore[call-overload]
            file_ino=int(ino or 0),  # type: ignore[call-overload]
            source_id=source,  # type: ignore[arg-type]
            scanned_to=int(scanned or 0),  # type: ignore[call-overload]
            source_dir=folder,  # type: ignore[arg-type]
            scan_sha256=scan_hash,  # type: ignore[arg-type]
            tail_sha256=tail,  # type: ignore[arg-type]
        )


#: A watermark's fields in order: the columns a table that stores them holds.
WATERMARK_FIELDS: Final = tuple(field.name for field in dataclasses.fields(Watermark))


@dataclasses.dataclass(frozen=True)
class Batch:
    """What :meth:`Target.commit` stores: the next lines of one session file.

    Attributes:
        session_id: The session.
        expected_seq: The seq the stored watermark must still hold.
        events: Event rows.
        errors: Quarantine rows.
        mark: The new watermark.
        offsets: The byte offset of each event's line: ``offsets[i]`` is
            ``events[i]``'s.
    """

    session_id: str
    expected_seq: int
    events: Sequence[EventRow]
    errors: Sequence[ErrorRow]
    mark: Watermark
    offsets: Sequence[int]


class Target(Protocol):
    """A database the engine syncs into; only these methods touch it."""

    #: For messages: the database path, or the URL without its password.
    name: str
    #: True if :meth:`commit` may run in a worker thread while the engine reads
    #: the next batch (one batch in flight at a time, never two at once).
    pipelined: bool
    #: True if a large sync may parse in a second process while this target
    #: commits (``_mirror/parse_worker.py``): a target whose commits are this
    #: process's own work. Rows from the worker carry their compact values and
    #: no parsed record.
    parse_worker: bool

    def settled_files(self, source_id: str) -> Mapping[str, SettledRow]:
        """Return the settled watermarks of folder ``source_id``, by session id.

        One query, for the idle check: the watermarks of the folder with no
        pending partial line (``scanned_to <= byte_offset``), each as its row
        ``(session_id, byte_offset, file_dev, file_ino, updated_at)`` (NULLs
        as 0; ``updated_at`` is when a sync last committed it). A file whose
        size, ``st_dev`` and ``st_ino`` match its row, and whose mtime is
        older than that commit by a margin, is skipped without being opened.
        """

    def open_source(self, folder: str) -> str:
        """Return the id of the sessions folder ``folder`` (see :func:`source_id`).

        Called once per sync, before anything else: a folder without its id
        file takes the id this database last recorded for its path.
        """

    def read_watermark(self, session_id: str) -> Watermark | None:
        """Return one session's watermark; called under the file's lock."""

    def same_file(
        self, source_id: str, file_dev: int, file_ino: int
    ) -> list[tuple[str, Watermark]]:
        """Return the watermarks of folder ``source_id`` that describe the file ``(dev, ino)``.

        Called under that file's lock when a file's name has no watermark of
        its own, or one of another file: a renamed or moved file is found by
        its identity.

        Args:
            source_id: The sessions folder's id.
            file_dev: The file's ``st_dev``.
            file_ino: The file's ``st_ino``.

        Returns:
            ``(session_id, watermark)`` pairs.
        """

    def commit(self, batch: Batch) -> int:
        """Insert a batch and move the watermark to ``batch.mark``, in one transaction.

        Compare and set: when the stored seq is not ``batch.expected_seq``, raise
        :class:`WatermarkMovedError` and insert nothing. A row the database
        rejects does not fail the batch: rows are retried one by one and the
        culprit is quarantined with :func:`rejected_event` /
        :func:`rejected_error`.

        Returns:
            The number of event rows inserted.
        """

    def cancel(self) -> None:
        """Ask the database to stop the batch :meth:`commit` runs in another thread.

        Called from the engine's thread when a pipelined sync is interrupted;
        the commit then fails or ends, and the engine waits for it.
        """

    def close(self) -> None:
        """Release the connection; safe to call when never connected."""


class WatermarkMovedError(Exception):
    """Another sync advanced this session's watermark under our feet."""


class BatchRefusedError(Exception):
    """The target refused a batch for good: its file stops there, its watermark unmoved.

    The engine reports the message and goes on with the next file; the next
    sync tries the batch again.
    """


class ForeignSourceError(Exception):
    """The session's watermark belongs to another sessions folder."""


def rejected_event(event: EventRow, offset: int, exc: BaseException) -> ErrorRow:
    """Return the quarantine row for an event row the database refused.

    Args:
        event: The refused row.
        offset: The byte offset of its line.
        exc: The database's error.

    Returns:
        An error row holding the line (as stored in ``data``) and the reason.
    """
    return (event[0], event[1], offset, f"database refused the row: {exc}", event[8])


def rejected_error(row: ErrorRow, exc: BaseException) -> ErrorRow:
    """Return a quarantine row that the database refused, without its raw bytes.

    Args:
        row: The refused error row.
        exc: The database's error.

    Returns:
        The same row with ``raw`` left out and the reason added.
    """
    return (row[0], row[1], row[2], f"{row[3]}; raw not stored, database refused it: {exc}", b"")


@dataclasses.dataclass
class SyncReport:
    """What one sync call did.

    Attributes:
        files: Session files looked at.
        rows_inserted: Rows added to ``session_events``.
        lines_quarantined: Lines added to ``session_ingest_errors``.
        bytes_read: Bytes of complete lines consumed.
        warnings: One line per missing folder, or truncated, replaced, busy,
            unreadable or refused file.
        sessions: The sessions that were looked at.
        files_skipped: Files not opened because nothing changed since the last sync.
    """

    files: int = 0
    rows_inserted: int = 0
    lines_quarantined: int = 0
    bytes_read: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    sessions: list[str] = dataclasses.field(default_factory=list)
    files_skipped: int = 0


#: Called after each committed batch with (session_id, report so far).
Progress = Callable[[str, SyncReport], None]


def source_id(folder: str, earlier: Callable[[str], str | None] | None = None) -> str:
    """Return the id of a sessions folder: ``CODEX_SOURCE_ID``, or the one kept inside it.

    The id is kept in ``<folder>/.codex-source-id`` (``0600``), created once
    (``O_EXCL``) and read back afterwards, so it survives renames of the
    folder. A folder without that file (new, re-created after it was removed,
    restored without it) first asks ``earlier``, the database's memory of
    the id its path last had: a folder keeps its id through re-creation, and
    one synced read-only before keeps the id it had then. Only a path the
    database has not seen gets a new UUID. When the file cannot be created (a
    read-only folder), the id is kept nowhere: the one the database recalls,
    else the folder's ``(st_dev, st_ino)`` (docs/mirror.md, "Sync").

    Args:
        folder: An existing sessions folder.
        earlier: The id the database last recorded for the path ``folder``
            (on this host), or None.

    Returns:
        The id.

    Raises:
        SourceIdError: The id file could not be written for another reason
            than a read-only folder (a full disk, an I/O error).
    """
    override = os.environ.get(ENV_SOURCE_ID)
    if override:
        return override
    path = os.path.join(folder, SOURCE_ID_FILE)
    try:
        return _read_id(path)
    except FileNotFoundError:
        pass
    except OSError:
        return _folder_identity(folder)
    known = earlier(folder) if earlier is not None else None
    new = known or str(uuid.uuid4())
    # Written whole under a temporary name, then linked into place: a racing
    # sync either wins the link or reads the winner's complete id.
    temporary = f"{path}.{uuid.uuid4()}"
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise _cannot_keep(path, exc) from exc
        return known or _folder_identity(folder)  # a read-only folder
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new + "\n")
        os.link(temporary, path)
    except FileExistsError:
        return _read_id(path)
    except OSError as exc:
        raise _cannot_keep(path, exc) from exc
    finally:
        os.unlink(temporary)
    return new


#: Why an id file cannot be created in a folder that is only read: it then
#: goes by an id kept nowhere (see :func:`source_id`).
_READ_ONLY: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _cannot_keep(path: str, exc: OSError) -> SourceIdError:
    msg = f"cannot write the sessions folder's id to {path}: {exc.strerror or exc}"
    return SourceIdError(exc.errno or errno.EIO, msg)


def existing_source_id(folder: str) -> str | None:
    """Return the id a sync gave ``folder``, without creating one (for ``prune``).

    Args:
        folder: A sessions folder.

    Returns:
        ``CODEX_SOURCE_ID``, the id kept inside the folder, or ``None`` when
        no sync into PostgreSQL has named it yet.
    """
    override = os.environ.get(ENV_SOURCE_ID)
    if override:
        return override
    try:
        return _read_id(os.path.join(folder, SOURCE_ID_FILE))
    except FileNotFoundError:
        return None


def _folder_identity(folder: str) -> str:
    info = os.stat(folder)
    return f"dev-{info.st_dev}-ino-{info.st_ino}"


def _read_id(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        text = os.read(fd, 200)
    finally:
        os.close(fd)
    found = text.decode("utf-8", "replace").strip()
    if not found:
        msg = f"{path} is empty"
        raise OSError(msg)
    return found
