"""The writer: permissions, refusal of odd files, concurrency, reopening, short writes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codex_logging import CodexHandler, WriteError
from codex_logging._write.writer import MAX_OPEN, RECHECK_SECONDS, WRITER, Writer, open_append
from tests.checks import assert_exactly_once, expected_numbered, numbered_messages
from tests.conftest import read_lines

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestPermissions:
    def test_modes_under_umask_zero(self, tmp_path: Path) -> None:
        """Under umask(0), new folders are 0700 and session files 0600."""
        old = os.umask(0)
        try:
            WRITER.write(str(tmp_path / "a" / "b" / "s.ndjson"), b"{}\n")
        finally:
            os.umask(old)
        assert mode(tmp_path / "a") == 0o700
        assert mode(tmp_path / "a" / "b") == 0o700
        assert mode(tmp_path / "a" / "b" / "s.ndjson") == 0o600


class TestRefusals:
    def test_symlinked_file_is_refused(self, tmp_path: Path) -> None:
        """A symlink at the session file's path is refused and its target untouched."""
        victim = tmp_path / "victim"
        victim.write_text("keep")
        (tmp_path / "s").mkdir()
        (tmp_path / "s" / "x.ndjson").symlink_to(victim)
        with pytest.raises(WriteError, match="symlink"):
            open_append(str(tmp_path / "s" / "x.ndjson"))
        assert victim.read_text() == "keep"

    def test_symlinked_folder_is_refused(self, tmp_path: Path) -> None:
        """A symlink in place of the sessions folder is refused."""
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(WriteError, match="symlinked folder"):
            open_append(str(tmp_path / "link" / "x.ndjson"))
        assert list((tmp_path / "real").iterdir()) == []

    def test_hard_link_is_refused(self, tmp_path: Path) -> None:
        """A hard link at the session file's path is refused, the other name untouched."""
        victim = tmp_path / "victim"
        victim.write_text("keep")
        (tmp_path / "s").mkdir()
        os.link(victim, tmp_path / "s" / "x.ndjson")
        with pytest.raises(WriteError, match="hard-linked"):
            open_append(str(tmp_path / "s" / "x.ndjson"))
        assert victim.read_text() == "keep"

    def test_fifo_is_refused_without_hanging(self, tmp_path: Path) -> None:
        """A FIFO at the path is refused at once, with or without a reader."""
        (tmp_path / "s").mkdir()
        fifo = tmp_path / "s" / "x.ndjson"
        os.mkfifo(fifo)
        with pytest.raises(WriteError, match=r"FIFO|non-regular"):
            open_append(str(fifo))
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(WriteError, match="non-regular"):
                open_append(str(fifo))
        finally:
            os.close(reader)


class TestConcurrency:
    def test_threads_and_processes_never_tear_or_lose(self, tmp_path: Path) -> None:
        """8 threads in each of 4 processes append at once: every line intact, none lost."""
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.writers",
                    str(tmp_path),
                    "load",
                    str(w),
                    "8",
                    "500",
                    "3000",
                ],
                cwd=ROOT,
            )
            for w in range(4)
        ]
        for p in procs:
            assert p.wait(timeout=120) == 0
        messages = numbered_messages(tmp_path / "load.ndjson")
        assert len(messages) == 4 * 8 * 500
        assert_exactly_once(messages, expected_numbered(4, 8, 500))

    def test_checker_bites_on_dropped_and_duplicated_lines(self, tmp_path: Path) -> None:
        """The checker fails on 1% of lines dropped or duplicated (negative control)."""
        expected = expected_numbered(2, 2, 100)
        dropped = [m for i, m in enumerate(expected) if i % 100 != 5]
        duplicated = expected + expected[::100]
        for broken in (dropped, duplicated):
            with pytest.raises(AssertionError):
                assert_exactly_once(broken, expected)
        torn = tmp_path / "torn.ndjson"
        torn.write_bytes(b'{"message": "0:0:0"}\n{"message": "0:0:1"}{"mess\n')
        with pytest.raises(ValueError, match="Extra data"):
            numbered_messages(torn)

    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_child_processes_write_to_the_same_file(self, tmp_path: Path, method: str) -> None:
        """Children started by fork and by spawn append to the parent's session file."""
        handler = CodexHandler(sessions_dir=tmp_path, session_id="mp")
        logger = logging.getLogger("mp")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.info("parent before")
        ctx = multiprocessing.get_context(method)
        procs = [ctx.Process(target=_child_logs, args=(str(tmp_path), i)) for i in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        logger.info("parent after")
        messages = sorted(r["message"] for r in read_lines(tmp_path / "mp.ndjson"))
        expected = sorted(
            [
                "parent before",
                "parent after",
                *(f"child {i} {n}" for i in range(3) for n in range(50)),
            ]
        )
        assert messages == expected
        handler.close()

    # Python 3.12+ warns on fork() in a threaded process; forking there is the point.
    @pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
    def test_fork_while_the_writer_lock_is_held(self, tmp_path: Path) -> None:
        """A child forked while another thread holds the writer's lock still logs.

        The thread that holds it does not exist in the child, so without the
        at-fork reset the child would wait forever (it once did in CI).
        """
        path = str(tmp_path / "held.ndjson")
        WRITER.write(path, b'{"n":0}\n')
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with WRITER._lock:  # the state a fork can catch
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(30)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child exits below
                code = 1
                try:
                    WRITER.write(path, b'{"n":1}\n')
                    code = 0
                finally:
                    os._exit(code)
        finally:
            release.set()
            holder.join()
        assert _wait_pid(pid, 10) == 0
        assert [r["n"] for r in read_lines(tmp_path / "held.ndjson")] == [0, 1]

    # Python 3.12+ warns on fork() in a threaded process; forking there is the point.
    @pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
    def test_fork_while_threads_log(self, tmp_path: Path) -> None:
        """fork() while 4 threads are logging: 20 children log with no deadlock, nothing lost."""
        handler = CodexHandler(sessions_dir=tmp_path, session_id="fork")
        logger = logging.getLogger("forking")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # pytest's own capture handlers on the root are buffered streams, whose
        # locks are not fork-safe: keep this test to our handler alone.
        logger.propagate = False
        stop = threading.Event()
        sent = [0] * 4

        def spin(t: int) -> None:
            while not stop.is_set():
                logger.info("t%d-%d", t, sent[t])
                sent[t] += 1

        threads = [threading.Thread(target=spin, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        pids = []
        try:
            for c in range(20):
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child exits below
                    code = 0
                    try:
                        for n in range(20):
                            logger.info("c%d-%d", c, n)
                    except BaseException:
                        code = 1
                    os._exit(code)
                pids.append(pid)
        finally:
            stop.set()
            for t in threads:
                t.join()
        for pid in pids:
            assert _wait_pid(pid, 60) == 0
        expected = [f"t{t}-{n}" for t in range(4) for n in range(sent[t])]
        expected += [f"c{c}-{n}" for c in range(20) for n in range(20)]
        assert_exactly_once((r["message"] for r in read_lines(tmp_path / "fork.ndjson")), expected)
        handler.close()


def _wait_pid(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # pragma: no cover - only on a hang
    return -1  # pragma: no cover


def _child_logs(sessions_dir: str, index: int) -> None:
    # A fresh handler in spawn; the inherited one in fork. Both must work.
    logger = logging.getLogger("mp")
    if not logger.handlers:
        logger.addHandler(CodexHandler(sessions_dir=sessions_dir, session_id="mp"))
        logger.setLevel(logging.INFO)
    for n in range(50):
        logger.info("child %d %d", index, n)


class TestReopen:
    def test_removed_folder_is_recreated(self, tmp_path: Path) -> None:
        """After the folder is removed, records a second later land in a new file at the path."""
        handler = CodexHandler(sessions_dir=tmp_path / "s", session_id="r")
        logger = logging.getLogger("reopen")
        logger.addHandler(handler)
        logger.warning("first")
        (tmp_path / "s" / "r.ndjson").unlink()
        (tmp_path / "s").rmdir()
        time.sleep(RECHECK_SECONDS + 0.05)
        logger.warning("second")
        assert [r["message"] for r in read_lines(tmp_path / "s" / "r.ndjson")] == ["second"]
        handler.close()

    def test_replaced_file_is_followed(self, tmp_path: Path) -> None:
        """A rotation tool moves the file away: later records go to the path, not the moved file."""
        handler = CodexHandler(sessions_dir=tmp_path, session_id="r")
        logger = logging.getLogger("rotate")
        logger.addHandler(handler)
        logger.warning("old")
        (tmp_path / "r.ndjson").rename(tmp_path / "r.ndjson.1")
        time.sleep(RECHECK_SECONDS + 0.05)
        logger.warning("new")
        assert [r["message"] for r in read_lines(tmp_path / "r.ndjson.1")] == ["old"]
        assert [r["message"] for r in read_lines(tmp_path / "r.ndjson")] == ["new"]
        handler.close()

    def test_many_sessions_stay_within_the_descriptor_bound(self, tmp_path: Path) -> None:
        """Logging to more sessions than the cache holds keeps every record."""
        for i in range(MAX_OPEN * 2):
            WRITER.write(str(tmp_path / f"s{i}.ndjson"), b'{"n":1}\n')
        WRITER.write(str(tmp_path / "s0.ndjson"), b'{"n":2}\n')
        assert read_lines(tmp_path / "s0.ndjson") == [{"n": 1}, {"n": 2}]
        assert len(list(tmp_path.iterdir())) == MAX_OPEN * 2


SHORT_WRITE_CHILD = """
import logging, resource, sys
from codex_logging import CodexHandler
errors = []
h = CodexHandler(sessions_dir=sys.argv[1], session_id="full")
h.handleError = lambda record: errors.append(record.getMessage())
log = logging.getLogger("full"); log.addHandler(h); log.setLevel(logging.INFO)
log.info("before")
size = (len(open(sys.argv[1] + "/full.ndjson", "rb").read()))
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
log.info("x" * 200)          # only 40 bytes fit: a short write
log.info("y" * 200)          # nothing fits
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
if sys.argv[2] == "closed":
    h.close()                # the descriptor goes; the file still ends in the fragment
log.info("after")            # space is back
print(len(errors))
"""


class TestFsync:
    @pytest.mark.parametrize(
        ("policy", "expected"), [("never", []), ("end", ["end"]), ("always", ["a", "b", "end"])]
    )
    def test_policy_decides_which_records_are_flushed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, expected: list[str]
    ) -> None:
        """fsync runs after the records the policy names, on the session file, after the line."""
        real_fsync = os.fsync
        flushed: list[str] = []

        def fsync(fd: int) -> None:
            assert os.fstat(fd).st_ino == (tmp_path / "f.ndjson").stat().st_ino
            flushed.append(read_lines(tmp_path / "f.ndjson")[-1]["message"])
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        handler = CodexHandler(tmp_path, "f", fsync=policy)  # type: ignore[arg-type]
        logger = logging.getLogger(f"fsync.{policy}")
        logger.addHandler(handler)
        logger.warning("a")
        logger.warning("b")
        logger.warning("end", extra={"kind": "end"})
        assert flushed == expected
        handler.close()


class TestDescriptorLifetime:
    def test_never_closed_under_a_write_in_progress(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A descriptor retired while a write is in progress closes only when that write ends.

        Otherwise its number could be reused by another open and receive the line.
        """
        writer = Writer()
        path = str(tmp_path / "w.ndjson")
        writer.write(path, b'{"n":0}\n')
        fd = writer._cache[path].fd
        real_write = os.write
        entered, release = threading.Event(), threading.Event()

        def slow_write(target: int, data: bytes) -> int:
            if target == fd and b'"n":1' in data:
                entered.set()
                release.wait(30)
            return real_write(target, data)

        monkeypatch.setattr(os, "write", slow_write)
        thread = threading.Thread(target=writer.write, args=(path, b'{"n":1}\n'))
        thread.start()
        assert entered.wait(30)
        writer.close_all()  # retires it while the write is in progress
        os.fstat(fd)  # still open
        writer.write(path, b'{"n":2}\n')  # a new descriptor for the same path
        release.set()
        thread.join()
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        assert sorted(r["n"] for r in read_lines(tmp_path / "w.ndjson")) == [0, 1, 2]
        writer.close_all()

    def test_reset_after_fork_starts_clean(self, tmp_path: Path) -> None:
        """The at-fork hook closes the inherited descriptors and gives the writer a new lock."""
        writer = Writer()
        path = str(tmp_path / "f.ndjson")
        writer.write(path, b'{"n":0}\n')
        fd, lock = writer._cache[path].fd, writer._lock
        lock.acquire()  # as if a thread that the child does not have held it
        writer._after_fork_in_child()
        assert writer._lock is not lock
        assert not writer._cache
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        writer.write(path, b'{"n":1}\n')
        assert [r["n"] for r in read_lines(tmp_path / "f.ndjson")] == [0, 1]
        writer.close_all()


class TestShortWrite:
    def test_a_file_found_ending_mid_line_gets_one_newline_from_many_threads(
        self, tmp_path: Path
    ) -> None:
        """Opened ending in another process's fragment: one newline before the first record, from 8 threads at once."""
        path = tmp_path / "s.ndjson"
        path.write_bytes(b'{"message": "whole"}\n{"message": "cut sh')
        os.utime(path, (time.time() - 60, time.time() - 60))
        writer = Writer()
        barrier = threading.Barrier(8)

        def run(t: int) -> None:
            barrier.wait(10)
            for i in range(50):
                writer.write(str(path), f'{{"message": "{t}:{i}"}}\n'.encode())

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        writer.close_all()
        lines = path.read_bytes().split(b"\n")
        assert lines[:2] == [b'{"message": "whole"}', b'{"message": "cut sh']
        assert lines[-1] == b""
        assert sorted(lines[2:-1]) == sorted(
            f'{{"message": "{t}:{i}"}}'.encode() for t in range(8) for i in range(50)
        )

    def test_a_write_in_progress_is_not_taken_for_a_fragment(self, tmp_path: Path) -> None:
        """Opened while another descriptor's 128 MiB record is being copied in: no newline is added."""
        path = tmp_path / "s.ndjson"
        path.write_bytes(b'{"message": "whole"}\n')
        big = b'{"message": "' + b"x" * (128 << 20) + b'"}\n'
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        writing = threading.Thread(target=os.write, args=(fd, big))
        writing.start()
        while os.stat(path).st_size == 21:  # the big write has begun
            time.sleep(0.0005)
        caught_mid_write = os.stat(path).st_size < 21 + len(big)
        writer = Writer()
        writer.write(str(path), b'{"message": "mine"}\n')
        writing.join(60)
        os.close(fd)
        writer.close_all()
        lines = path.read_bytes().split(b"\n")
        assert [len(line) for line in lines] == [20, len(big) - 1, 19, 0]
        assert lines[2] == b'{"message": "mine"}'
        assert caught_mid_write

    @pytest.mark.parametrize("between", ["open", "closed"])
    def test_fragment_stands_alone_and_later_records_land(
        self, tmp_path: Path, between: str
    ) -> None:
        """A file-size limit mid-record leaves one bad line; the app goes on; later records land.

        Also when the descriptor was closed in between: a later one still ends the fragment.
        """
        out = subprocess.run(
            [sys.executable, "-c", SHORT_WRITE_CHILD, str(tmp_path), between],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == "2"
        lines = (tmp_path / "full.ndjson").read_bytes().split(b"\n")
        assert lines[-1] == b""
        assert len(lines[1]) == 40  # the fragment, alone on its line
        assert [__import__("json").loads(lines[i])["message"] for i in (0, 2)] == [
            "before",
            "after",
        ]
        assert len(lines) == 4

    def test_a_short_write_of_just_the_newline_ends_the_fragment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When only the newline that ends a fragment gets through, the next record adds none."""
        writer = Writer()
        path = str(tmp_path / "f.ndjson")
        writer.write(path, b'{"n":0}\n')
        real_write = os.write
        for fits in (5, 1):  # a fragment; then only the newline that ends it
            monkeypatch.setattr(os, "write", lambda fd, data, n=fits: real_write(fd, data[:n]))
            with pytest.raises(WriteError, match="short write"):
                writer.write(path, b'{"n":1}\n')
        monkeypatch.setattr(os, "write", real_write)
        writer.write(path, b'{"n":2}\n')
        assert (tmp_path / "f.ndjson").read_bytes() == b'{"n":0}\n{"n":\n{"n":2}\n'
        writer.close_all()


class TestEvictionUnderLoad:
    def test_descriptors_retired_while_other_threads_write(self, tmp_path: Path) -> None:
        """4 threads over more sessions than the cache holds: every line lands in its own file."""
        sessions = MAX_OPEN + 36
        per_thread = 3000

        def run(t: int) -> None:
            for i in range(per_thread):
                s = (i * 7 + t * 13) % sessions
                WRITER.write(
                    str(tmp_path / f"s{s}.ndjson"), f'{{"s": {s}, "m": "{t}:{i}"}}\n'.encode()
                )

        threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: more races
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        seen = []
        for s in range(sessions):
            for record in read_lines(tmp_path / f"s{s}.ndjson"):
                assert record["s"] == s  # never written through a reused descriptor
                seen.append(record["m"])
        assert_exactly_once(seen, [f"{t}:{i}" for t in range(4) for i in range(per_thread)])
