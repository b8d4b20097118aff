"""The sync engine: session files into a database target, exactly once.

Per session file: skip it untouched when its size and identity match its
watermark; otherwise open it once (``O_NOFOLLOW | O_NONBLOCK``), check that
the descriptor is a regular file, lock that same descriptor (``portalocker``,
flock), read the watermark under the lock, check that nothing cut the file
before it, and hand complete lines to the target in batches closed by a line
count and a byte budget, each batch in one transaction with the watermark
(docs/mirror.md, "Sync"). Writers never take the lock, so they are never blocked.

The database is reached only through a :class:`Target` (``_mirror/target.py``):
``_sqlite/sync.py`` builds the SQLite one, ``_postgres/sync.py`` the PostgreSQL one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Final

from codex_logging._errors import (
    CodexLoggingError,
    InvalidSessionId,
    SessionsDirError,
    UnknownSessionError,
)
from codex_logging._mirror.lines import ErrorRow, EventRow, LineParser
from codex_logging._mirror.parse_worker import ParseWorker, WorkerLostError
from codex_logging._mirror.target import (
    Batch,
    BatchRefusedError,
    ForeignSourceError,
    Progress,
    SettledRow,
    SyncReport,
    Target,
    Watermark,
    WatermarkMovedError,
)
from codex_logging._settings import (
    PROJECT_DIR,
    SUFFIX,
    check_private,
    is_valid_session_id,
    validate_session_id,
)

#: Lines per transaction: large enough to be fast, small enough that a crash
#: loses at most one uncommitted batch of work.
BATCH_LINES: Final = 5000
#: Bytes of lines per transaction: keeps memory flat when records are large.
BATCH_BYTES: Final = 8 << 20
#: A line this long goes in a batch of its own, held as text only (sync
#: memory ~2x the longest line, see docs/performance.md "Sync memory").
LONG_LINE_BYTES: Final = BATCH_BYTES
CHUNK_BYTES: Final = 1 << 20
#: Bytes at the start of a file remembered to notice a replaced file.
HEAD_BYTES: Final = 4096
#: An unchanged-looking file is skipped only if its mtime is this much older
#: than the sync that last committed its watermark: file times are coarse
#: (a few milliseconds), and a file rewritten right after a sync must be read.
SETTLE_SECONDS: Final = 1.0
_S_IFMT: Final = 0o170000
#: A sync that has this many bytes of lines to take starts a parse worker
#: (``_mirror/parse_worker.py``): a periodic sync of what a few minutes wrote
#: never starts one. A file this large waits for it to start (about 0.1 s,
#: what the two processes save on about 4 MiB of lines); smaller files are
#: parsed here until it is ready.
WORKER_RUN_BYTES: Final = 4 << 20
#: With a worker, a file with this many bytes to take is parsed with it.
WORKER_FILE_BYTES: Final = 256 << 10
#: Bytes of lines per transaction with a worker (about 1,000 lines of the
#: write path's): the worker parses a batch while the last one commits, so a
#: file's first parse and last commit, which cannot overlap, are short
#: (batches of 1,000 lines sync as fast as 5,000 without a worker).
WORKER_BATCH_BYTES: Final = 256 << 10
#: The share of a batch's bytes the engine parses itself until both sides'
#: speeds are measured (see :class:`_Balance`).
WORKER_SHARE: Final = 0.2


def run_sync(
    target: Target,
    sessions_dir: str,
    *,
    session_id: str | None = None,
    busy_timeout: float,
    progress: Progress | None = None,
) -> SyncReport:
    """Mirror every session file of ``sessions_dir`` (or one) into ``target``.

    The folder is checked before the target is used: a missing folder gives
    a report with one warning and leaves the target untouched (a target
    connects lazily, so no database is created).

    Args:
        target: The database.
        sessions_dir: The absolute sessions folder.
        session_id: Sync only this session.
        busy_timeout: Seconds to wait for a file lock held by another sync.
        progress: Called after each committed batch.

    Returns:
        The report.

    Raises:
        InvalidSessionId: ``session_id`` is not a valid id.
        UnknownSessionError: ``session_id`` has no session file.
        SessionsDirError: ``sessions_dir`` is not a folder.
    """
    report = SyncReport()
    names = _file_names(sessions_dir, session_id, report)
    if names is None:
        return report
    source = target.open_source(sessions_dir)
    run = _Run(target, source, sessions_dir, report, busy_timeout, progress)
    try:
        if run.pool is None:
            _sync_files(run, names)
        else:
            with _TIMESLICES:
                _sync_files(run, names)
    finally:
        if run.pool is not None:
            run.pool.shutdown()
        run.drop_worker()
    return report


class _ShortTimeslices:
    """While any pipelined sync runs, Python threads switch every 0.2 ms, not 5 ms.

    The worker thread of a pipelined target wakes on every answer of the
    server and needs the GIL for a moment, while the reading thread is busy
    parsing: with CPython's default 5 ms switch interval each wake-up waits
    up to 5 ms, and the overlap is lost (PostgreSQL sync 0.75x SQLite's
    without, 0.93-1.04x with, in four make bench runs; docs/performance.md).
    A process-wide setting, so it is counted: the first sync to start sets
    it, the last to end restores it.
    """

    INTERVAL: Final = 0.0002

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0.0
        self._set = 0.0
        # A child forked mid-sync has no sync running: it gets the old value.
        os.register_at_fork(after_in_child=self._forked)

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, self.INTERVAL))
                self._set = sys.getswitchinterval()
            self._users += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._restore()

    def _restore(self) -> None:
        # Only if the program did not set an interval of its own meanwhile.
        if sys.getswitchinterval() == self._set:
            sys.setswitchinterval(self._saved)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        if self._users:
            self._users = 0
            self._restore()


_TIMESLICES: Final = _ShortTimeslices()


def _sync_files(run: _Run, names: list[str]) -> None:
    """Sync the session files ``names`` (in the folder) that changed since their watermark.

    Idle work is O(changed files): an unchanged file is looked at with one
    ``lstat`` and not even opened. Size and identity alone would miss a file
    cut and regrown to the same size after the last sync (docs/mirror.md: any cut
    is noticed), so the file must also have been left alone since well before
    that sync committed. The per-file loop of an idle round: local names, no
    object made for a skipped file but its ``lstat``; the report's counts are
    stored before a file is synced (a progress callback sees them).
    """
    target, report, folder = run.target, run.report, run.folder
    settled = target.settled_files(run.source)
    add_session = report.sessions.append
    files_seen, skipped = report.files, report.files_skipped
    settle, regular, lstat = SETTLE_SECONDS, stat.S_IFREG, os.stat
    cut = -len(SUFFIX)
    prefix = os.path.join(folder, "")
    # Names are looked up in the folder's descriptor (no path walk per file);
    # a folder that can be searched but not read (one session synced) goes by path.
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        base = ""
    except OSError:
        fd, base = None, prefix
    try:
        for name in names:
            try:
                info = lstat(base + name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            sid = name[:cut]
            if info.st_mode & _S_IFMT != regular:
                _not_a_file(run, sid, prefix + name, info, settled)
                continue
            mark = settled.get(sid)
            looks_settled = False
            if (
                mark is not None
                and mark[1] == info.st_size
                and mark[2] == info.st_dev
                and mark[3] == info.st_ino
            ):
                if info.st_mtime < mark[4] - settle:
                    files_seen += 1
                    skipped += 1
                    add_session(sid)
                    continue
                looks_settled = True
            try:  # a settled id was checked when first synced
                validate_session_id(sid)
            except InvalidSessionId as exc:
                report.warnings.append(f"{sid}: skipped, {prefix + name}: {exc}")
                continue
            files_seen += 1
            add_session(sid)
            report.files, report.files_skipped = files_seen, skipped
            # A file that looks settled but changed too close to its last
            # sync is checked in full, and its watermark's time refreshed, so
            # the next round can skip it.
            _FileSync(run, sid, prefix + name, refresh=looks_settled).run()
    finally:
        if fd is not None:
            os.close(fd)
    report.files, report.files_skipped = files_seen, skipped


def _not_a_file(
    run: _Run, sid: str, path: str, info: os.stat_result, settled: Mapping[str, SettledRow]
) -> None:
    """Report a session file of this folder that is no longer a regular file.

    A name that was never synced (a symlink or FIFO someone put there) is no
    session file and is passed over without a word; one whose session has a
    watermark of this folder was swapped since the last sync (nothing is read
    through it): said once in this sync's report.
    """
    if sid not in settled:
        if not is_valid_session_id(sid):
            return
        mark = run.target.read_watermark(sid)
        if mark is None or mark.source_id != run.source:
            return
    what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
    run.report.warnings.append(
        f"{sid}: skipped, {path} is now {what}, no longer the session file synced"
        " before: nothing is read through it"
    )


def _file_names(folder: str, session_id: str | None, report: SyncReport) -> list[str] | None:
    """Return the names of the session files to look at, in order; None: no folder."""
    if session_id is not None:
        validate_session_id(session_id)
    _refuse_what_writers_refuse(folder)
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        if session_id is not None:
            msg = f"unknown session {session_id}: no sessions folder {folder}"
            raise UnknownSessionError(msg) from None
        report.warnings.append(f"no sessions folder {folder} (yet): nothing to sync")
        return None
    if not stat.S_ISDIR(info.st_mode):
        msg = f"the sessions folder {folder} is not a folder"
        raise SessionsDirError(msg)
    if session_id is None:
        try:
            listed = os.listdir(folder)
        except OSError as exc:  # no read permission on the folder
            msg = f"cannot list the sessions folder {folder}: {exc.strerror or exc}"
            raise SessionsDirError(msg) from None
        names = [name for name in listed if name.endswith(SUFFIX)]
        names.sort()
        return names
    path = os.path.join(folder, session_id + SUFFIX)
    try:
        found = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        found = None
    if found is None or not stat.S_ISREG(found.st_mode):
        msg = f"unknown session {session_id}: no file {path}"
        raise UnknownSessionError(msg)
    return [session_id + SUFFIX]


def _refuse_what_writers_refuse(folder: str) -> None:
    """Raise for a sessions folder (or the ``.codex`` above it) that writers refuse.

    A symlink there, or a ``.codex`` owned by another user, makes every writer
    drop its records: a sync that said only "no sessions folder (yet)" would
    hide why nothing arrives (docs/mirror.md).
    """
    parent = os.path.dirname(folder)
    for path in (parent, folder) if os.path.basename(parent) == PROJECT_DIR else (folder,):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or path == parent:
            check_private(path, info)


def _refused(info: os.stat_result) -> str | None:
    """Return why an opened name is no session file to read, or None."""
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_nlink != 1:
        # The writer refuses a hard-linked session file: so does the sync
        # (the other name may be anyone's file).
        return f"is hard-linked ({info.st_nlink} names): the writer refuses it too"
    return None


@dataclasses.dataclass
class _Batch:
    """A batch of lines read with a parse worker: where it ends, and its rows as they come."""

    seq: int
    pos: int
    #: Its bytes, the engine's part of them, and the seconds the engine took to parse it.
    size: int
    own: int
    own_seconds: float = 0.0
    events: list[EventRow] = dataclasses.field(default_factory=list)
    errors: list[ErrorRow] = dataclasses.field(default_factory=list)
    offsets: list[int] = dataclasses.field(default_factory=list)
    #: The seconds the worker took to parse its part (none sent: 0), and
    #: the engine to receive its rows.
    worker_seconds: float = 0.0
    receive_seconds: float = 0.0
    received: bool = False

    def finish(self, worker: ParseWorker) -> None:
        """Add the worker's rows after the engine's, once.

        The time spent waiting for them is not counted, the time to receive them is.
        """
        if self.received or self.own == self.size:
            return
        worker.wait()
        clock = time.perf_counter()
        events, errors, offsets, self.worker_seconds = worker.receive()
        self.events += events
        self.errors += errors
        self.offsets += offsets
        self.received = True
        self.receive_seconds = time.perf_counter() - clock


class _Balance:
    """How much of a batch the engine parses itself, so that both processes stay busy.

    While the worker parses its part of a batch, the engine parses its own
    part, commits the batch before (none for a file's first batch) and
    receives the worker's rows. With each of these measured in seconds a
    byte (smoothed over the last batches), the engine's part ``own`` of a
    batch of ``size`` bytes is the one that makes both sides take as long:
    ``own * mine + before * commit + (size - own) * receive = (size - own) * theirs``.
    """

    WEIGHT: Final = 0.3  # of the newest measurement

    def __init__(self) -> None:
        self.mine: float | None = None  # the engine's parse
        self.theirs: float | None = None  # the worker's parse, and its pickling
        self.commit = 0.0  # a batch's commit, a byte of the batch
        self.receive = 0.0  # the worker's rows received, a byte of its part

    def own(self, size: int, before: int) -> int:
        """Return how many of a batch's ``size`` bytes the engine parses.

        ``before``: the bytes of the batch it commits meanwhile (0: none).
        """
        mine, theirs = self.mine, self.theirs
        if mine is None or theirs is None:
            return int(size * WORKER_SHARE)
        left = theirs - self.receive
        own = (size * left - before * self.commit) / max(mine + left, 1e-12)
        return int(min(size, max(0.0, own)))

    def note(self, batch: _Batch, commit: float) -> None:
        """Take in a committed batch's times; ``commit``: the seconds its commit took."""
        theirs = batch.size - batch.own
        if batch.own:
            self.mine = self._mean(self.mine, batch.own_seconds / batch.own)
        if theirs:
            self.theirs = self._mean(self.theirs, batch.worker_seconds / theirs)
            self.receive = self._mean(self.receive, batch.receive_seconds / theirs)
        self.commit = self._mean(self.commit, commit / batch.size)

    def _mean(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.WEIGHT * (new - old)


@dataclasses.dataclass
class _Run:
    """What every file of one sync call shares."""

    target: Target
    source: str
    folder: str
    report: SyncReport
    busy_timeout: float
    progress: Progress | None
    parser: LineParser = dataclasses.field(default_factory=LineParser)
    #: The thread a pipelined target commits in (see ``_FileSync._commit``).
    pool: ThreadPoolExecutor | None = None
    #: The parse worker, once started (see :meth:`worker_for`).
    worker: ParseWorker | None = None
    #: No worker (again) in this run: it could not start, or it was lost.
    no_worker: bool = False
    #: Bytes of lines the files looked at so far had to take.
    pending_bytes: int = 0
    #: How a batch is shared with the worker.
    balance: _Balance = dataclasses.field(default_factory=_Balance)

    def __post_init__(self) -> None:
        if self.target.pipelined:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="codex-sync")

    def worker_for(self, pending: int) -> ParseWorker | None:
        """Return the parse worker for a file with ``pending`` bytes to take, or None.

        The worker is started once the run has had WORKER_RUN_BYTES to take,
        on a machine with two processors or more for this process, and used
        from the first file it is ready for (a file this large waits for it):
        files before that are parsed here while it starts. One that cannot
        start, or is lost, is not asked for again; the sync goes on without it.
        """
        self.pending_bytes += pending
        worker = self.worker
        if worker is None:
            if (
                self.pending_bytes < WORKER_RUN_BYTES
                or self.no_worker
                or not self.target.parse_worker
                or _processors() < 2  # two processes at once
            ):
                return None
            try:
                worker = self.worker = ParseWorker(block_bytes=WORKER_BATCH_BYTES)
            except WorkerLostError:
                self.no_worker = True
                return None
        if pending < WORKER_FILE_BYTES:
            return None
        try:
            return worker if worker.ready(wait=pending >= WORKER_RUN_BYTES) else None
        except WorkerLostError:
            self.drop_worker()
            return None

    def drop_worker(self) -> None:
        """End the parse worker, if any; the rest of the run parses in this process."""
        worker, self.worker = self.worker, None
        if worker is not None:
            self.no_worker = True
            worker.close()


def _processors() -> int:
    """Return how many processors this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _FileSync:
    """The ingestion of one session file, under its lock."""

    def __init__(self, run: _Run, sid: str, path: str, *, refresh: bool = False) -> None:
        self.run_ = run
        self.refresh = refresh  # store the watermark even if nothing changed
        self.target = run.target
        self.report = run.report
        self.sid = sid
        self.path = path
        self.fd = -1
        self.mark = Watermark()
        self.stored_seq = 0  # the watermark's seq as this sync last saw or wrote it
        self.committed = 0  # the byte offset the watermark holds now
        self.events: list[EventRow] = []
        self.offsets: list[int] = []
        self.errors: list[ErrorRow] = []
        self.batch_seq = 0  # seq and offset where the current batch started
        self.batch_pos = 0
        self.dirty = False  # the watermark to store differs from the stored one
        # The batch a pipelined target is committing while the next one is read:
        # (its commit, its end offset, its events, its quarantined lines).
        self.pending: tuple[Future[int], int, int, int] | None = None
        #: :meth:`_read` stops at the first line boundary at or past this
        #: offset, once what it took up to there is committed.
        self.until = sys.maxsize

    def run(self) -> None:
        # Imported here: it costs ~20 ms, which every short-lived process that
        # only logs (a hook script) would pay on import otherwise.
        import portalocker  # noqa: PLC0415

        report = self.report
        try:
            # Opened once, never following a link nor blocking on a FIFO;
            # the lock and every read use this same descriptor.
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            report.warnings.append(
                f"{self.sid}: skipped, cannot open {self.path}: {exc.strerror or exc}"
            )
            return
        try:
            refused = _refused(os.fstat(fd))
            if refused is not None:
                report.warnings.append(f"{self.sid}: skipped, {self.path} {refused}")
                os.close(fd)
                return
            lock = portalocker.Lock(
                self.path,
                mode="rb",
                timeout=self.run_.busy_timeout,
                check_interval=0.05,
                # flock, not lockf: it excludes other threads of this process too.
                flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
                buffering=0,
                opener=lambda _path, _flags: fd,
            )
        except BaseException:
            os.close(fd)
            raise
        try:
            with lock:  # owns fd from here: closes it on release
                self.fd = fd
                try:
                    self._ingest()
                    self._collect()
                except BaseException as exc:
                    # Interrupted (Ctrl-C, SystemExit): the batch in flight is
                    # cancelled; after an error it may still commit.
                    self._settle_in_flight(cancel=not isinstance(exc, Exception))
                    raise
        except WatermarkMovedError:
            report.warnings.append(
                f"{self.sid}: stopped, another sync moved its watermark (the file was rotated?)"
            )
        except (ForeignSourceError, BatchRefusedError) as exc:
            what = "stopped" if isinstance(exc, BatchRefusedError) else "skipped"
            report.warnings.append(f"{self.sid}: {what}, {exc}")
        except portalocker.LockException:
            report.warnings.append(
                f"{self.sid}: skipped, another sync held its lock for {self.run_.busy_timeout:g} s"
            )
        except CodexLoggingError:
            raise
        except OSError as exc:
            report.warnings.append(
                f"{self.sid}: skipped, cannot read {self.path}: {exc.strerror or exc}"
            )

    def _ingest(self) -> None:
        # The watermark is read under the file lock (docs/mirror.md): no other sync can
        # move it until this one is done with the file.
        found = self.target.read_watermark(self.sid)
        stored = found or Watermark()
        source, folder = self.run_.source, self.run_.folder
        if (
            stored.source_id is not None
            and stored.source_id != source
            and stored.source_dir != folder
        ):
            # A watermark of another id but this very path is this folder's
            # own, from before it got a new id (docs/mirror.md, "Sync").
            msg = (
                f"its rows in {self.target.name} come from the sessions folder"
                f" {stored.source_dir or stored.source_id}, not {folder}: one database"
                " mirrors a session id from one folder only (see docs/mirror.md)"
            )
            raise ForeignSourceError(msg)
        info = os.fstat(self.fd)
        size = info.st_size
        self.stored_seq = stored.seq
        base = stored
        if found is None or (
            stored.file_ino and (info.st_dev, info.st_ino) != (stored.file_dev, stored.file_ino)
        ):
            moved = self._moved_from(info)
            if moved is not None:
                old_sid, old = moved
                # Numbered on: seq stays the line number in the file, and
                # never falls back below what this name already holds.
                base = dataclasses.replace(old, seq=max(old.seq, stored.seq))
                self.report.warnings.append(
                    f"{self.sid}: renamed or moved from {old_sid}{SUFFIX} (the same file:"
                    f" device, inode and first bytes); its lines up to seq {old.seq} stay"
                    f" under {old_sid}, the lines after them are stored under {self.sid}"
                )
        mark = dataclasses.replace(
            base,
            file_dev=info.st_dev,
            file_ino=info.st_ino,
            source_id=source,
            source_dir=folder,
        )
        cut = self._cut(base, info)
        if cut is not None:
            self.report.warnings.append(
                f"{self.sid}: {cut}; its lines are taken again from seq {base.seq + 1}"
            )
            mark.byte_offset, mark.head_len, mark.head_sha256, mark.scanned_to = 0, 0, None, 0
            mark.tail_sha256 = None
        if mark.scanned_to > mark.byte_offset and self._scan_hash(
            mark.byte_offset, mark.scanned_to
        ) != (mark.scan_sha256):
            mark.scanned_to, mark.scan_sha256 = 0, None  # the pending line changed: scan it again
        self.dirty = mark != stored or self.refresh
        self.run_.parser.begin()
        self.mark = mark
        self.batch_seq, self.batch_pos = mark.seq, mark.byte_offset
        self.committed = mark.byte_offset
        # What is left to read: a line pending since the last sync was scanned.
        worker = self.run_.worker_for(size - max(mark.byte_offset, mark.scanned_to))
        while worker is not None and worker is self.run_.worker:
            if self.mark.scanned_to <= self.mark.byte_offset:
                self._read_with(worker, size)
                if worker is not self.run_.worker:
                    break  # lost: _read goes on from the last commit
            # A line too long for the worker's batches, the unfinished last
            # line, or one pending since the last sync (read on from where it
            # was scanned): _read takes it, then the worker goes on.
            self.until = self.mark.byte_offset + 1
            if not self._read(size):
                return  # the file's end
            self.until = sys.maxsize
        self._read(size)

    def _moved_from(self, info: os.stat_result) -> tuple[str, Watermark] | None:
        """Return the session whose watermark describes this file under another name, if any.

        The same device and inode, and the same content up to its watermark
        (first bytes, the line end before it, the bytes before it): the file
        was renamed or moved within the folder. Of several (renamed twice),
        the one that took most of it.
        """
        found = [
            (sid, mark)
            for sid, mark in self.target.same_file(self.run_.source, info.st_dev, info.st_ino)
            if sid != self.sid and mark.byte_offset > 0
        ]
        found.sort(key=lambda item: item[1].byte_offset, reverse=True)
        for sid, mark in found:
            if self._holds(mark, info.st_size, same_inode=True):
                return sid, mark
        return None

    def _holds(self, mark: Watermark, size: int, *, same_inode: bool) -> bool:
        """Return whether the file holds, up to ``mark``, the content ``mark`` describes."""
        offset = mark.byte_offset
        if offset > size:
            return False
        if offset == 0:
            return True
        if not mark.head_len or self._head_hash(mark.head_len) != mark.head_sha256:
            return False
        if os.pread(self.fd, 1, offset - 1) != b"\n":
            return False
        if mark.tail_sha256 is not None:
            return self._tail_hash(offset) == mark.tail_sha256
        # A watermark from before the tail was kept: its first bytes cover all
        # of it, or the inode says it is the same file.
        return same_inode or offset <= mark.head_len

    def _cut(self, stored: Watermark, info: os.stat_result) -> str | None:  # noqa: PLR0911 - one return per kind of cut
        """Return why the file is not the one the watermark describes, or None."""
        offset = stored.byte_offset
        if offset > info.st_size:
            return f"file shrank from {offset} to {info.st_size} bytes (truncated)"
        other = stored.file_ino and (info.st_dev, info.st_ino) != (
            stored.file_dev,
            stored.file_ino,
        )
        if other:
            if not self._holds(stored, info.st_size, same_inode=False):
                return "file was replaced (another file now has its name)"
            if offset:
                # Restored from a copy, or moved away and back: the same
                # content up to the watermark, which goes on from there.
                self.report.warnings.append(
                    f"{self.sid}: another file (a new inode) now has its name, with the same"
                    f" content up to the last line taken (restored or copied back): going on"
                    f" after seq {stored.seq}"
                )
            return None
        if stored.head_len and self._head_hash(stored.head_len) != stored.head_sha256:
            return "file was replaced (its first bytes differ)"
        if offset and os.pread(self.fd, 1, offset - 1) != b"\n":
            return (
                f"file was cut and written again (byte {offset - 1}, the end of the last"
                " line taken, is no longer a line end; truncated)"
            )
        if stored.tail_sha256 is not None and self._tail_hash(offset) != stored.tail_sha256:
            return (
                "file was cut and written again (the bytes before the end of the last line"
                " taken differ; truncated)"
            )
        return None

    def _tail_hash(self, offset: int) -> str:
        start = max(0, offset - HEAD_BYTES)
        return hashlib.sha256(os.pread(self.fd, offset - start, start)).hexdigest()

    def _scan_hash(self, offset: int, scanned: int) -> str:
        start = max(offset, scanned - HEAD_BYTES)
        return hashlib.sha256(os.pread(self.fd, scanned - start, start)).hexdigest()

    def _head_hash(self, length: int) -> str:
        return hashlib.sha256(os.pread(self.fd, length, 0)).hexdigest()

    def _read_with(self, worker: ParseWorker, size: int) -> None:
        """Take the complete lines up to ``size`` in batches that two processes parse.

        The first part of each batch is parsed here and the rest by the
        worker, which parses it while the batch before commits; the batches
        commit here, one after another, each with its watermark, as in
        :meth:`_read`. Stops at a line longer than a chunk, or at the
        unfinished last line, for :meth:`_read` to take from the last commit.
        A lost worker is dropped, and :meth:`_read` goes on from the last
        commit too (docs/mirror.md, "Sync").
        """
        run = self.run_
        held: _Batch | None = None  # parsed, waiting for its commit
        try:
            for batch in self._batches_with(worker, size):
                if held is not None:
                    self._commit_batch(held, worker)
                if worker.depth == 1:
                    batch.finish(worker)  # before the next block is sent
                held = batch
            if held is not None:
                self._commit_batch(held, worker)
        except WorkerLostError:
            run.drop_worker()  # what was committed stays; _read goes on from there
        except BaseException:
            if worker.waiting:
                run.drop_worker()  # it owes an answer no one will read
            raise

    def _batches_with(self, worker: ParseWorker, size: int) -> Iterator[_Batch]:
        """Yield the batches of complete lines from the watermark, each handed out.

        A batch is the complete lines in the next WORKER_BATCH_BYTES; its
        first part (see :class:`_Balance`) is parsed here and the rest sent
        to the worker before the batch is yielded.
        """
        fd, sid, parser, balance = self.fd, self.sid, self.run_.parser, self.run_.balance
        seq, pos = self.mark.seq, self.mark.byte_offset
        end = pos  # the file offset the buffer ends at
        buf, start = b"", 0  # buf[start:] is the file from pos on, read and not taken
        first, before = True, 0  # first: no block of this file sent yet
        while True:
            if len(buf) - start < WORKER_BATCH_BYTES and end < size:
                chunk = os.pread(fd, min(CHUNK_BYTES, size - end), end)
                buf, start = buf[start:] + chunk, 0
                end += len(chunk)
            stop = buf.rfind(b"\n", start, start + WORKER_BATCH_BYTES) + 1 or (
                # A line longer than a batch that ends in what was read: a
                # batch of its own, parsed here (a block that large could fill
                # both pipes at once).
                buf.find(b"\n", start) + 1
            )
            if not stop:
                # No line end read: a line longer than a chunk, the unfinished
                # last line, or a file that shrank meanwhile. _read takes it.
                return
            find = buf.find
            # The batch before this one commits while the worker parses.
            own = balance.own(stop - start, before)
            if stop - start > WORKER_BATCH_BYTES:
                own = stop - start
            cut = start if own <= 0 else find(b"\n", start + own - 1) + 1
            lines = buf.count(b"\n", start, stop)
            batch = _Batch(seq + lines, pos + stop - start, stop - start, cut - start)
            if stop > cut:
                mine = buf.count(b"\n", start, cut)
                worker.send(sid, seq + mine, pos + cut - start, buf[cut:stop], new_file=first)
                first = False  # the worker's parser has begun this file
            clock = time.perf_counter()
            events, errors, offsets = batch.events, batch.errors, batch.offsets
            take, add = parser.take, offsets.append
            at = start
            while at < cut:
                line_end = find(b"\n", at)
                seq += 1
                taken = take(sid, seq, pos + at - start, buf[at:line_end], events, errors)
                if taken >= 0:
                    add(taken)
                at = line_end + 1
            parser.settle(events)
            batch.own_seconds = time.perf_counter() - clock
            seq, pos, start, before = batch.seq, batch.pos, stop, batch.size
            yield batch

    def _commit_batch(self, batch: _Batch, worker: ParseWorker) -> None:
        """Commit a batch read with the worker (its rows received first, if they are not yet)."""
        batch.finish(worker)
        clock = time.perf_counter()
        self.events.extend(batch.events)
        self.errors.extend(batch.errors)
        self.offsets.extend(batch.offsets)
        batch.events, batch.errors, batch.offsets = [], [], []
        self._commit(batch.seq, batch.pos, batch.pos)
        self.run_.balance.note(batch, time.perf_counter() - clock)

    def _read(self, size: int) -> bool:
        """Take the complete lines up to ``size``, in batches.

        Each byte is scanned for a line end once; a line longer than a chunk
        is not held while its end is searched for, then read in one piece.
        Returns True when it stopped at ``until`` (see ``__init__``), with
        what it took committed; False at ``size``.
        """
        fd = self.fd
        mark = self.mark
        pos = mark.byte_offset  # file offset of the next line's first byte
        seq = mark.seq
        # No line end lies in [pos, scanned): a pending line is not read again.
        scanned = max(pos, mark.scanned_to)
        long_line = scanned > pos
        tail = b""  # file[pos:scanned] while the line is short enough to hold
        while scanned < size:
            chunk = os.pread(fd, min(CHUNK_BYTES, size - scanned), scanned)
            if not chunk:
                break  # the file shrank meanwhile: the next sync notices
            base = scanned
            scanned += len(chunk)
            end = chunk.find(b"\n")
            if end < 0:
                if long_line or tail:
                    # A line longer than a chunk: stop holding it, read it in
                    # one piece once its end is known.
                    long_line, tail = True, b""
                else:
                    tail = chunk
                continue
            if long_line:
                if not self._take_long(seq + 1, pos, base + end - pos):
                    scanned = pos  # the file shrank meanwhile: claim nothing past pos
                    break
                long_line = False
                seq += 1
            else:
                raw = tail + chunk[:end] if tail else chunk[:end]
                seq += 1
                self._take(seq, pos, raw)
                del raw
            seq, pos, start = self._lines_of(chunk, base, end + 1, seq)
            if pos >= self.until:
                return True  # committed up to pos; the rest of the chunk is read again
            tail = chunk[start:]
        if self.offsets or self.errors or self.dirty or scanned != max(pos, mark.scanned_to):
            self._commit(seq, pos, scanned)
        return False

    def _take_long(self, seq: int, pos: int, length: int) -> bool:
        """Read line ``seq`` (longer than a chunk) in one piece and take it; False: it is cut."""
        if length >= LONG_LINE_BYTES:
            self._hold_alone(seq - 1, pos)
        raw = os.pread(self.fd, length, pos)
        if len(raw) != length:
            return False
        if length >= LONG_LINE_BYTES and raw.isascii():
            # Decoded, then the bytes dropped before the parse: the line
            # is never held as bytes, text and parsed object at once.
            text = raw.decode("ascii")
            del raw
            self._take_text(seq, pos, text)
            del text
        else:
            self._take(seq, pos, raw)
            del raw
        return True

    def _lines_of(self, chunk: bytes, base: int, start: int, seq: int) -> tuple[int, int, int]:
        """Queue the complete lines of ``chunk`` from ``start``; return seq, offset, index.

        The per-line loop of the sync: kept to local names.
        """
        take = self.run_.parser.take
        sid, events, errors, append_offset = self.sid, self.events, self.errors, self.offsets.append
        find = chunk.find
        # A batch closes at BATCH_LINES lines or BATCH_BYTES bytes, whichever first.
        # (or at ``until``, where the batch commits and the loop stops).
        until = self.until
        line_limit = self.batch_seq + BATCH_LINES
        byte_limit = min(self.batch_pos + BATCH_BYTES, until)
        while True:
            pos = base + start
            if seq >= line_limit or pos >= byte_limit:
                self._commit(seq, pos, pos)
                if pos >= until:
                    return seq, pos, start
                line_limit, byte_limit = seq + BATCH_LINES, min(pos + BATCH_BYTES, until)
            end = find(b"\n", start)
            if end < 0:
                return seq, pos, start
            seq += 1
            at = take(sid, seq, pos, chunk[start:end], events, errors)
            if at >= 0:
                append_offset(at)
            start = end + 1

    def _hold_alone(self, seq: int, offset: int) -> None:
        """Before a long line is read: commit what is queued, and wait for it."""
        if self.events or self.errors:
            self._commit(seq, offset, offset)  # the long line's batch holds it alone
        self._collect()  # and no other batch is held beside it

    def _take(self, seq: int, offset: int, raw: bytes) -> None:
        at = self.run_.parser.take(self.sid, seq, offset, raw, self.events, self.errors)
        if at >= 0:
            self.offsets.append(at)

    def _take_text(self, seq: int, offset: int, text: str) -> None:
        at = self.run_.parser.take_text(self.sid, seq, offset, text, self.events, self.errors)
        if at >= 0:
            self.offsets.append(at)

    def _commit(self, seq: int, offset: int, scanned: int) -> None:
        """Hand the batch up to ``seq`` / ``offset`` to the target, with its watermark.

        A pipelined target (PostgreSQL) commits in the run's worker thread
        while this thread reads the next batch: the batches still commit one
        after another, each after the last one's result is known, so a batch
        whose watermark moved stops the file before the next is sent. The
        server's work (the COPY, the fsync of the commit) and the parsing of
        the next lines overlap (docs/performance.md, "Sync into PostgreSQL").
        """
        mark = self.mark
        if mark.head_len < HEAD_BYTES and offset > mark.head_len:
            mark.head_len = min(HEAD_BYTES, offset)
            mark.head_sha256 = self._head_hash(mark.head_len)
        if offset != mark.byte_offset or mark.tail_sha256 is None:
            mark.tail_sha256 = self._tail_hash(offset) if offset else None
        mark.seq, mark.byte_offset, mark.scanned_to = seq, offset, max(scanned, offset)
        mark.scan_sha256 = self._scan_hash(offset, scanned) if scanned > offset else None
        self.run_.parser.settle(self.events)
        events, errors = self.events, self.errors
        pool = self.run_.pool
        if pool is None:
            inserted = self.target.commit(
                Batch(self.sid, self.stored_seq, events, errors, mark, self.offsets)
            )
            self._account(offset, len(events), len(errors), inserted)
        else:
            self._collect()
            # The worker gets copies: the lists are cleared and the watermark
            # moved on for the next batch while it commits.
            batch = Batch(
                self.sid,
                self.stored_seq,
                list(events),
                list(errors),
                dataclasses.replace(mark),
                list(self.offsets),
            )
            commit = functools.partial(self.target.commit, batch)
            try:
                future = pool.submit(commit)
            except RuntimeError:
                # No new thread once the interpreter shuts down (a sync run
                # from atexit): this batch commits here instead.
                future = Future()
                future.set_result(commit())
            self.pending = (future, offset, len(events), len(errors))
            if offset - self.batch_pos >= BATCH_BYTES // 2:
                # A batch of big lines is not held while the next is read:
                # sync memory stays near the non-pipelined figure (~2x the
                # longest line); pipelining pays for many short lines.
                self._collect()
        self.stored_seq = seq
        self.dirty = False
        events.clear()
        errors.clear()
        self.offsets.clear()
        self.batch_seq, self.batch_pos = seq, offset

    def _settle_in_flight(self, *, cancel: bool) -> None:
        """End the batch in flight before the lock goes: the reading thread failed.

        With ``cancel`` (interrupted) the target is asked to cancel it; either
        way it is waited for, and accounted for if it committed (its rows are
        stored). Its own error, if it failed, gives way to the reading thread's.
        """
        if self.pending is None:
            return
        future, offset, events, errors = self.pending
        self.pending = None
        if cancel and not future.done():
            self.target.cancel()
        wait([future])
        if future.exception() is None:
            self._account(offset, events, errors, future.result())

    def _collect(self) -> None:
        """Wait for the batch in flight, if any; account for it or raise its error."""
        if self.pending is not None:
            future, offset, events, errors = self.pending
            inserted = future.result()
            self.pending = None
            self._account(offset, events, errors, inserted)

    def _account(self, offset: int, events: int, errors: int, inserted: int) -> None:
        report = self.report
        report.bytes_read += offset - self.committed
        self.committed = offset
        report.rows_inserted += inserted
        report.lines_quarantined += errors + events - inserted
        if self.run_.progress is not None:
            self.run_.progress(self.sid, report)
