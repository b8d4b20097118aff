"""The sync engine: the folder identity (source_id), its checks, a pipelined target."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from codex_logging import SourceIdError, sync_to_sqlite
from codex_logging._errors import DatabaseError
from codex_logging._mirror import engine as _ingest
from codex_logging._mirror.engine import _TIMESLICES, BATCH_LINES, _ShortTimeslices, run_sync
from codex_logging._mirror.lines import LineParser
from codex_logging._mirror.target import (
    SOURCE_ID_FILE,
    Batch,
    SyncReport,
    Watermark,
    WatermarkMovedError,
    source_id,
)

BIN = Path(sys.executable).parent


class TestSourceId:
    def test_created_once_private_and_read_back(self, tmp_path: Path) -> None:
        """The id is a UUID kept in the folder (0600), the same on every call."""
        first = source_id(str(tmp_path))
        assert len(first) == 36
        assert first.count("-") == 4
        assert source_id(str(tmp_path)) == first
        path = tmp_path / SOURCE_ID_FILE
        assert path.read_text() == first + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_environment_overrides(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """CODEX_SOURCE_ID is used as it is, and no file is created."""
        monkeypatch.setenv("CODEX_SOURCE_ID", "build-host-1")
        assert source_id(str(tmp_path)) == "build-host-1"
        assert not (tmp_path / SOURCE_ID_FILE).exists()

    def test_racing_callers_agree(self, tmp_path: Path) -> None:
        """Eight threads asking at once for a new folder's id all get the same one."""
        got: list[str] = []
        start = threading.Barrier(8)

        def ask() -> None:
            start.wait()
            got.append(source_id(str(tmp_path)))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 8
        assert len(set(got)) == 1

    def test_unwritable_folder_falls_back_to_its_identity(self, tmp_path: Path) -> None:
        """A folder where the id file cannot be created is identified by (dev, ino)."""
        folder = tmp_path / "ro"
        folder.mkdir()
        (folder / SOURCE_ID_FILE).mkdir()  # occupied by a folder: cannot be read or created
        info = os.stat(folder)
        assert source_id(str(folder)) == f"dev-{info.st_dev}-ino-{info.st_ino}"


class TestFolderChecks:
    def test_empty_id_file_falls_back_to_identity(self, tmp_path: Path) -> None:
        """An empty .codex-source-id (written by hand) is not an id: the folder's identity is used."""
        (tmp_path / SOURCE_ID_FILE).write_text("")
        info = os.stat(tmp_path)
        assert source_id(str(tmp_path)) == f"dev-{info.st_dev}-ino-{info.st_ino}"


class TestFullDisk:
    """The id file on a full disk: a named error, one line from the CLI, nothing left behind."""

    def test_id_file_on_a_full_disk(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """ENOSPC while writing the id file: SourceIdError (an OSError), nothing half-made."""
        sessions = tmp_path / "sessions"
        sessions.mkdir()
        (sessions / "s.ndjson").write_text('{"message": "m"}\n')

        class Full(io.FileIO):
            def write(self, _data: Any) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fdopen", lambda fd, *_a, **_k: Full(fd, "w"))
        with pytest.raises(SourceIdError, match="No space left on device") as caught:
            sync_to_sqlite(tmp_path / "x.db", sessions)
        assert caught.value.errno == errno.ENOSPC
        assert sorted(p.name for p in sessions.iterdir()) == ["s.ndjson"]
        monkeypatch.undo()
        assert sync_to_sqlite(tmp_path / "x.db", sessions).rows_inserted == 1

    def test_cli_on_a_full_filesystem(self, tmp_path: Path) -> None:
        """`sync` in a sessions folder on a full filesystem: one line, exit 2 (a real tmpfs)."""
        mount = tmp_path / "small"
        mount.mkdir()
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
            capture_output=True,
            check=False,
        )
        if made.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here")
        try:
            folder = mount / "sessions"
            folder.mkdir()
            (folder / "s.ndjson").write_text('{"message": "m"}\n')
            fill(mount / "filler")
            result = subprocess.run(
                [
                    str(BIN / "codex-logs"),
                    "sync",
                    "--db",
                    str(tmp_path / "x.db"),
                    "--sessions-dir",
                    str(folder),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert "No space left on device" in result.stderr
            assert "Traceback" not in result.stderr
            assert sorted(p.name for p in folder.iterdir()) == ["s.ndjson"]
        finally:
            subprocess.run(["umount", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until its filesystem is full."""
    with path.open("wb", buffering=0) as f, pytest.raises(OSError) as full:  # noqa: PT012 - until full
        while True:
            f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC


class _PipelinedTarget:
    """An in-memory target whose commits run in the engine's worker thread.

    It logs when each commit starts and ends (and the parser logs each line
    it takes, see ``log_takes``), checks that two commits never overlap, and
    can be told to fail the nth commit.
    """

    pipelined = True
    parse_worker = False

    def __init__(
        self, log: list[tuple[str, int]], fail_at: int = 0, error: Exception | None = None
    ):
        self.name = "memory"
        self.log = log
        self.fail_at, self.error = fail_at, error
        self.marks: dict[str, Watermark] = {}
        self.rows: list[int] = []
        self.threads: set[int] = set()
        self.intervals: set[float] = set()
        self.calls = 0
        self.cancelled = 0
        self._busy = threading.Lock()
        self.path: Path | None = None  # if set: is this file locked as each commit ends?
        self.file_locked: list[bool] = []

    def settled_files(self, source_id: str) -> dict[str, tuple[str, int, int, int, float]]:
        return {}

    def open_source(self, folder: str) -> str:
        return source_id(folder)

    def read_watermark(self, session_id: str) -> Watermark | None:
        return self.marks.get(session_id)

    def same_file(self, source: str, dev: int, ino: int) -> list[tuple[str, Watermark]]:
        return [(sid, m) for sid, m in self.marks.items() if (m.file_dev, m.file_ino) == (dev, ino)]

    def commit(self, batch: Batch) -> int:
        session_id, mark = batch.session_id, batch.mark
        assert self._busy.acquire(blocking=False), "two commits at once"
        try:
            self.calls += 1
            self.threads.add(threading.get_ident())
            self.intervals.add(sys.getswitchinterval())
            self.log.append(("commit-start", mark.seq))
            time.sleep(0.05)  # the reading thread goes on meanwhile
            if self.calls == self.fail_at:
                assert self.error is not None
                raise self.error
            stored = self.marks.get(session_id, Watermark())
            assert stored.seq == batch.expected_seq
            self.rows.extend(row[1] for row in batch.events)
            self.marks[session_id] = mark
            self.log.append(("commit-end", mark.seq))
            if self.path is not None:
                self.file_locked.append(_is_locked(self.path))
            return len(batch.events)
        finally:
            self._busy.release()

    def cancel(self) -> None:
        self.cancelled += 1

    def close(self) -> None:
        pass


def _is_locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it a lock it took
    return False


def _log_takes(monkeypatch: pytest.MonkeyPatch, log: list[tuple[str, int]]) -> None:
    take, take_text = LineParser.take, LineParser.take_text

    def logged_take(self: LineParser, sid: str, seq: int, *args: Any) -> int:
        log.append(("take", seq))
        return take(self, sid, seq, *args)

    def logged_take_text(self: LineParser, sid: str, seq: int, *args: Any) -> int:
        log.append(("take", seq))
        return take_text(self, sid, seq, *args)

    monkeypatch.setattr(LineParser, "take", logged_take)
    monkeypatch.setattr(LineParser, "take_text", logged_take_text)


def _fail_take_at(monkeypatch: pytest.MonkeyPatch, at: int, error: BaseException) -> None:
    # The reading thread fails on line ``at`` (batch 2 when at > BATCH_LINES).
    take = LineParser.take

    def failing(self: LineParser, sid: str, seq: int, *args: Any) -> int:
        if seq == at:
            raise error
        return take(self, sid, seq, *args)

    monkeypatch.setattr(LineParser, "take", failing)


def _write_session(folder: Path, lines: int, long_at: int = 0, long_bytes: int = 0) -> None:
    with (folder / "s1.ndjson").open("w") as f:
        for i in range(1, lines + 1):
            text = "x" * long_bytes if i == long_at else f"step {i}"
            f.write(
                json.dumps({"ts": 1.0 + i, "session_id": "s1", "kind": "message", "message": text})
            )
            f.write("\n")


class TestPipelinedTarget:
    """A pipelined target (PostgreSQL's) commits a batch while the next is read."""

    def test_next_batch_read_while_one_commits_never_two_commits_at_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Lines of batch 2 are taken before batch 1's commit ends; commits stay in order."""
        _write_session(tmp_path, 2 * BATCH_LINES + 10)
        log: list[tuple[str, int]] = []
        _log_takes(monkeypatch, log)
        target = _PipelinedTarget(log)
        seen: list[int] = []
        before = sys.getswitchinterval()
        report = run_sync(
            target,
            str(tmp_path),
            busy_timeout=1.0,
            progress=lambda _sid, r: seen.append(r.rows_inserted),
        )
        assert target.rows == list(range(1, 2 * BATCH_LINES + 11))
        assert report.rows_inserted == 2 * BATCH_LINES + 10
        assert report.bytes_read == (tmp_path / "s1.ndjson").stat().st_size
        assert seen == [BATCH_LINES, 2 * BATCH_LINES, 2 * BATCH_LINES + 10]
        assert threading.get_ident() not in target.threads
        # Overlap: the reading thread took line 5001 onwards while batch 1 committed.
        assert log.index(("take", BATCH_LINES + 1)) < log.index(("commit-end", BATCH_LINES))
        # ... but batch 2 was sent only once batch 1 had committed.
        assert log.index(("commit-end", BATCH_LINES)) < log.index(("commit-start", 2 * BATCH_LINES))
        assert [round(i, 9) for i in target.intervals] == [_ShortTimeslices.INTERVAL]
        assert sys.getswitchinterval() == before

    def test_a_long_lines_batch_is_committed_before_reading_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Sync memory ~2x the longest line: no batch is read beside a long line's batch."""
        # As in a real sync, a long line fills a batch alone: both at 1 MiB.
        monkeypatch.setattr(_ingest, "LONG_LINE_BYTES", 1 << 20)
        monkeypatch.setattr(_ingest, "BATCH_BYTES", 1 << 20)
        _write_session(tmp_path, 40, long_at=20, long_bytes=2 << 20)
        log: list[tuple[str, int]] = []
        _log_takes(monkeypatch, log)
        target = _PipelinedTarget(log)
        report = run_sync(target, str(tmp_path), busy_timeout=1.0)
        assert report.rows_inserted == 40
        assert target.rows == list(range(1, 41))
        # Lines 1-19 committed before the long line was read, which committed
        # alone before line 21 was taken.
        assert log.index(("commit-end", 19)) < log.index(("take", 20))
        assert log.index(("commit-end", 20)) < log.index(("take", 21))

    def test_a_moved_watermark_stops_the_file_after_the_batch_in_flight(
        self, tmp_path: Path
    ) -> None:
        """The batch read meanwhile is dropped: the report counts what committed only."""
        _write_session(tmp_path, 3 * BATCH_LINES)
        target = _PipelinedTarget([], fail_at=2, error=WatermarkMovedError("moved"))
        report = run_sync(target, str(tmp_path), busy_timeout=1.0)
        assert target.calls == 2  # batch 3 was never sent
        assert target.rows == list(range(1, BATCH_LINES + 1))
        assert report.rows_inserted == BATCH_LINES
        assert any("another sync moved its watermark" in w for w in report.warnings)

    def test_an_error_in_flight_raises_unlocks_and_restores_the_interval(
        self, tmp_path: Path
    ) -> None:
        """A database error of a batch in flight is raised by the sync, as it was."""
        _write_session(tmp_path, 2 * BATCH_LINES)
        before = sys.getswitchinterval()
        target = _PipelinedTarget([], fail_at=1, error=DatabaseError("server went away"))
        with pytest.raises(DatabaseError, match="server went away"):
            run_sync(target, str(tmp_path), busy_timeout=1.0)
        assert sys.getswitchinterval() == before
        # The file's lock was released: the next sync takes it at once.
        target.fail_at = 0
        report = run_sync(target, str(tmp_path), busy_timeout=0.1)
        assert report.rows_inserted == 2 * BATCH_LINES
        assert report.warnings == []

    def test_the_file_stays_locked_until_the_batch_in_flight_ends(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Interrupted while reading batch 2, the sync unlocks only after batch 1 is done."""
        _write_session(tmp_path, 2 * BATCH_LINES)
        _fail_take_at(monkeypatch, BATCH_LINES + 100, KeyboardInterrupt())
        target = _PipelinedTarget([])
        target.path = tmp_path / "s1.ndjson"
        with pytest.raises(KeyboardInterrupt):
            run_sync(target, str(tmp_path), busy_timeout=1.0)
        assert target.rows == list(range(1, BATCH_LINES + 1))
        assert target.file_locked == [True]
        assert target.cancelled == 1  # asked to stop the commit it was waiting on

    def test_a_read_error_still_accounts_for_the_batch_in_flight(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The file fails to read while batch 1 commits: batch 1 is stored, and reported."""
        _write_session(tmp_path, 2 * BATCH_LINES)
        _fail_take_at(monkeypatch, BATCH_LINES + 100, OSError(5, "Input/output error"))
        target = _PipelinedTarget([])
        seen: list[int] = []
        report = run_sync(
            target,
            str(tmp_path),
            busy_timeout=1.0,
            progress=lambda _s, r: seen.append(r.rows_inserted),
        )
        assert target.rows == list(range(1, BATCH_LINES + 1))
        assert target.cancelled == 0  # a read error lets the batch in flight commit
        assert (report.rows_inserted, seen) == (BATCH_LINES, [BATCH_LINES])
        assert report.warnings == [
            "s1: skipped, cannot read " + str(tmp_path / "s1.ndjson") + ": Input/output error"
        ]

    def test_a_sync_run_at_exit_commits_without_the_worker(self, tmp_path: Path) -> None:
        """From atexit no thread can start: the batches commit in the syncing thread."""
        _write_session(tmp_path, BATCH_LINES + 10)
        script = (
            "import atexit, threading\n"
            "from codex_logging._mirror.engine import run_sync\n"
            "from tests.test_ingest import _PipelinedTarget\n"
            "def at_exit():\n"
            "    target = _PipelinedTarget([])\n"
            f"    report = run_sync(target, {str(tmp_path)!r}, busy_timeout=1.0)\n"
            "    print(report.rows_inserted, len(target.rows), threading.get_ident() in target.threads)\n"
            "atexit.register(at_exit)\n"
        )
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(BATCH_LINES + 10)] * 2 + ["True"]

    def test_syncs_in_threads_restore_the_interval_when_the_last_ends(self, tmp_path: Path) -> None:
        """The interval is process-wide: counted, restored when no sync runs any more."""
        before = sys.getswitchinterval()
        folders = []
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
            _write_session(tmp_path / name, BATCH_LINES + 1)
            folders.append(str(tmp_path / name))
        start = threading.Barrier(3)
        reports: list[SyncReport] = []

        def sync(folder: str) -> None:
            start.wait()
            reports.append(run_sync(_PipelinedTarget([]), folder, busy_timeout=1.0))

        threads = [threading.Thread(target=sync, args=(f,)) for f in folders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.rows_inserted for r in reports] == [BATCH_LINES + 1] * 3
        assert sys.getswitchinterval() == before


class TestShortTimeslices:
    def test_a_programs_own_interval_is_kept(self) -> None:
        """Set by the program while a sync ran, the interval is not put back over it."""
        before = sys.getswitchinterval()
        slices = _ShortTimeslices()
        try:
            with slices:
                sys.setswitchinterval(0.01)
            assert sys.getswitchinterval() == pytest.approx(0.01)
        finally:
            sys.setswitchinterval(before)

    def test_a_child_forked_mid_sync_gets_the_old_interval(self) -> None:
        before = sys.getswitchinterval()
        with _TIMESLICES:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os.write(write, repr(sys.getswitchinterval()).encode())
                os._exit(0)
            os.close(write)
            got = float(os.read(read, 100))
            os.close(read)
            os.waitpid(pid, 0)
            assert sys.getswitchinterval() == pytest.approx(_ShortTimeslices.INTERVAL)
        assert got == pytest.approx(before)
        assert sys.getswitchinterval() == pytest.approx(before)
