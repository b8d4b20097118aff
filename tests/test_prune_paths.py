"""codex-logs prune off its main path: files set aside by a killed prune, odd paths, interruptions."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import portalocker
import pytest

from codex_logging import sync_to_sqlite
from codex_logging._mirror import prune as _prune
from tests.test_prune import DAY, count, old_session, prune


def _aside(folder: Path, sid: str, data: bytes, size: int) -> Path:
    path = folder / f".{sid}.ndjson.retiring-{size}"
    path.write_bytes(data)
    return path


class TestRecover:
    def test_files_left_aside_by_a_killed_prune(self, setup_db: tuple[Path, Path]) -> None:
        """A fresh one waits, a grown one's tail goes to the new file or is kept."""
        db, folder = setup_db
        blocked = _aside(folder, "blocked", b"abcdef", 3)
        (folder / "blocked.ndjson").mkdir()
        grown = _aside(folder, "grown", b'{"a":1}\n{"tail"', 8)
        (folder / "grown.ndjson").write_bytes(b'{"new":1}\n')
        time.sleep(_prune.ASIDE_SECONDS + 0.1)  # older than a prune running now could have made
        fresh = _aside(folder, "fresh", b"abc", 3)
        report = prune(db, folder, older_than=50 * DAY)
        assert report.retired == []
        assert report.kept == [("blocked", f"cannot finish {blocked}: Is a directory")]
        assert fresh.read_bytes() == b"abc"
        assert blocked.read_bytes() == b"abcdef"
        assert not grown.exists()
        # The tail appended after the checked size is a line of its own in the file now there.
        assert (folder / "grown.ndjson").read_bytes() == b'{"new":1}\n{"tail"\n'

    def test_a_file_another_prune_is_finishing_is_passed_at_once(
        self, setup_db: tuple[Path, Path]
    ) -> None:
        """Locked by another prune: left to it, without waiting for the lock."""
        db, folder = setup_db
        busy = _aside(folder, "busy", b'{"a":1}\n', 8)
        time.sleep(_prune.ASIDE_SECONDS + 0.1)
        with portalocker.Lock(busy, mode="rb", flags=portalocker.LockFlags.EXCLUSIVE):
            started = time.monotonic()
            report = prune(db, folder, older_than=50 * DAY)
            waited = time.monotonic() - started
        assert report.kept == []
        assert busy.read_bytes() == b'{"a":1}\n'
        assert waited < 4  # portalocker's default is 5 s of retries

    def test_a_folder_removed_after_its_sync(self, setup_db: tuple[Path, Path]) -> None:
        """No folder: nothing to recover, no file to delete; --rows still retires the rows."""
        db, folder = setup_db
        shutil.rmtree(folder)
        report = prune(db, folder, older_than=DAY)
        assert (report.retired, report.kept, report.rows_deleted) == ([], [], 0)
        assert count(db) == 4
        report = prune(db, folder, older_than=DAY, rows=True)
        assert (report.retired, report.files_deleted, report.rows_deleted) == (["old"], 0, 4)
        assert count(db) == 0


class TestOddFiles:
    def test_a_folder_at_the_session_path_is_kept(self, setup_db: tuple[Path, Path]) -> None:
        db, folder = setup_db
        path = folder / "old.ndjson"
        path.unlink()
        path.mkdir()
        report = prune(db, folder, older_than=DAY)
        assert report.retired == []
        assert report.kept == [("old", f"cannot read {path}: Is a directory")]
        assert path.is_dir()

    def test_more_lines_than_the_mirror_has(self, tmp_path: Path) -> None:
        """A line split in place (same size, inode and head): the counts disagree, the file stays."""
        folder = tmp_path / "s"
        path = old_session(folder, "old", lines=200)
        db = tmp_path / "m.db"
        sync_to_sqlite(db, folder)
        info = path.stat()
        data = path.read_bytes()
        cut = data.index(b'"m190"')  # past the first 4096 bytes the watermark hashes
        with path.open("r+b") as f:
            f.seek(cut)
            f.write(b"\n")
        os.utime(path, (info.st_mtime, info.st_mtime))
        report = prune(db, folder, older_than=DAY)
        assert report.kept == [
            ("old", "its rows do not match its file (203 lines, the mirror has 202)")
        ]
        assert path.exists()

    def test_a_line_longer_than_a_read(self, tmp_path: Path) -> None:
        """A line over the 1 MiB read is joined from its pieces and matches its row."""
        folder = tmp_path / "s"
        path = old_session(folder, "big")
        info = path.stat()
        lines = path.read_bytes().split(b"\n")
        lines[1] = lines[1][:-1] + b', "blob": "' + b"x" * (_prune._READ_BYTES + 10) + b'"}'
        path.write_bytes(b"\n".join(lines))
        os.utime(path, (info.st_mtime, info.st_mtime))
        db = tmp_path / "m.db"
        sync_to_sqlite(db, folder)
        report = prune(db, folder, older_than=DAY)
        assert (report.retired, report.kept) == (["big"], [])
        assert not path.exists()


class TestInterrupted:
    def test_a_file_replaced_while_set_aside_is_kept(self, setup_db: tuple[Path, Path]) -> None:
        """The file set aside is swapped for another before the unlink: that one is left alone."""
        db, folder = setup_db
        done = threading.Event()

        def swap() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for p in folder.glob(".old.ndjson.retiring-*"):
                    p.unlink()
                    p.write_bytes(b"someone else's\n")
                    done.set()
                    return
                time.sleep(0.005)

        thread = threading.Thread(target=swap)
        thread.start()
        try:
            report = prune(db, folder, older_than=DAY)
        finally:
            thread.join()
        assert done.is_set()
        (aside,) = folder.glob(".old.ndjson.retiring-*")
        assert report.retired == []
        assert report.kept == [
            ("old", f"cannot finish {aside}: {aside} is no longer the file that was set aside")
        ]
        assert aside.read_bytes() == b"someone else's\n"

    def test_interrupted_while_waiting_leaves_the_file_aside_unlocked(
        self, setup_db: tuple[Path, Path]
    ) -> None:
        db, folder = setup_db

        class Interrupted(Exception):  # noqa: N818 - as KeyboardInterrupt
            pass

        def on_alarm(_signum: int, frame: FrameType | None) -> None:
            # Only during the wait: interrupted before it (the file set aside,
            # the wait not begun), prune waits and finishes the file instead.
            if frame is not None and frame.f_code is _prune._Retire.settle.__code__:
                raise Interrupted
            signal.setitimer(signal.ITIMER_REAL, 0.02)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            with pytest.raises(Interrupted):
                prune(db, folder, older_than=DAY, rows=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        (aside,) = folder.glob(".old.ndjson.retiring-*")
        lock = portalocker.Lock(
            aside,
            mode="rb",
            flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
        )
        lock.acquire()  # released: the next prune can finish it
        lock.release()
        assert count(db) == 4  # no row went with it


@pytest.fixture
def setup_db(tmp_path: Path) -> tuple[Path, Path]:
    """One session that ended ten days ago, synced into a SQLite mirror."""
    folder = tmp_path / ".codex" / "sessions"
    old_session(folder, "old")
    db = tmp_path / ".codex" / "session_logs.db"
    sync_to_sqlite(db, folder)
    return db, folder
