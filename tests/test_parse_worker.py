"""The sync's parse worker: the same mirror with it as without, whatever happens to it (docs/mirror.md, "Sync").

A large sync hands blocks of lines to a second process (``_mirror/parse_worker.py``).
These tests force it on small files (the thresholds and the batch size lowered)
and compare every table with a sync that parses alone: hostile lines, torn
records, secrets, long lines and an unfinished last line; a worker killed
mid-sync, one that cannot start, one that dies at start; Ctrl-C; a kill -9
of the syncing process; PostgreSQL.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_otlp, sync_to_postgres, sync_to_sqlite
from codex_logging._mirror import engine, parse_worker
from codex_logging._mirror.lines import LineParser, split_of
from codex_logging._mirror.parse_worker import ParseWorker, parse_block
from tests.conftest import db_connection
from tests.test_otlp import Receiver
from tests.test_sync_hostile import HOSTILE

ROOT = Path(__file__).resolve().parent.parent
SECRET = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"

#: Tables and their columns to compare (``updated_at`` is a time).
TABLES = {
    "session_events": "session_id, seq, ts, kind, level, logger, role, message, data",
    "session_ingest_errors": "session_id, seq, byte_offset, error, raw",
    "session_ingest_watermark": "session_id, seq, byte_offset, scanned_to, head_len,"
    " head_sha256, tail_sha256, scan_sha256",
    "session_summary": "*",
}


def writer_line(sid: str, i: int) -> bytes:
    """A line in the write path's own shape (split from its text by the sync)."""
    record = {
        "ts": 1_780_000_000.0 + i * 0.01, "session_id": sid, "kind": "message",
        "level": "WARNING" if i % 50 == 7 else "INFO", "logger": "agent.tools",
        "message": f"ran step {i} on file_{i % 13}.py", "pid": 4000 + i % 3, "role": "tool",
        "step": i, "tool": "grep",
    }  # fmt: skip
    return json.dumps(record, separators=(",", ":")).encode()


def hostile_file(sid: str, lines: int, *, deep: bool = True) -> bytes:
    """Lines of every sort a session file may hold, the hostile ones spread among writer lines.

    ``deep=False`` leaves out the lines nested 100 levels and more (an OTLP
    receiver refuses them).
    """
    odd = [
        *(line for name, line in HOSTILE.items() if deep or "deep" not in name),
        writer_line(sid, 1).replace(b'"tool":"grep"', f'"tool":"{SECRET}"'.encode()),
        writer_line(sid, 2).replace(b"ran step", b"password=hunter2 ran step"),
        json.dumps({"message": "x" * 100_000, "session_id": sid}).encode(),
        json.dumps(
            {"kind": "start", "session_id": sid, "message": "s", "nested": {"a": [1]}}
        ).encode(),
        b'{"ts": 1780000000.5, "session_id": "'
        + sid.encode()
        + b'", "kind": "end", "status": "ok"}',
        b'{"message": "torn' + writer_line(sid, 3),
    ]
    out = [odd[i // 7 % len(odd)] if i % 7 == 3 else writer_line(sid, i) for i in range(lines)]
    # An unfinished last line: a writer still writing it.
    return b"\n".join(out) + b'\n{"message": "half'


def tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the compared tables, in order."""
    with db_connection(db) as conn:
        return {
            name: conn.execute(f"SELECT {columns} FROM {name} ORDER BY 1, 2").fetchall()
            for name, columns in TABLES.items()
        }


def assert_as_alone(tmp_path: Path, folder: Path, alone: dict[str, Any]) -> None:
    """Sync ``folder`` into a new mirror: the same tables as the sync that parsed alone, no warning."""
    db = tmp_path / "worker.db"
    report = sync_to_sqlite(db, folder)
    assert tables(db) == alone
    assert report.warnings == []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    for n, lines in enumerate((1500, 40, 900)):
        sid = f"s{n}"
        (sessions / f"{sid}.ndjson").write_bytes(hostile_file(sid, lines))
    return sessions


@pytest.fixture
def alone(folder: Path, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The tables of a sync that parses alone (the sizes as shipped: no worker for these files)."""
    db = tmp_path / "alone.db"
    with pytest.MonkeyPatch.context() as patch:
        sent = spy_sends(patch)
        report = sync_to_sqlite(db, folder)
    assert sent == []
    assert report.rows_inserted > 2000
    return tables(db)


def spy_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of each block sent to a worker."""
    sent: list[int] = []
    real = ParseWorker.send

    def send(self: ParseWorker, *args: Any, **kwargs: Any) -> None:
        sent.append(len(args[3]))
        real(self, *args, **kwargs)

    monkeypatch.setattr(ParseWorker, "send", send)
    return sent


def force_worker(monkeypatch: pytest.MonkeyPatch, batch: int = 8 << 10) -> None:
    """A worker for any file, and small batches: many blocks on these small files."""
    monkeypatch.setattr(engine, "WORKER_RUN_BYTES", 0)
    monkeypatch.setattr(engine, "WORKER_FILE_BYTES", 0)
    monkeypatch.setattr(engine, "WORKER_BATCH_BYTES", batch)


class TestSameMirror:
    def test_every_table_as_without_it(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        force_worker(monkeypatch)
        sent = spy_sends(monkeypatch)
        assert_as_alone(tmp_path, folder, alone)
        assert len(sent) > 20  # the worker parsed most batches
        # The secret and the password never reached the mirror, either way.
        text = json.dumps(tables(tmp_path / "worker.db"), default=str)
        assert SECRET not in text
        assert "hunter2" not in text

    def test_appended_lines_go_on_from_the_watermark(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        force_worker(monkeypatch)
        db = tmp_path / "worker.db"
        # The first sync sees each file cut short (the writers still writing).
        whole = {path: path.read_bytes() for path in folder.iterdir()}
        for path, data in whole.items():
            path.write_bytes(data[: len(data) // 2])
        sync_to_sqlite(db, folder)
        for path, data in whole.items():
            path.write_bytes(data)
        sync_to_sqlite(db, folder)
        assert tables(db) == alone

    @pytest.mark.parametrize("share", [0.0, 1.0])
    def test_all_lines_to_one_side(
        self,
        folder: Path,
        tmp_path: Path,
        alone: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
        share: float,
    ) -> None:
        # The engine parses none of a batch, or all of it.
        force_worker(monkeypatch)
        monkeypatch.setattr(engine._Balance, "own", lambda _self, size, _before: int(size * share))
        sent = spy_sends(monkeypatch)
        assert_as_alone(tmp_path, folder, alone)
        assert (sent == []) == (share == 1.0)

    @pytest.mark.parametrize("why", ["small pipes", "pipe size unknown"])
    def test_one_block_in_flight(
        self,
        folder: Path,
        tmp_path: Path,
        alone: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
        why: str,
    ) -> None:
        # Pipes that hold less than two blocks, or whose size the system
        # does not tell (not Linux): one block at a time.
        if why == "small pipes":
            force_worker(monkeypatch, batch=1 << 20)
        else:
            force_worker(monkeypatch)
            monkeypatch.setattr(parse_worker, "_F_GETPIPE_SZ", None)
        depths = []
        real = ParseWorker.__init__

        def init(self: ParseWorker, **kwargs: Any) -> None:
            real(self, **kwargs)
            depths.append(self.depth)

        monkeypatch.setattr(ParseWorker, "__init__", init)
        assert_as_alone(tmp_path, folder, alone)
        assert depths == [1]

    @pytest.mark.parametrize(
        "length", [50_000, engine.LONG_LINE_BYTES + 10], ids=["50 KB", "8 MiB"]
    )
    def test_a_line_longer_than_a_batch_goes_to_the_engine(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: int
    ) -> None:
        # Parsed by the engine (50 KB: a batch of its own; 8 MiB: its own
        # reader, as without a worker); the worker goes on after it.
        sessions = tmp_path / "sessions"
        sessions.mkdir()
        lines = [writer_line("s", i) for i in range(300)]
        lines[150] = json.dumps({"message": "y" * length}).encode()
        (sessions / "s.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        expected = tables_of_sync(sessions, tmp_path / "alone.db")
        force_worker(monkeypatch, batch=4 << 10)
        sent: list[tuple[int, int]] = []
        real = ParseWorker.send

        def send(self: ParseWorker, *args: Any, **kwargs: Any) -> None:
            sent.append((args[1], len(args[3])))  # the seq before the block, its size
            real(self, *args, **kwargs)

        monkeypatch.setattr(ParseWorker, "send", send)
        assert tables_of_sync(sessions, tmp_path / "worker.db") == expected
        assert max(size for _seq, size in sent) <= 4 << 10  # never the long line
        assert any(seq < 150 for seq, _size in sent)
        assert any(seq > 151 for seq, _size in sent)

    def test_lines_longer_than_a_batch_commit_one_by_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Each 1 MiB record is a batch of its own: memory follows the line.
        sessions = tmp_path / "sessions"
        sessions.mkdir()
        with (sessions / "big.ndjson").open("wb") as f:
            for i in range(12):
                f.write(json.dumps({"message": f"m{i}", "pad": "x" * (1 << 20)}).encode() + b"\n")
        sent = spy_sends(monkeypatch)
        seen: list[int] = []
        sync_to_sqlite(
            tmp_path / "x.db", sessions, progress=lambda _s, r: seen.append(r.rows_inserted)
        )
        assert seen == list(range(1, 13))
        assert sent == []  # a block that large is never sent


def tables_of_sync(sessions: Path, db: Path) -> dict[str, list[tuple[Any, ...]]]:
    sync_to_sqlite(db, sessions)
    return tables(db)


class TestAsThisProcessParses:
    """The worker parses as the syncing process would: its limits, its path, its descriptors."""

    def test_raised_limits_are_the_worker_s_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A program that raised the recursion limit and lifted the integer
        # digits limit: lines nested 1,500 deep and 5,000-digit integers are
        # events for it, on either side of a batch.
        limit, digits = sys.getrecursionlimit(), sys.get_int_max_str_digits()
        sys.setrecursionlimit(20_000)
        sys.set_int_max_str_digits(0)
        try:
            sessions = tmp_path / "sessions"
            sessions.mkdir()
            odd = [
                b'{"message": ' + b"[" * 1500 + b"]" * 1500 + b"}",
                b'{"n": ' + b"7" * 5000 + b"}",
            ]
            lines = [odd[i % 2] if i % 5 == 2 else writer_line("s", i) for i in range(1200)]
            (sessions / "s.ndjson").write_bytes(b"\n".join(lines) + b"\n")
            expected = tables_of_sync(sessions, tmp_path / "alone.db")
            assert expected["session_ingest_errors"] == []
            force_worker(monkeypatch, batch=4 << 10)
            sent = spy_sends(monkeypatch)
            assert tables_of_sync(sessions, tmp_path / "worker.db") == expected
            assert len(sent) > 20
        finally:
            sys.setrecursionlimit(limit)
            sys.set_int_max_str_digits(digits)

    def test_a_module_path_with_paths_of_every_kind(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Programs put Path objects, bytes and even other objects on sys.path.
        weird = [tmp_path, os.fsencode(tmp_path / "b\udcff"), tmp_path / "ü", None]
        monkeypatch.setattr(sys, "path", [*sys.path, *weird])
        force_worker(monkeypatch)
        sent = spy_sends(monkeypatch)
        assert_as_alone(tmp_path, folder, alone)
        assert len(sent) > 20

    def test_a_worker_that_parses_otherwise_is_not_used(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Say orjson were found here and not there (another module path).
        force_worker(monkeypatch)
        real = parse_worker.parse_state
        monkeypatch.setattr(parse_worker, "parse_state", lambda: (not real()[0], *real()[1:]))
        sent = spy_sends(monkeypatch)
        assert_as_alone(tmp_path, folder, alone)
        assert sent == []

    def test_descriptors_past_1024(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"this process may open {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        try:
            force_worker(monkeypatch)
            sent = spy_sends(monkeypatch)
            assert_as_alone(tmp_path, folder, alone)
            assert len(sent) > 20
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_after_a_line_pending_since_the_last_sync(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The first sync ends in a line still being written; the next one
        # takes that line and the many after it with the worker.
        whole = {path: path.read_bytes() for path in folder.iterdir()}
        for path, data in whole.items():
            cut = data.index(b"\n", len(data) // 3) + 20  # inside a line
            path.write_bytes(data[:cut])
        db = tmp_path / "worker.db"
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM session_ingest_watermark WHERE scanned_to > byte_offset"
            ).fetchone()[0]
        assert pending == 3
        for path, data in whole.items():
            path.write_bytes(data)
        force_worker(monkeypatch)
        sent = spy_sends(monkeypatch)
        sync_to_sqlite(db, folder)
        assert tables(db) == alone
        assert len(sent) > 10


class TestWorkerTrouble:
    def test_killed_mid_sync(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        force_worker(monkeypatch)
        real = ParseWorker.send
        pids = []

        def send(self: ParseWorker, *args: Any, **kwargs: Any) -> None:
            pids.append(self._process.pid)
            if len(pids) == 10:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait()
            real(self, *args, **kwargs)

        monkeypatch.setattr(ParseWorker, "send", send)
        assert_as_alone(tmp_path, folder, alone)
        assert len(set(pids)) == 1  # not started again in the same sync

    def test_stopped_mid_sync(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker stopped (SIGSTOP) is taken for hung: the sync goes on alone, the worker is ended."""
        force_worker(monkeypatch)
        monkeypatch.setattr(parse_worker, "ANSWER_SECONDS", 0.5)
        real = ParseWorker.send
        workers = []

        def send(self: ParseWorker, *args: Any, **kwargs: Any) -> None:
            workers.append(self)
            if len(workers) == 10:
                os.kill(self._process.pid, signal.SIGSTOP)
            real(self, *args, **kwargs)

        monkeypatch.setattr(ParseWorker, "send", send)
        started = time.monotonic()
        assert_as_alone(tmp_path, folder, alone)
        assert time.monotonic() - started < 10
        assert len(set(workers)) == 1
        assert workers[0]._process.returncode == -signal.SIGKILL

    def test_no_interpreter_to_start(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        force_worker(monkeypatch)
        sent = spy_sends(monkeypatch)
        # Empty, missing, or a program that embeds Python (never started).
        uwsgi = tmp_path / "uwsgi"
        uwsgi.write_text(f"#!/bin/sh\ntouch {tmp_path / 'started'}\n")
        uwsgi.chmod(0o755)
        for executable in ("", str(tmp_path / "python3-missing"), str(uwsgi)):
            monkeypatch.setattr(sys, "executable", executable)
            db = tmp_path / f"worker{len(executable)}.db"
            sync_to_sqlite(db, folder)
            assert tables(db) == alone
        assert sent == []
        assert not (tmp_path / "started").exists()

    @pytest.mark.parametrize(
        "child",
        [
            # Starts, then announces an answer of a TiB.
            "start(); read(); out.write(HEADER.pack(0.0, 1 << 40)); out.flush(); read()",
            # Starts, then answers what is no rows.
            "start(); read(); answer(pickle.dumps('rows')); read()",
            # A start frame whose state is no pickle.
            "out.write(HEADER.pack(0.0, 4) + b'junk'); out.flush(); read()",
            # Never starts, and does not end when told to.
            "import time; time.sleep(30)",
            # Ends at once.
            "sys.exit(3)",
            # Writes what is not the start signal.
            "out.write(b'not the start of a worker, this'); out.flush(); read()",
            # Takes a block, then neither answers nor ends.
            "start(); read(); time.sleep(30)",
            # Stops halfway through an answer.
            "start(); read(); out.write(HEADER.pack(0.0, 99) + b'x'); out.flush(); time.sleep(30)",
            # Reads nothing, through a pipe too small for a block.
            "fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 4096); start(); time.sleep(30)",
        ],
        ids=[
            "huge answer",
            "not rows",
            "garbled start",
            "no start",
            "ends",
            "babbles",
            "hangs",
            "hangs mid-answer",
            "takes no block",
        ],
    )
    def test_misbehaves(
        self,
        folder: Path,
        tmp_path: Path,
        alone: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
        child: str,
    ) -> None:
        force_worker(monkeypatch)
        monkeypatch.setattr(parse_worker, "START_SECONDS", 0.5)
        monkeypatch.setattr(parse_worker, "CLOSE_SECONDS", 0.2)
        monkeypatch.setattr(parse_worker, "ANSWER_SECONDS", 0.5)
        monkeypatch.setattr(parse_worker, "_CHILD", MISBEHAVING.format(child=child))
        started = time.monotonic()
        assert_as_alone(tmp_path, folder, alone)
        assert time.monotonic() - started < 10

    def test_garbled_answer(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        force_worker(monkeypatch)
        real = ParseWorker._read
        calls = []

        def read(self: ParseWorker, length: int) -> bytearray:
            data = real(self, length)
            calls.append(length)
            if len(calls) == 12 and length > 16:  # the pickle of an answer
                data[len(data) // 2 :] = b"\x00" * (len(data) - len(data) // 2)
            return data

        monkeypatch.setattr(ParseWorker, "_read", read)
        assert_as_alone(tmp_path, folder, alone)

    def test_ctrl_c_ends_the_worker(
        self, folder: Path, tmp_path: Path, alone: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        force_worker(monkeypatch)
        workers: list[ParseWorker] = []
        real_init, real_commit = ParseWorker.__init__, engine._FileSync._commit_batch

        def init(self: ParseWorker, **kwargs: Any) -> None:
            real_init(self, **kwargs)
            workers.append(self)

        commits = []

        def commit(self: engine._FileSync, *args: Any) -> None:
            commits.append(1)
            if len(commits) == 5:
                raise KeyboardInterrupt
            real_commit(self, *args)

        monkeypatch.setattr(ParseWorker, "__init__", init)
        monkeypatch.setattr(engine._FileSync, "_commit_batch", commit)
        db = tmp_path / "worker.db"
        with pytest.raises(KeyboardInterrupt):
            sync_to_sqlite(db, folder)
        (worker,) = workers
        assert worker._process.poll() is not None  # ended, and waited for
        with db_connection(db) as conn:
            assert conn.execute("SELECT count(*) FROM session_events").fetchone()[0] > 0
        monkeypatch.setattr(engine._FileSync, "_commit_batch", real_commit)
        sync_to_sqlite(db, folder)
        assert tables(db) == alone


#: A child that speaks the protocol, then does what the test says.
MISBEHAVING = """
import fcntl, json, os, pickle, sys, time
paths, recursion, digits = json.loads(sys.argv[1])
sys.path[:] = paths
from codex_logging._mirror.parse_worker import _HEADER as HEADER, parse_state
out = os.fdopen(1, "wb")
source = os.fdopen(0, "rb")
def read():
    return pickle.load(source)
def answer(data):
    out.write(HEADER.pack(0.0, len(data)) + data)
    out.flush()
def start():
    answer(pickle.dumps(parse_state()))
{child}
"""

KILLED_SYNC = """
import os, sys
from codex_logging import sync_to_otlp, sync_to_postgres, sync_to_sqlite
from codex_logging._mirror import engine, parse_worker
engine.WORKER_RUN_BYTES = engine.WORKER_FILE_BYTES = 0
engine.WORKER_BATCH_BYTES = 8 << 10
real_init, real_commit = parse_worker.ParseWorker.__init__, engine._FileSync._commit
def init(self, **kwargs):
    real_init(self, **kwargs)
    print(self._process.pid, flush=True)
commits = []
def commit(self, *args):
    real_commit(self, *args)
    commits.append(1)
    if len(commits) == 12:
        print("committed", flush=True)
        sys.stdin.read()  # killed here, the worker with a block in hand
parse_worker.ParseWorker.__init__ = init
engine._FileSync._commit = commit
sync_to_sqlite(sys.argv[1], sys.argv[2])
"""


def test_kill_9_of_the_sync_then_again(folder: Path, tmp_path: Path, alone: dict[str, Any]) -> None:
    db = tmp_path / "worker.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, str(db), str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    ) as sync:  # fmt: skip
        assert sync.stdout is not None
        worker_pid = int(sync.stdout.readline())
        assert sync.stdout.readline() == "committed\n"
        sync.kill()
        sync.wait()
    # The worker ends with the process that started it (its stdin closes).
    deadline = time.monotonic() + 10
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker_pid)
    with db_connection(db) as conn:
        assert conn.execute("SELECT count(*) FROM session_events").fetchone()[0] > 0
    sync_to_sqlite(db, folder)
    assert tables(db) == alone


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


class TestParseBlock:
    """The worker's own function, run here: the rows the engine makes itself."""

    def test_rows_as_the_engine_makes_them(self) -> None:
        block = hostile_file("s", 400).rsplit(b"\n", 1)[0] + b"\n"
        ours = LineParser()
        events: list[Any] = []
        errors: list[Any] = []
        offsets: list[int] = []
        at, seq = 0, 10
        for line in block.split(b"\n")[:-1]:
            seq += 1
            taken = ours.take("s", seq, 500 + at, line, events, errors)
            if taken >= 0:
                offsets.append(taken)
            at += len(line) + 1
        ours.settle(events)
        lean = parse_block(LineParser(), "s", 10, 500, block)
        assert lean[1:] == (errors, offsets)
        # Lean rows: no record, and the compact values of every row, made
        # before the pickle (the split compares text objects by identity).
        assert [row[9] for row in lean[0]] == [None] * len(events)
        assert [row[:9] for row in lean[0]] == [row[:9] for row in events]
        values = [row[10] or (*row[1:8], *split_of(row)) for row in events]
        assert [row[10] for row in pickle.loads(pickle.dumps(lean[0]))] == values
        assert sum(row[10] is None for row in events) > 20  # rows the engine splits at commit


@pytest.mark.parametrize("target", ["postgres", "otlp"])
def test_no_worker_for_a_server_s_target(
    folder: Path, target: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's server and an OTLP receiver do much of a sync's work: on
    # the syncing machine they need the other processor (docs/mirror.md).
    force_worker(monkeypatch)
    sent = spy_sends(monkeypatch)
    if target == "postgres":
        report = sync_to_postgres(request.getfixturevalue("pg_url"), folder)
    else:
        # Without the lines nested 100 levels deep, which a receiver refuses.
        for path in folder.iterdir():
            path.write_bytes(hostile_file(path.stem, 1500, deep=False))
        receiver = Receiver()
        try:
            report = sync_to_otlp(receiver.url, folder)
        finally:
            receiver.close()
    assert report.rows_inserted > 0
    assert sent == []
