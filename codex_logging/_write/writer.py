"""The one append-only writer under the sink.

A record is one ``os.write`` of one whole line on an ``O_APPEND`` descriptor,
so lines from many threads and processes never interleave or tear (docs/record-format.md,
"How a line is written"). Descriptors are cached per path; a re-entrant lock guards
opening, rechecking and closing them, never the write itself, so a signal
handler or a finalizer that logs while this thread holds it goes on instead
of hanging (docs/guarantees.md, "Writing").
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat
import threading
import time
from collections.abc import Iterator
from typing import Final, Literal, NoReturn

from codex_logging._errors import WriteError
from codex_logging._settings import check_private, make_dirs

FsyncPolicy = Literal["never", "end", "always"]
FSYNC_POLICIES: Final = ("never", "end", "always")

#: How long a cached descriptor is trusted before its path is checked again.
#: Records written a second or more after the file was
#: removed or replaced land in a new file; half a second leaves margin.
RECHECK_SECONDS: Final = 0.5
#: Open descriptors kept at once, for programs that log to many sessions
#: (fewer once the process has run out of descriptors).
MAX_OPEN: Final = 64
#: Descriptors the cache may always keep; past them, at most an eighth of
#: the process's ``RLIMIT_NOFILE``, so the program keeps the rest.
_FEW_OPEN: Final = 8
#: Tries to open a file (or to write a record again after its file was
#: removed under it) before the record is given up.
_ATTEMPTS: Final = 3

_FILE_FLAGS: Final = (
    # Read too: the last byte is read once at open (ends_mid_line).
    os.O_RDWR
    | os.O_APPEND
    | os.O_CREAT
    | os.O_NOFOLLOW
    | os.O_CLOEXEC
    # A FIFO planted at the path must not block the open: it is refused
    # below as not a regular file.
    | os.O_NONBLOCK
)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Bound once: a module attribute lookup shows on the per-record path.
_monotonic: Final = time.monotonic


def check_fsync(value: str) -> FsyncPolicy:
    """Return ``value`` if it is a known fsync policy.

    Args:
        value: ``"never"``, ``"end"`` or ``"always"``.

    Returns:
        The policy.

    Raises:
        ValueError: For any other value.

    """
    if value not in FSYNC_POLICIES:
        msg = f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {value!r}"
        raise ValueError(msg)
    return value  # type: ignore[return-value]  # checked just above


def open_append(path: str) -> int:
    """Open ``path`` for appending, creating it ``0600`` in a ``0700`` folder.

    The folder and the file are opened with ``O_NOFOLLOW``: a symlink at
    either is refused, as are FIFOs, devices and files with more than one link.
    A folder or file that another user owns or may write is refused too (a
    ``.codex`` folder above the sessions folder included), unless
    ``CODEX_ALLOW_SHARED=1``.

    Args:
        path: The absolute session file path.

    Returns:
        A descriptor opened with ``O_APPEND``.

    Raises:
        WriteError: The path holds something other than a plain file.
        UnsafePathError: The folder or the file is shared with other users.
        OSError: The folder or the file cannot be opened.

    """
    folder, name = os.path.split(path)
    parent = os.path.dirname(folder)
    at_codex = os.path.basename(parent) == ".codex"
    if at_codex and not os.path.isdir(folder):
        # Checked before anything is made inside it, not only after.
        with contextlib.suppress(FileNotFoundError):
            check_private(parent, os.stat(parent, follow_symlinks=False))
    make_dirs(folder)
    try:
        dir_fd = os.open(folder, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_DIRECTORY | O_NOFOLLOW fails the same way on a symlink and on a
            # plain file: say which it is.
            if os.path.islink(folder):
                msg = f"refusing to write through a symlinked folder: {folder}"
                raise WriteError(errno.ELOOP, msg) from exc
            msg = f"the sessions folder {folder} is not a folder (a file is in the way)"
            raise WriteError(errno.ENOTDIR, msg) from exc
        raise
    try:
        check_private(folder, os.fstat(dir_fd))
        if at_codex:
            check_private(parent, os.stat(parent, follow_symlinks=False))
        try:
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                msg = f"refusing to write to a symlink or FIFO: {path}"
                raise WriteError(exc.errno, msg) from exc
            raise
    finally:
        os.close(dir_fd)
    try:
        _check_opened(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _share_of_limit() -> int:
    # Asked only when a file is opened past the first few: the limit may have
    # been lowered since (setrlimit), and is one system call.
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_OPEN
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN
    return max(_FEW_OPEN, soft // 8)


def _check_opened(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        msg = f"refusing to write to a non-regular or hard-linked file: {path}"
        raise WriteError(errno.EPERM, msg)
    check_private(path, info)


class _Process:
    """The process id, read once and again after each fork (``os.getpid`` is a system call)."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()


#: ``PROCESS.pid`` is ``os.getpid()`` without the system call.
PROCESS: Final = _Process()


#: How many times a file that keeps growing is looked at before its end is
#: left alone (not taken for a fragment).
_SETTLE_TRIES: Final = 100


def ends_mid_line(fd: int, info: os.stat_result) -> bool:
    """Return whether the file ends in a fragment: bytes after its last newline.

    Checked once per opened descriptor (one ``pread`` of the last byte), so
    the first record a process appends after another's cut-short line starts
    on a line of its own instead of being glued to the fragment. Every record
    is one ``O_APPEND`` write, so a file of ours ends mid-line only while
    another process's write is being copied in, or after one was cut short.
    To tell them apart, an empty write waits for any write in progress (the
    kernel holds the file's lock for a whole write): a file whose size stays
    the same across it, still ending mid-line, ends in a fragment.

    Args:
        fd: A descriptor open on the file for reading and appending (one that
            cannot be read is reported as clean).
        info: Its ``fstat``.

    Returns:
        True when the last byte is not ``\\n`` and no write was finishing it.

    """
    size = info.st_size
    try:
        for _ in range(_SETTLE_TRIES):
            if size <= 0 or os.pread(fd, 1, size - 1) in (b"\n", b""):
                return False
            os.write(fd, b"")  # returns once every write in progress is done
            now = os.fstat(fd).st_size
            if now == size:
                return True
            size = now
    except OSError:
        return False
    return False


class _Entry:
    """One cached descriptor, with the identity it was opened on."""

    __slots__ = (
        "checked",
        "closed",
        "dev",
        "fd",
        "fragment",
        "inflight",
        "ino",
        "recheck_at",
        "retired",
        "writes",
    )

    def __init__(self, fd: int) -> None:
        info = os.fstat(fd)
        self.fd = fd
        self.dev = info.st_dev
        self.ino = info.st_ino
        self.recheck_at = time.monotonic() + RECHECK_SECONDS
        # One item per write in progress, added and removed with the atomic
        # list.append and ``del inflight[-1]`` (or list.pop), so the count
        # is never torn.
        self.inflight: list[None] = []
        self.retired = False
        self.closed = False
        # The file ends mid-line: a short write of ours, or one of another
        # process (a full disk, a file-size limit) found when it was opened.
        # The next record starts with a newline so the fragment stands alone.
        self.fragment = ends_mid_line(fd, info)
        # Records written on it, and how many of those were written before
        # the path was last seen naming it: if the file turns out removed,
        # the rest went to a file nobody can open again.
        self.writes = 0
        self.checked = 0


class Writer:
    """Append whole lines to session files from any thread, process or fork."""

    def __init__(self) -> None:
        """Start with an empty descriptor cache."""
        self._lock = threading.RLock()
        # The thread inside the lock: a call re-entered on that thread (a
        # signal handler or a finalizer that logs) must not change the cache
        # the interrupted call is halfway through changing (docs/guarantees.md).
        self._owner: int | None = None
        # Least recently checked first (a dict keeps insertion order; its get
        # costs less than an OrderedDict's on every write).
        self._cache: dict[str, _Entry] = {}
        # How many descriptors the cache keeps: MAX_OPEN, lowered for good
        # once the process ran out of descriptors (RLIMIT_NOFILE), so the
        # cache leaves the program the rest.
        self._max_open = MAX_OPEN
        # Retired descriptors a re-entered call could not close safely.
        self._pending_close: list[_Entry] = []
        # (st_dev, st_ino) of files whose last bytes are a fragment of ours, so
        # a descriptor opened again after eviction or close still ends it.
        self._fragments: set[tuple[int, int]] = set()
        # Folder -> records found written to removed files there, not yet
        # handed to a caller (see :meth:`write`).
        self._lost: dict[str, int] = {}

    # ``sync`` is not keyword-only: a keyword-only default costs a dict
    # lookup at every call (bench/); callers pass it by name all the same.
    def write(self, path: str, line: bytes, sync: bool = False) -> int | None:
        """Append ``line`` to ``path`` with a single ``os.write``.

        Args:
            path: The absolute session file path.
            line: One complete record, ending in ``\\n``.
            sync: Also ``fsync`` the file once the line is written.

        Returns:
            How many earlier records to files in ``path``'s folder were lost
            (written to a file that had been removed, before the writer
            noticed), when that was found out now; else ``0`` or ``None``.
            ``line`` itself was written.

        Raises:
            WriteError: A short write: the fragment will be ended with a newline
                before the next record so it stands alone.
            OSError: The file could not be opened or written.

        """
        # The fast path: a cached descriptor, checked recently, no fragment
        # to end and no fsync. Counting ourselves in before reading
        # ``retired`` means a concurrent _retire either sees us and leaves
        # closing to us, or we see it.
        entry = self._cache.get(path)
        if entry is None or sync or entry.fragment or _monotonic() >= entry.recheck_at:
            return self._write_slow(path, line, sync=sync)
        inflight = entry.inflight
        inflight.append(None)
        retired = entry.retired
        if not retired:
            try:
                written = os.write(entry.fd, line)
                if written != len(line):
                    self._short_write(entry, path, line, written)
                entry.writes += 1
            finally:
                # Deleting the last item is one atomic step (and cheaper than
                # a call to pop): no lock is needed unless the entry was
                # retired meanwhile, and then the last writer out closes it.
                del inflight[-1]
                if entry.retired:
                    self._close_if_idle(entry)
            return None
        del inflight[-1]
        self._close_if_idle(entry)
        return self._write_slow(path, line, sync=sync)

    def _write_slow(self, path: str, line: bytes, *, sync: bool) -> int:
        # Every other case: recheck or open the descriptor under the lock,
        # end a fragment, fsync. Here (at most twice a second per file, or a
        # record that asked for fsync) the file is also checked after the
        # write: if it was removed meanwhile, the record goes to the path again.
        for attempt in range(_ATTEMPTS):
            entry = self._checkout(path)
            if entry is None:
                self._write_once(path, line, sync=sync)
                return 0
            try:
                if entry.fragment:
                    self._end_fragment(entry, path, line)
                else:
                    written = os.write(entry.fd, line)
                    if written != len(line):
                        self._short_write(entry, path, line, written)
                if sync:
                    os.fsync(entry.fd)
                writes = entry.writes  # read first: these were written while it stood
                removed = os.fstat(entry.fd).st_nlink == 0
                if not removed:
                    entry.writes += 1
                    entry.checked = max(entry.checked, writes + 1)
                elif attempt == _ATTEMPTS - 1:
                    entry.writes += 1  # given up on: counted lost with the others
            finally:
                entry.inflight.pop()
                if entry.retired:
                    self._close_if_idle(entry)
            if not removed:
                break
            self._forget(path, entry)
        return self._take_lost(os.path.dirname(path)) if self._lost else 0

    def _take_lost(self, folder: str) -> int:
        # dict.pop is atomic: each count is handed to exactly one caller.
        return self._lost.pop(folder, 0)

    def _forget(self, path: str, entry: _Entry) -> None:
        # The file behind a cached descriptor was removed: drop it, so the
        # next write opens the path again.
        if self._owner == threading.get_ident():
            return
        with self._locked():
            if self._cache.get(path) is entry:
                self._retire(path, entry)

    def _end_fragment(self, entry: _Entry, path: str, line: bytes) -> None:
        # Rare: the file ends in a fragment. One thread writes its record
        # after a newline, under the lock; the others wait for it, then write
        # as usual (so no second newline, and no record glued on meanwhile).
        with self._locked():
            data = b"\n" + line if entry.fragment else line
            written = os.write(entry.fd, data)
            if written != len(data):
                self._short_write(entry, path, data, written)
            if entry.fragment:
                self._mark_fragment((entry.dev, entry.ino), entry, ended=True)

    def _checkout(self, path: str) -> _Entry | None:
        # The slow path: under the lock, recheck or open the descriptor and
        # count this write in. None when this thread already holds the lock.
        if self._owner == threading.get_ident():
            return None
        with self._locked():
            while self._pending_close:
                self._close_now(self._pending_close.pop())
            now = time.monotonic()
            entry = self._cache.get(path)
            if entry is None or now >= entry.recheck_at:
                entry = self._refresh(path, entry, now)
            entry.inflight.append(None)
            return entry

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Every change to the cache happens here, with the owner recorded.
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    def _write_once(self, path: str, line: bytes, *, sync: bool) -> None:
        # Re-entered while this thread holds the lock: write through a
        # descriptor of its own, leaving the cache to the interrupted call.
        fd = open_append(path)
        try:
            info = os.fstat(fd)
            key = (info.st_dev, info.st_ino)
            ending = key in self._fragments or ends_mid_line(fd, info)
            if ending:
                line = b"\n" + line
            written = os.write(fd, line)
            if ending or written != len(line):
                # What this write left at the end of the file, for the cached
                # descriptor (if it is this file's) and the next writer.
                cached = self._cache.get(path)
                if cached is not None and (cached.dev, cached.ino) != key:
                    cached = None
                if written:
                    ended = line[written - 1 : written] == b"\n"
                    self._mark_fragment(key, cached, ended=ended)
            if written != len(line):
                msg = f"short write to {path}: {written} of {len(line)} bytes"
                raise WriteError(errno.ENOSPC, msg)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _refresh(self, path: str, entry: _Entry | None, now: float) -> _Entry:
        # Called with the lock held: recheck a cached descriptor or open one.
        if entry is not None:
            writes = entry.writes  # read before the check: these were written while it stood
            if self._still_there(path, entry) and self._cache.get(path) is entry:
                entry.checked = writes
                entry.recheck_at = now + RECHECK_SECONDS
                try:
                    del self._cache[path]
                finally:  # a signal between the two steps must not drop the entry
                    self._cache[path] = entry  # now the most recent
                return entry
            self._retire(path, entry)
        fd = self._open(path)
        # A signal handler or finalizer that logged while this thread was
        # opening (the lock is re-entrant) may have cached the file already.
        found = self._cache.get(path)
        if found is not None:
            os.close(fd)
            return found
        entry = _Entry(fd)
        entry.fragment = entry.fragment or (entry.dev, entry.ino) in self._fragments
        self._cache[path] = entry
        if len(self._cache) > _FEW_OPEN:
            self._max_open = min(self._max_open, _share_of_limit())
        while len(self._cache) > self._max_open:
            old_path = next(iter(self._cache))
            self._retire(old_path, self._cache[old_path])
        return entry

    def _open(self, path: str) -> int:
        # Called with the lock held. Out of descriptors (EMFILE, ENFILE): close
        # idle cached ones, keep fewer from now on, and try again. The folder
        # removed between its re-creation and the open (ENOENT): try again.
        for attempt in range(_ATTEMPTS):
            try:
                return open_append(path)
            except OSError as exc:
                last = attempt == _ATTEMPTS - 1
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._cache and not last:
                    self._shrink()
                elif exc.errno != errno.ENOENT or last:
                    raise
        raise AssertionError  # pragma: no cover - the last attempt returns or raises

    def _shrink(self) -> None:
        # Called with the lock held: halve the cache, oldest first, and keep
        # it that small. A descriptor in use closes when its write ends.
        keep = len(self._cache) // 2
        self._max_open = max(1, keep)
        while len(self._cache) > keep:
            old_path = next(iter(self._cache))
            self._retire(old_path, self._cache[old_path])

    def _short_write(self, entry: _Entry, path: str, line: bytes, written: int) -> NoReturn:
        # The disk filled up or a size limit hit mid-line: remember the
        # fragment so the next record starts on a line of its own.
        if written:  # nothing written leaves the file as it was
            ended = line[written - 1 : written] == b"\n"
            self._mark_fragment((entry.dev, entry.ino), entry, ended=ended)
        msg = f"short write to {path}: {written} of {len(line)} bytes"
        raise WriteError(errno.ENOSPC, msg)

    def _mark_fragment(self, key: tuple[int, int], entry: _Entry | None, *, ended: bool) -> None:
        # Rare: after a short write, or once its fragment is ended. The set
        # outlives the descriptor.
        if entry is not None:
            entry.fragment = not ended
        if ended:
            self._fragments.discard(key)
        else:
            if len(self._fragments) >= MAX_OPEN * 16:  # bounded, however many files fill up
                self._fragments.clear()
            self._fragments.add(key)

    def _close_if_idle(self, entry: _Entry) -> None:
        if self._owner == threading.get_ident():
            self._pending_close.append(entry)  # the interrupted call may be closing it
            return
        with self._locked():
            self._close_now(entry)

    @staticmethod
    def _close_now(entry: _Entry) -> None:
        # Called with the lock held: close a retired descriptor nobody writes on.
        if not entry.inflight and not entry.closed:
            entry.closed = True
            os.close(entry.fd)

    def _retire(self, path: str, entry: _Entry) -> None:
        # Another thread may be writing on it right now: close it only when the
        # last writer is out, so a reused descriptor number never receives a
        # line meant for this file. Called with the lock held. A signal
        # handler or finalizer that logged meanwhile (the lock is re-entrant)
        # may have retired it already, or cached another entry for the path.
        if self._cache.get(path) is entry:
            del self._cache[path]
        if not entry.retired:
            entry.retired = True
            self._count_lost(path, entry)
        self._close_now(entry)

    def _count_lost(self, path: str, entry: _Entry) -> None:
        # Called with the lock held, once per descriptor. A file removed
        # while open keeps what was written to it until its last descriptor
        # closes, then it is gone: the records written since the path was
        # last seen naming it are counted lost. Unless the removal came after
        # the last write (its change time is later than its last write's: a
        # prune that retired a session already mirrored), when none was
        # written to it removed; within one clock tick the writer cannot tell
        # them apart, and counts them.
        unchecked = entry.writes - entry.checked
        if unchecked <= 0 or entry.closed:
            return
        try:
            info = os.fstat(entry.fd)
        except OSError:
            return
        if info.st_nlink == 0 and info.st_mtime_ns >= info.st_ctime_ns:
            folder = os.path.dirname(path)
            self._lost[folder] = self._lost.get(folder, 0) + unchecked

    @staticmethod
    def _still_there(path: str, entry: _Entry) -> bool:
        # WatchedFileHandler's test: the path must still name our inode.
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == (entry.dev, entry.ino)

    def close_all(self, folder: str | None = None) -> int:
        """Close every cached descriptor, or those of one folder (those in use close on release).

        Args:
            folder: Only the files directly in this absolute folder.

        Returns:
            How many records to files in ``folder`` (or anywhere) were lost,
            written to a file that had been removed, and not yet returned by
            :meth:`write`.

        """
        if self._owner == threading.get_ident():
            return 0  # re-entered (a finalizer closing a handler): the next close does it
        with self._locked():
            for path, entry in list(self._cache.items()):
                if folder is None or os.path.dirname(path) == folder:
                    self._retire(path, entry)
            if folder is None:
                lost = sum(self._lost.values())
                self._lost.clear()
                return lost
            return self._take_lost(folder)

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by a thread that does not exist in the
        # child. The inherited descriptors stay valid (O_APPEND is per write),
        # but start clean so no state of the parent's threads leaks in.
        PROCESS.pid = os.getpid()
        self._lock = threading.RLock()
        self._owner = None
        self._pending_close.clear()
        self._lost.clear()  # the parent's to report
        for entry in self._cache.values():
            entry.closed = True
            with contextlib.suppress(OSError):
                os.close(entry.fd)  # the child's copy; the parent's stays open
        self._cache.clear()


WRITER: Final = Writer()
# Run in the child right after every os.fork(), before any thread can start
# there, as logging does for its own locks.
os.register_at_fork(after_in_child=WRITER._after_fork_in_child)  # noqa: SLF001
