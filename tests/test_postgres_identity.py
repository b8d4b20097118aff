"""A sessions folder's identity and a session file's, in the PostgreSQL mirror (a real server).

A folder re-created, restored without its id file, or first synced read-only
is still one source, and nothing of it is stored twice; a renamed file is not
stored again; two folders stay two sources (docs/scale-out.md).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_postgres
from codex_logging._mirror.target import SOURCE_ID_FILE
from tests.test_identity import folder_id, read_only_id_file, write_lines

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")


def pg_rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def events(url: str) -> list[tuple[Any, ...]]:
    return pg_rows(
        url, "SELECT session_id, seq, message FROM session_events ORDER BY session_id, seq"
    )


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder


class TestFolderIdentity:
    def test_recreated_folder_is_one_source(self, pg_url: str, sessions: Path) -> None:
        """Removed and re-created: the same source id, nothing twice, one source in `sessions`."""
        write_lines(sessions / "run.ndjson", 3)
        sync_to_postgres(pg_url, sessions)
        first = folder_id(sessions)
        shutil.rmtree(sessions)
        sessions.mkdir()
        write_lines(sessions / "run.ndjson", 2, start=10)
        report = sync_to_postgres(pg_url, sessions)
        assert report.rows_inserted == 2
        assert folder_id(sessions) == first
        assert pg_rows(pg_url, "SELECT source_id FROM sources") == [(first,)]
        assert [(s, m) for s, _, m in events(pg_url)] == [
            ("run", "m0"), ("run", "m1"), ("run", "m2"), ("run", "m10"), ("run", "m11"),
        ]  # fmt: skip
        assert pg_rows(pg_url, "SELECT events, sources FROM sessions") == [(5, 1)]

    def test_restored_without_its_id_file(
        self, pg_url: str, sessions: Path, tmp_path: Path
    ) -> None:
        """Restored from a copy without .codex-source-id: its 6 lines stay 6 rows."""
        write_lines(sessions / "a.ndjson", 6)
        write_lines(sessions / "b.ndjson", 200)
        sync_to_postgres(pg_url, sessions)
        backup = tmp_path / "backup"
        shutil.copytree(sessions, backup)
        (backup / SOURCE_ID_FILE).unlink()
        sessions.rename(tmp_path / "lost")
        shutil.copytree(backup, sessions)
        shutil.rmtree(tmp_path / "lost")
        write_lines(sessions / "a.ndjson", 1, start=6)
        report = sync_to_postgres(pg_url, sessions)
        assert report.rows_inserted == 1
        assert pg_rows(pg_url, "SELECT count(*) FROM sources") == [(1,)]
        assert pg_rows(pg_url, "SELECT session_id, events, sources FROM sessions ORDER BY 1") == [
            ("a", 7, 1),
            ("b", 200, 1),
        ]

    def test_first_synced_read_only_then_writable(
        self, pg_url: str, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """First synced read-only, then writable: one source, 6 lines are 6 rows, not 11."""
        write_lines(sessions / "s.ndjson", 5)
        read_only_id_file(monkeypatch)
        assert sync_to_postgres(pg_url, sessions).rows_inserted == 5
        monkeypatch.undo()
        write_lines(sessions / "s.ndjson", 1, start=5)
        report = sync_to_postgres(pg_url, sessions)
        assert (report.rows_inserted, report.warnings) == (1, [])
        info = sessions.stat()
        assert folder_id(sessions) == f"dev-{info.st_dev}-ino-{info.st_ino}"
        assert pg_rows(pg_url, "SELECT events, sources FROM sessions") == [(6, 1)]
        assert [seq for _, seq, _ in events(pg_url)] == [1, 2, 3, 4, 5, 6]

    def test_two_folders_stay_two_sources(self, pg_url: str, tmp_path: Path) -> None:
        """Two folders (two paths, or two hosts) with one session id keep their own rows."""
        folders = [tmp_path / "one", tmp_path / "two"]
        for folder in folders:
            folder.mkdir()
            write_lines(folder / "s.ndjson", 2, prefix=folder.name)
            sync_to_postgres(pg_url, folder)
        # The second re-created: it does not become the first.
        shutil.rmtree(folders[1])
        folders[1].mkdir()
        write_lines(folders[1] / "s.ndjson", 1, prefix="again")
        sync_to_postgres(pg_url, folders[1])
        assert pg_rows(pg_url, "SELECT count(*) FROM sources") == [(2,)]
        assert pg_rows(pg_url, "SELECT events, sources FROM sessions") == [(5, 2)]
        # The same path on another host is another machine's folder.
        with psycopg.connect(pg_url) as conn:
            conn.execute("UPDATE sources SET host = 'elsewhere'")
        shutil.rmtree(folders[0])
        folders[0].mkdir()
        write_lines(folders[0] / "s.ndjson", 1, prefix="new")
        sync_to_postgres(pg_url, folders[0])
        hosts = pg_rows(pg_url, "SELECT host FROM sources ORDER BY host")
        assert hosts == [("elsewhere",), ("elsewhere",), (socket.gethostname(),)]


class TestRenamedFile:
    def test_renamed_file_is_not_stored_again(self, pg_url: str, sessions: Path) -> None:
        """mv r1 r2: said once, its new lines only, numbered on under r2."""
        write_lines(sessions / "r1.ndjson", 3)
        sync_to_postgres(pg_url, sessions)
        (sessions / "r1.ndjson").rename(sessions / "r2.ndjson")
        write_lines(sessions / "r2.ndjson", 2, start=3)
        report = sync_to_postgres(pg_url, sessions)
        assert report.rows_inserted == 2
        (warning,) = report.warnings
        assert warning.startswith("r2: renamed or moved from r1.ndjson")
        assert events(pg_url) == [
            ("r1", 1, "m0"), ("r1", 2, "m1"), ("r1", 3, "m2"), ("r2", 4, "m3"), ("r2", 5, "m4"),
        ]  # fmt: skip
        again = sync_to_postgres(pg_url, sessions)
        assert (again.rows_inserted, again.warnings) == (0, [])


class TestNotASessionFile:
    def test_symlink_and_hard_link(self, pg_url: str, sessions: Path, tmp_path: Path) -> None:
        """A synced file swapped for a symlink, a hard-linked file: each said, nothing read."""
        other = tmp_path / "other.ndjson"
        other.write_text('{"message": "not a session"}\n')
        write_lines(sessions / "a.ndjson", 2)
        sync_to_postgres(pg_url, sessions)
        (sessions / "a.ndjson").unlink()
        (sessions / "a.ndjson").symlink_to(other)
        os.link(other, sessions / "h.ndjson")
        report = sync_to_postgres(pg_url, sessions)
        assert report.rows_inserted == 0
        assert [w.split(",")[1].split(" is ")[1][:9] for w in report.warnings] == [
            "now a sym",
            "hard-link",
        ]
        assert [m for _, _, m in events(pg_url)] == ["m0", "m1"]
