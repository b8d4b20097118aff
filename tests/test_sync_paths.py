"""The SQLite sync off its main path: files rewritten under their watermark, rebuilds, empty databases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from codex_logging import DatabaseError, sync_to_sqlite
from codex_logging._errors import InvalidFilterError
from codex_logging._sqlite.read import latest_session
from tests.conftest import db_connection
from tests.test_prune import count, old_session


@pytest.fixture
def synced(tmp_path: Path) -> tuple[Path, Path]:
    """A session of about 8 KB (past the 4 KB head the watermark hashes), synced."""
    folder = tmp_path / "sessions"
    path = old_session(folder, "big", lines=200)
    db = tmp_path / "m.db"
    report = sync_to_sqlite(db, folder)
    assert (report.rows_inserted, report.warnings) == (202, [])
    return db, path


class TestRewrittenUnderTheWatermark:
    def test_the_last_newline_taken_is_gone(self, synced: tuple[Path, Path]) -> None:
        db, path = synced
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.seek(size - 1)
            f.write(b' \n{"message": "new"}\n')  # same inode and head, the line end moved
        report = sync_to_sqlite(db, path.parent)
        assert len(report.warnings) == 1
        assert (
            f"file was cut and written again (byte {size - 1}, the end of the last line taken,"
            " is no longer a line end; truncated)"
        ) in report.warnings[0]

    def test_the_bytes_before_the_watermark_changed(self, synced: tuple[Path, Path]) -> None:
        db, path = synced
        data = path.read_bytes()
        at = data.rindex(b"m199")
        with path.open("r+b") as f:
            f.seek(at)
            f.write(b"X")  # same size, same head, the newline still there
            f.seek(0, 2)
            f.write(b'{"message": "new"}\n')
        report = sync_to_sqlite(db, path.parent)
        assert len(report.warnings) == 1
        assert (
            "file was cut and written again (the bytes before the end of the last line"
            " taken differ; truncated)"
        ) in report.warnings[0]


class TestRebuild:
    def test_rebuild_without_a_database_just_syncs(self, tmp_path: Path) -> None:
        folder = tmp_path / "sessions"
        old_session(folder, "s")
        report = sync_to_sqlite(tmp_path / "m.db", folder, rebuild=True)
        assert (report.rows_inserted, report.warnings) == (4, [])
        assert [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name] == []

    def test_a_second_rebuild_in_the_same_second_gets_its_own_name(self, tmp_path: Path) -> None:
        folder = tmp_path / "sessions"
        old_session(folder, "s")
        db = tmp_path / "m.db"
        sync_to_sqlite(db, folder)
        # Whatever second the rebuild falls in, its first name is taken.
        now = time.time()
        for delta in range(3):
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + delta))
            Path(f"{db}.damaged-{stamp}").write_bytes(b"an earlier copy")
        report = sync_to_sqlite(db, folder, rebuild=True)
        (warning,) = report.warnings
        assert warning.startswith(f"moved the damaged database aside to {db}.damaged-")
        moved = warning.split(" to ", 1)[1].split(";", 1)[0]
        assert moved.endswith("Z-2")
        assert count(Path(moved)) == 4
        assert count(db) == 4

    def test_a_rebuild_of_one_session_is_refused(self, tmp_path: Path) -> None:
        """One session mirrored afresh would leave the others out: refused, nothing moved."""
        folder = tmp_path / "sessions"
        old_session(folder, "s")
        db = tmp_path / "m.db"
        sync_to_sqlite(db, folder)
        with pytest.raises(InvalidFilterError, match="a rebuild mirrors every session file"):
            sync_to_sqlite(db, folder, session_id="s", rebuild=True)
        assert [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name] == []
        assert count(db) == 4


class TestEmptyDatabase:
    def test_latest_session_of_a_database_no_sync_made(self, tmp_path: Path) -> None:
        db = tmp_path / "empty.db"
        with db_connection(db) as conn:
            conn.execute("CREATE TABLE unrelated (x)")
        with pytest.raises(DatabaseError, match="has no sessions view"):
            latest_session(str(db))
        assert count(db, "unrelated") == 0  # left as it was


class TestFileNames:
    def test_a_file_not_named_as_a_session_is_skipped_with_a_warning(self, tmp_path: Path) -> None:
        """`bad id.ndjson` is no session file: said (once a sync), never mirrored."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "bad id.ndjson").write_text('{"message": "x"}\n')
        (folder / "good.ndjson").write_text('{"message": "y"}\n')
        report = sync_to_sqlite(tmp_path / "m.db", folder)
        assert (report.files, report.rows_inserted) == (1, 1)
        (warning,) = report.warnings
        assert warning == (
            f"bad id: skipped, {folder / 'bad id.ndjson'}: invalid session id 'bad id':"
            " use 1 to 128 characters of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"
        )
