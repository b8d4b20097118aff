"""A sessions folder's identity and a session file's, in the SQLite mirror.

A folder re-created, restored without its id file, or first synced read-only
keeps its id; a renamed, moved or restored file is known by its identity and
content; a symlink or hard link is refused and said (docs/mirror.md, "Sync").
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._mirror.target import SOURCE_ID_FILE, source_id
from tests.conftest import db_connection


def write_lines(path: Path, count: int, start: int = 0, prefix: str = "m") -> None:
    with path.open("ab") as f:
        for i in range(start, start + count):
            record = {"ts": 1.0 + i, "kind": "message", "message": f"{prefix}{i}"}
            f.write(json.dumps(record).encode() + b"\n")


def rows(db: Path) -> list[tuple[Any, ...]]:
    with db_connection(db) as conn:
        return conn.execute(
            "SELECT session_id, seq, message FROM session_events ORDER BY session_id, seq"
        ).fetchall()


def folder_id(folder: Path) -> str:
    return (folder / SOURCE_ID_FILE).read_text().strip()


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder


def read_only_id_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the id file impossible to create, as in a folder the sync may only read."""
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if SOURCE_ID_FILE in str(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)


class TestFolderIdentity:
    def test_recreated_folder_keeps_its_id(self, tmp_path: Path, sessions: Path) -> None:
        """Removed and re-created by the writer: same id, its sessions go on syncing."""
        db = tmp_path / "x.db"
        write_lines(sessions / "run.ndjson", 3)
        assert sync_to_sqlite(db, sessions).rows_inserted == 3
        first = folder_id(sessions)
        shutil.rmtree(sessions)
        sessions.mkdir()
        write_lines(sessions / "run.ndjson", 2, start=10)
        write_lines(sessions / "new.ndjson", 1)
        report = sync_to_sqlite(db, sessions)
        assert folder_id(sessions) == first
        assert report.rows_inserted == 3
        # The new file under the old name is another file: numbered on.
        assert [w for w in report.warnings if "refused" in w or "come from" in w] == []
        assert rows(db) == [
            ("new", 1, "m0"),
            ("run", 1, "m0"),
            ("run", 2, "m1"),
            ("run", 3, "m2"),
            ("run", 4, "m10"),
            ("run", 5, "m11"),
        ]
        again = sync_to_sqlite(db, sessions)
        assert (again.rows_inserted, again.warnings) == (0, [])

    def test_restored_without_its_id_file(self, tmp_path: Path, sessions: Path) -> None:
        """Restored from a copy without .codex-source-id (new inodes): nothing is stored twice."""
        db = tmp_path / "x.db"
        write_lines(sessions / "a.ndjson", 3)
        write_lines(sessions / "b.ndjson", 200)  # longer than the 4 KiB of the head
        sync_to_sqlite(db, sessions)
        first = folder_id(sessions)
        backup = tmp_path / "backup"
        shutil.copytree(sessions, backup)
        (backup / SOURCE_ID_FILE).unlink()
        # The old files stay until the copy is made: it gets other inodes.
        sessions.rename(tmp_path / "lost")
        shutil.copytree(backup, sessions)
        shutil.rmtree(tmp_path / "lost")
        write_lines(sessions / "b.ndjson", 1, start=200)
        report = sync_to_sqlite(db, sessions)
        assert folder_id(sessions) == first
        assert report.rows_inserted == 1
        assert sorted(w.split(":")[0] for w in report.warnings) == ["a", "b"]
        assert all("restored or copied back" in w for w in report.warnings)
        assert len(rows(db)) == 204
        assert rows(db)[-1] == ("b", 201, "m200")
        again = sync_to_sqlite(db, sessions)
        assert (again.rows_inserted, again.warnings) == (0, [])

    def test_first_synced_read_only_then_writable(
        self, tmp_path: Path, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A folder first synced read-only (a (dev, ino) id) keeps that id once it can hold a file."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        read_only_id_file(monkeypatch)
        assert sync_to_sqlite(db, sessions).rows_inserted == 3
        monkeypatch.undo()
        assert not (sessions / SOURCE_ID_FILE).exists()
        info = sessions.stat()
        write_lines(sessions / "s.ndjson", 1, start=3)
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.warnings) == (1, [])
        assert folder_id(sessions) == f"dev-{info.st_dev}-ino-{info.st_ino}"
        assert [seq for _, seq, _ in rows(db)] == [1, 2, 3, 4]

    def test_read_only_folder_recreated(
        self, tmp_path: Path, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A read-only folder re-created (a new inode) goes by the id its path had."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 2)
        read_only_id_file(monkeypatch)
        sync_to_sqlite(db, sessions)
        before = sessions.stat().st_ino
        sessions.rename(tmp_path / "gone")  # kept meanwhile: the new folder gets another inode
        sessions.mkdir()
        assert sessions.stat().st_ino != before
        write_lines(sessions / "s.ndjson", 1, start=5)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 1
        assert [w for w in report.warnings if "come from" in w] == []

    def test_folder_that_got_a_new_id_before(self, tmp_path: Path, sessions: Path) -> None:
        """A folder that already got a new id (an earlier version) is still this folder: its path says so."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 2)
        sync_to_sqlite(db, sessions)
        (sessions / SOURCE_ID_FILE).write_text(str(uuid.uuid4()) + "\n")
        write_lines(sessions / "s.ndjson", 1, start=2)
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.warnings) == (1, [])

    def test_two_folders_stay_apart(self, tmp_path: Path) -> None:
        """Another folder (another path) neither takes the id nor the session id of the first."""
        db = tmp_path / "x.db"
        one, two = tmp_path / "one", tmp_path / "two"
        for folder in (one, two):
            folder.mkdir()
            write_lines(folder / "s.ndjson", 2, prefix=folder.name)
        sync_to_sqlite(db, one)
        report = sync_to_sqlite(db, two)
        assert folder_id(one) != folder_id(two)
        assert report.rows_inserted == 0
        assert len(report.warnings) == 1
        assert "come from the sessions folder" in report.warnings[0]
        # Re-created, the second folder still is not the first.
        shutil.rmtree(two)
        two.mkdir()
        write_lines(two / "s.ndjson", 2, prefix="again")
        report = sync_to_sqlite(db, two)
        assert report.rows_inserted == 0
        assert "come from the sessions folder" in report.warnings[0]
        assert [m for _, _, m in rows(db)] == ["one0", "one1"]


class TestRenamedFile:
    def test_renamed_file_is_not_stored_again(self, tmp_path: Path, sessions: Path) -> None:
        """mv r1 r2: said once, no line twice, r2's new lines numbered on under r2."""
        db = tmp_path / "x.db"
        write_lines(sessions / "r1.ndjson", 3)
        sync_to_sqlite(db, sessions)
        (sessions / "r1.ndjson").rename(sessions / "r2.ndjson")
        write_lines(sessions / "r2.ndjson", 2, start=3)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 2
        (warning,) = report.warnings
        assert warning.startswith("r2: renamed or moved from r1.ndjson")
        assert rows(db) == [
            ("r1", 1, "m0"),
            ("r1", 2, "m1"),
            ("r1", 3, "m2"),
            ("r2", 4, "m3"),
            ("r2", 5, "m4"),
        ]
        again = sync_to_sqlite(db, sessions)
        assert (again.rows_inserted, again.warnings) == (0, [])
        with db_connection(db) as conn:
            got = conn.execute("SELECT session_id, events FROM sessions ORDER BY 1").fetchall()
        assert got == [("r1", 3), ("r2", 2)]

    def test_renamed_without_new_lines_then_grown(self, tmp_path: Path, sessions: Path) -> None:
        """Renamed and synced before it grows: the watermark follows; later lines come once."""
        db = tmp_path / "x.db"
        write_lines(sessions / "r1.ndjson", 3)
        sync_to_sqlite(db, sessions)
        (sessions / "r1.ndjson").rename(sessions / "r2.ndjson")
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 0
        assert len(report.warnings) == 1
        write_lines(sessions / "r2.ndjson", 1, start=3)
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.warnings) == (1, [])
        assert rows(db)[-1] == ("r2", 4, "m3")

    def test_moved_in_from_a_subfolder_and_back(self, tmp_path: Path, sessions: Path) -> None:
        """Moved out and back in under another name, on the same filesystem: known by its inode."""
        db = tmp_path / "x.db"
        write_lines(sessions / "r1.ndjson", 300)
        sync_to_sqlite(db, sessions)
        aside = tmp_path / "aside.ndjson"
        (sessions / "r1.ndjson").rename(aside)
        sync_to_sqlite(db, sessions)
        aside.rename(sessions / "r3.ndjson")
        write_lines(sessions / "r3.ndjson", 1, start=300)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 1
        assert report.warnings[0].startswith("r3: renamed or moved from r1.ndjson")
        assert len(rows(db)) == 301

    def test_renamed_onto_a_name_that_has_rows(self, tmp_path: Path, sessions: Path) -> None:
        """Renamed onto an older session's name: its new lines are numbered after both."""
        db = tmp_path / "x.db"
        write_lines(sessions / "r1.ndjson", 3)
        write_lines(sessions / "r2.ndjson", 5, prefix="old")
        sync_to_sqlite(db, sessions)
        (sessions / "r2.ndjson").unlink()
        (sessions / "r1.ndjson").rename(sessions / "r2.ndjson")
        write_lines(sessions / "r2.ndjson", 1, start=3)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 1
        assert report.warnings[0].startswith("r2: renamed or moved from r1.ndjson")
        got = rows(db)
        assert len(got) == 9
        assert got[-1] == ("r2", 6, "m3")

    def test_renamed_file_with_other_content_is_a_new_file(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """Same inode, other first bytes: not the synced file, its lines are all new."""
        db = tmp_path / "x.db"
        write_lines(sessions / "r1.ndjson", 3)
        sync_to_sqlite(db, sessions)
        path = sessions / "r2.ndjson"
        (sessions / "r1.ndjson").rename(path)
        with path.open("r+b") as f:
            f.write(b'{"ts": 9.0, "message": "X"}\n')
            f.truncate()
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.warnings) == (1, [])
        assert rows(db)[-1] == ("r2", 1, "X")

    def test_same_name_new_inode_other_content_is_replaced(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A copy that shares the first 4 KiB but not the bytes before the watermark is another file."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 300)
        sync_to_sqlite(db, sessions)
        data = path.read_bytes()
        lines = data.split(b"\n")
        lines[250] = lines[250].replace(b"m250", b"XXXX")
        path.rename(tmp_path / "old.ndjson")  # kept meanwhile: the copy gets another inode
        path.write_bytes(b"\n".join(lines))
        report = sync_to_sqlite(db, sessions)
        assert len(report.warnings) == 1
        assert "replaced" in report.warnings[0]
        assert report.rows_inserted == 300


def test_source_id_asks_the_database_only_without_a_file(tmp_path: Path) -> None:
    """The id file wins; without it the database's earlier id is taken and kept in it."""
    asked: list[str] = []

    def earlier(folder: str) -> str:
        asked.append(folder)
        return "earlier-id"

    assert source_id(str(tmp_path), earlier) == "earlier-id"
    assert folder_id(tmp_path) == "earlier-id"
    assert source_id(str(tmp_path), earlier) == "earlier-id"
    assert asked == [str(tmp_path)]
