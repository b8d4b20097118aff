"""codex-logs prune against a real PostgreSQL mirror that several folders (machines) sync into."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_postgres
from codex_logging._cli.main import main
from codex_logging._errors import DatabaseNotFoundError
from codex_logging._mirror import prune as _prune
from codex_logging._postgres.prune import PostgresMirror
from tests.test_prune import DAY, old_session

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")


def prune(url: str, folder: Path, **options: Any) -> _prune.PruneReport:
    """Prune ``folder`` against the PostgreSQL mirror at ``url``, as ``codex-logs prune`` does."""
    mirror = PostgresMirror(url, str(folder), read_only=options.get("dry_run", False))
    with contextlib.closing(mirror):
        return _prune.prune(mirror, str(folder), **options)


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def per_source(url: str) -> list[tuple[str, str, int]]:
    """``(folder, session, rows)`` of every source, by the folder each source named."""
    return [
        (Path(folder).parent.name, sid, n)
        for folder, sid, n in rows(
            url,
            "SELECT s.folder, e.session_id, count(*) FROM session_events e"
            " JOIN sources s USING (source_id) GROUP BY 1, 2 ORDER BY 1, 2",
        )
    ]


@pytest.fixture
def machines(pg_url: str, tmp_path: Path) -> tuple[Path, Path]:
    """Two folders, a and b, both synced: each has its part of "shared", a also "solo"."""
    a, b = tmp_path / "a" / "sessions", tmp_path / "b" / "sessions"
    old_session(a, "shared")
    old_session(a, "solo")
    old_session(b, "shared", lines=5)
    for folder in (a, b):
        report = sync_to_postgres(pg_url, folder)
        assert (report.warnings, report.lines_quarantined) == ([], 0)
    return a, b


class TestPrunePostgres:
    def test_only_this_folders_synced_files_go(
        self, pg_url: str, machines: tuple[Path, Path]
    ) -> None:
        """A fully synced file goes, an unsynced tail keeps its file, the other folder is untouched."""
        a, b = machines
        solo = a / "solo.ndjson"
        mtime = solo.stat().st_mtime
        synced = solo.stat().st_size
        with solo.open("a") as f:
            f.write(json.dumps({"ts": mtime - 5, "message": "late"}) + "\n")
        os.utime(solo, (mtime, mtime))
        size = solo.stat().st_size
        report = prune(pg_url, a, older_than=DAY)
        assert report.retired == ["shared"]
        assert report.kept == [
            ("solo", f"not fully synced ({synced} of {size} bytes in the mirror)")
        ]
        assert (report.files_deleted, report.rows_deleted) == (1, 0)
        assert sorted(p.name for p in a.iterdir() if p.suffix == ".ndjson") == ["solo.ndjson"]
        assert (b / "shared.ndjson").exists()
        assert per_source(pg_url) == [("a", "shared", 4), ("a", "solo", 4), ("b", "shared", 7)]

    def test_rows_of_this_folder_only(self, pg_url: str, machines: tuple[Path, Path]) -> None:
        """--rows deletes this folder's rows and watermarks of a retired session, not b's part."""
        a, b = machines
        report = prune(pg_url, a, older_than=DAY, rows=True)
        assert (report.retired, report.files_deleted, report.rows_deleted) == (
            ["shared", "solo"],
            2,
            8,
        )
        assert per_source(pg_url) == [("b", "shared", 7)]
        (source_a,) = rows(pg_url, "SELECT source_id FROM sources WHERE folder = %s", (str(a),))[0]
        assert rows(
            pg_url,
            "SELECT count(*) FROM session_ingest_watermark WHERE source_id = %s",
            (source_a,),
        ) == [(0,)]
        assert prune(pg_url, b, older_than=DAY, rows=True).rows_deleted == 7
        assert rows(pg_url, "SELECT count(*) FROM session_events") == [(0,)]

    def test_dry_run_and_a_folder_never_synced(
        self, pg_url: str, machines: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """--dry-run deletes nothing; a folder PostgreSQL never saw keeps every file."""
        a, _b = machines
        report = prune(pg_url, a, older_than=DAY, rows=True, dry_run=True)
        assert (report.retired, report.files_deleted, report.rows_deleted) == (
            ["shared", "solo"],
            0,
            0,
        )
        assert len(list(a.glob("*.ndjson"))) == 2
        assert rows(pg_url, "SELECT count(*) FROM session_events") == [(15,)]
        fresh = tmp_path / "c" / "sessions"
        old_session(fresh, "shared")
        report = prune(pg_url, fresh, older_than=DAY)
        assert (report.retired, report.kept) == ([], [])  # none of its rows are there
        assert (fresh / "shared.ndjson").exists()

    def test_unknown_session_and_empty_database(self, pg_url: str, tmp_path: Path) -> None:
        """A database no sync has used is a clear error; so is an unknown session."""
        folder = tmp_path / "s"
        old_session(folder, "x")
        with pytest.raises(DatabaseNotFoundError, match="no session_events table"):
            prune(pg_url, folder, older_than=DAY)
        sync_to_postgres(pg_url, folder)
        with pytest.raises(LookupError, match="unknown session nope"):
            prune(pg_url, folder, older_than=DAY, session_id="nope")

    def test_command_line(
        self, pg_url: str, machines: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """codex-logs prune --db postgresql://... --rows --json reports what went."""
        a, _b = machines
        args = ["prune", "--older-than", "1d", "--db", pg_url, "--sessions-dir", str(a)]
        assert main([*args, "--rows", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["retired"], out["files_deleted"], out["rows_deleted"]) == (
            ["shared", "solo"],
            2,
            8,
        )

    def test_rows_that_do_not_read_back_keep_the_file(
        self, pg_url: str, machines: tuple[Path, Path]
    ) -> None:
        """A row of this folder missing or changed in the database: its file stays, the reason said."""
        a, _b = machines
        (source_a,) = rows(pg_url, "SELECT source_id FROM sources WHERE folder = %s", (str(a),))[0]
        with psycopg.connect(pg_url) as conn:
            conn.execute(
                "DELETE FROM session_events WHERE source_id = %s AND session_id = 'solo' AND seq = 2",
                (source_a,),
            )
            conn.execute(
                "UPDATE session_rows SET kind = 'end' WHERE seq = 2 AND sid = (SELECT id"
                " FROM session_keys WHERE source_id = %s AND session_id = 'shared')",
                (source_a,),
            )
        report = prune(pg_url, a, older_than=DAY)
        assert report.retired == []
        prefix = "its rows in "
        assert [
            (sid, why.startswith(prefix), why.split(": ", 1)[1]) for sid, why in report.kept
        ] == [
            ("shared", True, "read back 4 events and 0 quarantined lines of 4 and 0"),
            ("solo", True, "read back 3 events and 0 quarantined lines of 4 and 0"),
        ]
        assert len(list(a.glob("*.ndjson"))) == 2
