"""A second process that turns blocks of lines into rows while the sync commits.

A sync of many lines spends about two thirds of its time in Python turning
lines into rows (:class:`LineParser`) and a third committing them; one
interpreter does one at a time. For a large sync the engine
(``_mirror/engine.py``) hands blocks of complete lines to this worker, a
child process started with the same interpreter and this same package, and
commits the rows of one block while the worker parses the next
(docs/mirror.md, "Sync"; docs/performance.md, "The sync's parse in a second
process").

The worker only parses: the file, its lock and its watermark stay with the
engine, which decides where each block starts and commits each batch with
its watermark, as it does without a worker. So nothing about exactly once
changes; a worker that dies or answers wrongly is dropped, and the engine
parses the rest itself from its last commit.

The protocol, over the child's stdin and stdout, between two processes of
the same program: in, a pickle of ``(session_id, seq, offset, block,
new_file)`` a block; out, frames of a header (seconds, the length of what
follows) and a pickle: once the child is ready, how it parses
(:func:`parse_state`, compared with the engine's), then for each block in
order the seconds its parse took and ``(events, errors, offsets)``. Frames
let the engine ``poll`` whether an answer is there: it never reads ahead
of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

from codex_logging._mirror import compact, lines
from codex_logging._mirror.lines import ErrorRow, EventRow, LineParser, values_of

#: The package's parent folder: the child imports this same code.
_ROOT: Final = str(Path(__file__).resolve().parent.parent.parent)
#: Bytes a pipe between the two holds (Linux lets an unprivileged process go
#: up to 1 MiB): a block passes in a few writes, not one per 64 KiB.
_PIPE_BYTES: Final = 1 << 20
_F_SETPIPE_SZ: Final[int | None] = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
_F_GETPIPE_SZ: Final[int | None] = getattr(fcntl, "F_GETPIPE_SZ", None)
#: An answer's header: the parse's seconds, then the length of the pickle.
_HEADER: Final = struct.Struct("<dQ")
#: Seconds the engine waits for a worker to start before it parses alone,
#: and for one told to end before it is killed.
START_SECONDS: Final = 10.0
CLOSE_SECONDS: Final = 5.0
#: Seconds the engine waits for an answer, or for room in the pipe to hand
#: over a block, before it takes the worker for hung (stopped, say) and
#: parses alone: a block is parsed in well under a second.
ANSWER_SECONDS: Final = 30.0

#: The child's start: the parent's module path, recursion limit and integer
#: digits limit (JSON in argv), then the loop.
_CHILD: Final = """import json, sys
paths, recursion, digits = json.loads(sys.argv[1])
sys.path[:] = paths
sys.setrecursionlimit(recursion)
if digits is not None:
    sys.set_int_max_str_digits(digits)
from codex_logging._mirror.parse_worker import serve
serve()
"""
#: Bounds of the start frame and of an answer (a header announcing more is no worker's).
_START_BYTES: Final = 1 << 16
_ANSWER_BYTES: Final = 1 << 31

#: ``(events, errors, offsets, seconds)``: a block's rows, and the seconds its parse took.
Answer = tuple[list[EventRow], list[ErrorRow], list[int], float]


def _int_digits() -> int | None:
    """Return the interpreter's limit on the digits of an integer read from text (3.11+)."""
    get = getattr(sys, "get_int_max_str_digits", None)
    return None if get is None else int(get())


def parse_state() -> tuple[object, ...]:
    """Return what the rows a process makes depend on beyond the code: compared at the start.

    Whether orjson parses and writes (the split from the text is made only
    with it), and the limits that decide which lines Python's json takes.
    """
    return (
        lines._SPLIT_FROM_TEXT,  # noqa: SLF001 - the parse's own switch
        compact._orjson_dumps is not None,  # noqa: SLF001 - the writer of fields
        sys.getrecursionlimit(),
        _int_digits(),
    )


class WorkerLostError(Exception):
    """The worker did not answer a block as it should (it died, or could not start)."""


class ParseWorker:
    """The engine's side of one worker process; one per sync call."""

    def __init__(self, *, block_bytes: int) -> None:
        """Start the worker process (it imports the package while the caller goes on).

        Args:
            block_bytes: The most bytes of lines a block holds.

        Raises:
            WorkerLostError: The process could not be started.
        """
        name = os.path.basename(sys.executable or "").lower()
        if not name.startswith(("python", "pypy")):
            # Empty, or a program embedding Python (uWSGI, an editor): it is
            # not started with arguments meant for Python.
            msg = f"no Python interpreter to start (sys.executable is {sys.executable!r})"
            raise WorkerLostError(msg)
        # This interpreter, this package, and what else the parse depends on
        # as this process has it: its module path (orjson or not), its
        # recursion and integer-digit limits (checked again at the start).
        paths = [os.fsdecode(p) for p in sys.path if isinstance(p, str | bytes | os.PathLike)]
        setup = json.dumps([[_ROOT, *paths], sys.getrecursionlimit(), _int_digits()])
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, setup],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                bufsize=0,  # the answers are read frame by frame, never ahead
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise WorkerLostError(str(exc)) from None
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None  # PIPE gives both
        assert stdout is not None
        room = [0]  # a pipe of unknown size: one block at a time
        if _F_SETPIPE_SZ is not None and _F_GETPIPE_SZ is not None:
            room = []
            for pipe in (stdin, stdout):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
                room.append(fcntl.fcntl(pipe.fileno(), _F_GETPIPE_SZ))
        #: Blocks the engine may have sent and not had answered: two when a
        #: pipe holds two blocks and more (a block goes in while the worker
        #: still parses the one before, so the worker never waits for the
        #: engine), else one: with both sides' writes able to block, a
        #: second block could meet an answer that fills the other pipe.
        self.depth = 2 if min(room) >= 4 * block_bytes else 1
        # Blocks go in without blocking, so that a worker that stops reading
        # cannot hold the sync: the engine waits for room with a timeout.
        self._in = stdin
        os.set_blocking(stdin.fileno(), False)
        self._room = select.poll()
        self._room.register(stdin.fileno(), select.POLLOUT)
        #: The worker's answers (a pipe: ``poll`` tells whether one is there).
        self.answers: IO[bytes] = stdout
        # poll, not select: a process may hold descriptors past 1024.
        self._poll = select.poll()
        self._poll.register(stdout.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        #: Blocks sent and not yet answered.
        self.waiting = 0
        self._ready = False

    def ready(self, *, wait: bool) -> bool:
        """Return whether the worker has started (with ``wait``, wait up to START_SECONDS for it).

        Raises:
            WorkerLostError: It ended, or did not start in time when waited for.
        """
        if not self._ready:
            if not self.answered(START_SECONDS if wait else 0.0):
                if wait:
                    msg = f"the parse worker did not start in {START_SECONDS:g} s"
                    raise WorkerLostError(msg)
                return False
            seconds, length = _HEADER.unpack(self._read(_HEADER.size))
            if seconds or not 0 < length < _START_BYTES:
                msg = "the parse worker did not start as it should"
                raise WorkerLostError(msg)
            try:
                theirs = pickle.loads(self._read(length))  # noqa: S301 - our own child's pickle
            except Exception:  # anything else is no start either
                theirs = None
            if theirs != parse_state():
                # Rows would differ from the ones this process makes.
                msg = f"the parse worker parses otherwise ({theirs!r}, here {parse_state()!r})"
                raise WorkerLostError(msg)
            self._ready = True
        return True

    def answered(self, timeout: float | None = None) -> bool:
        """Return whether the next answer (or the start signal) is there to read."""
        return bool(self._poll.poll(None if timeout is None else int(timeout * 1000)))

    def wait(self) -> None:
        """Wait for the next answer.

        Raises:
            WorkerLostError: None came in ANSWER_SECONDS.
        """
        if not self.answered(ANSWER_SECONDS):
            msg = f"the parse worker gave no answer in {ANSWER_SECONDS:g} s"
            raise WorkerLostError(msg)

    def send(self, session_id: str, seq: int, offset: int, block: bytes, *, new_file: bool) -> None:
        """Hand the worker a block of complete lines, each ending in ``\\n``.

        Args:
            session_id: The file's session.
            seq: The seq of the line before the block's first line.
            offset: The file offset of the block's first byte.
            block: The lines.
            new_file: The block is the first of a file (the parser begins a file).

        Raises:
            WorkerLostError: The worker is gone.
        """
        data = memoryview(pickle.dumps((session_id, seq, offset, block, new_file), protocol=5))
        fd = self._in.fileno()
        while data:
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                if not self._room.poll(ANSWER_SECONDS * 1000):
                    self.waiting += 1  # a block half sent is owed: close() kills at once
                    msg = f"the parse worker took no block in {ANSWER_SECONDS:g} s"
                    raise WorkerLostError(msg) from None
            except OSError as exc:  # it ended (EPIPE)
                raise WorkerLostError(str(exc)) from None
        self.waiting += 1

    def receive(self) -> Answer:
        """Return the rows of the oldest block sent and not yet answered.

        Raises:
            WorkerLostError: The worker is gone or its answer is not one.
        """
        seconds, length = _HEADER.unpack(self._read(_HEADER.size))
        if length > _ANSWER_BYTES:
            msg = f"the parse worker announced an answer of {length} bytes"
            raise WorkerLostError(msg)
        try:
            rows = pickle.loads(self._read(length))  # noqa: S301 - our own child's pickles
        except Exception as exc:  # a cut or garbled pickle
            msg = f"{type(exc).__name__}: {exc}"
            raise WorkerLostError(msg) from None
        self.waiting -= 1
        if not (isinstance(rows, tuple) and len(rows) == 3):  # three lists
            msg = f"the parse worker answered {type(rows).__name__}, not rows"
            raise WorkerLostError(msg)
        return (*rows, seconds)

    def _read(self, length: int) -> bytearray:
        """Read exactly ``length`` bytes of the answers."""
        data = bytearray(length)
        view = memoryview(data)
        got = 0
        while got < length:
            self.wait()  # a worker may stop halfway through a frame
            try:
                count = self.answers.readinto(view[got:])  # type: ignore[attr-defined]
            except OSError as exc:
                raise WorkerLostError(str(exc)) from None
            if not count:
                msg = "the parse worker ended"
                raise WorkerLostError(msg)
            got += count
        return data

    def close(self) -> None:
        """End the worker: at once when it still owes an answer, else when it reads the end."""
        process = self._process
        if self.waiting:
            process.kill()
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.answers.close()


def serve() -> None:  # pragma: no cover - runs in the child
    """Parse each block read from stdin and answer on stdout, until stdin ends (the child)."""
    # Ctrl-C reaches the whole process group: the engine decides what stops,
    # and it closes this worker (or its end of the pipe ends it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    # Nothing else may write into the answers' pipe.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    parser = LineParser()
    state = pickle.dumps(parse_state())
    answers.write(_HEADER.pack(0.0, len(state)) + state)  # started, and how it parses
    answers.flush()
    while True:
        try:
            session_id, seq, offset, block, new_file = pickle.load(source)  # noqa: S301 - our parent's pickles
        except EOFError:
            return
        if new_file:
            parser.begin()
        clock = time.perf_counter()
        rows = parse_block(parser, session_id, seq, offset, block)
        del block
        pickled = io.BytesIO()
        pickler = pickle.Pickler(pickled, protocol=5)
        # No memo: rows share nothing worth a reference but the session id,
        # and the memo costs more than it saves (about 2.1 against 0.4 us a row).
        pickler.fast = True
        pickler.dump(rows)
        del rows
        answers.write(_HEADER.pack(time.perf_counter() - clock, pickled.tell()))
        answers.write(pickled.getbuffer())
        answers.flush()


def parse_block(
    parser: LineParser,
    session_id: str,
    seq: int,
    offset: int,
    block: bytes,
) -> tuple[list[EventRow], list[ErrorRow], list[int]]:
    """Return the rows of a block of complete lines, settled, as the engine would make them.

    Args:
        parser: The worker's parser (it keeps its caches from block to block).
        session_id: The file's session.
        seq: The seq of the line before the block's first line.
        offset: The file offset of the block's first byte.
        block: The lines, each ending in ``\\n``.

    Returns:
        ``(events, errors, offsets)`` as the engine's batch holds them.
    """
    events: list[EventRow] = []
    errors: list[ErrorRow] = []
    offsets: list[int] = []
    take, add, find = parser.take, offsets.append, block.find
    start = 0
    while True:
        end = find(b"\n", start)
        if end < 0:
            break
        seq += 1
        at = take(session_id, seq, offset + start, block[start:end], events, errors)
        if at >= 0:
            add(at)
        start = end + 1
    parser.settle(events)
    # Each row with its compact values and without its record: about half
    # the bytes to send, and the values made before the pickle.
    return [_lean(row) for row in events], errors, offsets


def _lean(row: EventRow) -> Any:
    """Return the row with its compact values and without its record.

    The values are made here, before the row is pickled: the split tells a
    column that holds the record's very text object (``is``) from one the
    mirror repaired, which a pickle without a memo cannot keep apart.
    """
    values = row[10]
    return (*row[:9], None, values_of(row) if values is None else values)
