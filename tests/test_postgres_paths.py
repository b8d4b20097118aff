"""A real PostgreSQL mirror off the main path: reads of what is not there, prune's reasons, dry runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codex_logging import DatabaseError, UnknownSessionError, sync_to_postgres
from codex_logging._mirror.filters import Filters
from codex_logging._postgres.migrate import compact_mirror
from codex_logging._postgres.read import (
    events_page_postgres,
    follow_postgres,
    sessions_page_postgres,
    timeline_postgres,
)
from tests.test_postgres_prune import prune, rows
from tests.test_prune import DAY, old_session

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")


@pytest.fixture
def synced(pg_url: str, tmp_path: Path) -> Path:
    """Sessions run-1 (ended), run-2 (ended, with a line that is not JSON), live (no end)."""
    folder = tmp_path / "sessions"
    old_session(folder, "run-1")
    bad = old_session(folder, "run-2")
    mtime = bad.stat().st_mtime
    lines = bad.read_bytes().split(b"\n")
    bad.write_bytes(b"\n".join([lines[0], b"{not json", *lines[1:]]))
    os.utime(bad, (mtime, mtime))
    (folder / "live.ndjson").write_text(json.dumps({"ts": 5.0, "message": "going"}) + "\n")
    report = sync_to_postgres(pg_url, folder)
    assert report.lines_quarantined == 1
    return folder


class TestReads:
    def test_sessions_searched_and_running(self, pg_url: str, synced: Path) -> None:
        total, page = sessions_page_postgres(pg_url, search="RUN", status="ok")
        assert (total, sorted(s["session_id"] for s in page)) == (2, ["run-1", "run-2"])
        total, page = sessions_page_postgres(pg_url, status="running")
        assert (total, [s["session_id"] for s in page]) == (1, ["live"])

    def test_unknown_sessions(self, pg_url: str, synced: Path) -> None:
        with pytest.raises(UnknownSessionError, match="unknown session nobody"):
            timeline_postgres(pg_url, "nobody")
        with pytest.raises(UnknownSessionError, match="unknown session nobody"):
            events_page_postgres(pg_url, Filters(session_id="nobody"))

    def test_a_page_after_a_cursor_without_a_time(self, pg_url: str, synced: Path) -> None:
        """Rows without a time come last, by source and seq: a cursor there goes on among them."""
        first, _cursor = events_page_postgres(pg_url, Filters(session_id="run-1"), limit=2)
        assert [r["message"] for r in first] == ["session start", "m0"]
        source = first[0]["source_id"]
        after, following = events_page_postgres(
            pg_url, Filters(session_id="run-1"), after=(None, source, 0)
        )
        assert (after, following) == ([], (first[0]["ts"] + 1, source, 4))

    def test_follow_a_database_without_a_mirror(self, pg_url: str) -> None:
        with pytest.raises(DatabaseError, match="no session_events table"):
            next(follow_postgres(pg_url, Filters()))


class TestPrune:
    def test_a_watermark_gone_keeps_the_file_and_a_quarantined_line_reads_back(
        self, pg_url: str, synced: Path
    ) -> None:
        with psycopg.connect(pg_url) as conn:
            conn.execute("DELETE FROM session_ingest_watermark WHERE session_id = 'run-1'")
        report = prune(pg_url, synced, older_than=DAY, rows=True)
        assert report.kept == [("run-1", "its file was never synced")]
        assert (report.retired, report.files_deleted, report.rows_deleted) == (["run-2"], 1, 4)
        assert (synced / "run-1.ndjson").exists()
        assert not (synced / "run-2.ndjson").exists()
        assert rows(pg_url, "SELECT count(*) FROM session_ingest_errors") == [(0,)]


class TestCompact:
    def test_a_dry_run_on_a_compact_mirror_expects_no_change(
        self, pg_url: str, synced: Path
    ) -> None:
        before, after = compact_mirror(pg_url, dry_run=True)
        assert before == after > 0
