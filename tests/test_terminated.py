"""A session a signal ended is ``terminated``: its latest end record says so, none failed."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_postgres, sync_to_sqlite
from codex_logging._sqlite import read
from codex_logging._sqlite.db import MIGRATIONS, SCHEMA_VERSION, atomic, connect, rebuild_summary
from tests.browser import serve
from tests.conftest import db_connection

__all__ = ["serve"]  # the fixture, imported for its use here

#: One session per case: its end records as ``(ts, status)`` in file order,
#: and the status ``sessions`` gives it.
CASES: dict[str, tuple[list[tuple[float | None, str]], str]] = {
    "terminated": ([(2.0, "terminated")], "terminated"),
    "terminated-then-ok": ([(2.0, "terminated"), (3.0, "ok")], "ok"),
    "ok-then-terminated": ([(2.0, "ok"), (3.0, "terminated")], "terminated"),
    "error-then-terminated": ([(2.0, "error"), (3.0, "terminated")], "error"),
    "terminated-then-earlier-error": ([(3.0, "terminated"), (2.0, "error")], "error"),
    # A later line with an earlier time is not the latest end: the time decides.
    "ok-then-earlier-terminated": ([(5.0, "ok"), (3.0, "terminated")], "ok"),
    "terminated-then-earlier-ok": ([(5.0, "terminated"), (3.0, "ok")], "terminated"),
    # The same time: the higher seq decides.
    "tie-ok-last": ([(3.0, "terminated"), (3.0, "ok")], "ok"),
    "tie-terminated-last": ([(3.0, "ok"), (3.0, "terminated")], "terminated"),
    # An end without a time is not an end the session is known to have had then.
    "terminated-then-timeless-ok": ([(2.0, "terminated"), (None, "ok")], "terminated"),
    "ok": ([(2.0, "ok")], "ok"),
}


def case_lines(ends: list[tuple[float | None, str]]) -> list[str]:
    """A start, a message and the ends, as the write path writes them."""
    lines = [
        {"ts": 1.0, "kind": "start", "pid": 1, "message": "start"},
        {"ts": 1.5, "message": "m"},
    ]
    for i, (ts, status) in enumerate(ends):
        end: dict[str, Any] = {"kind": "end", "status": status, "pid": 10 + i, "message": "end"}
        if ts is not None:
            end["ts"] = ts
        if status == "terminated":
            end["signal"] = "SIGTERM"
        lines.append(end)
    return [json.dumps(line) + "\n" for line in lines]


def write_cases(folder: Path, *, one_line_per_sync: Any = None) -> None:
    """Write every case's file; with ``one_line_per_sync``, call it after each line."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = {sid: case_lines(ends) for sid, (ends, _) in CASES.items()}
    if one_line_per_sync is None:
        for sid, text in lines.items():
            (folder / f"{sid}.ndjson").write_text("".join(text))
        return
    for i in range(max(map(len, lines.values()))):
        for sid, text in lines.items():
            if i < len(text):
                with (folder / f"{sid}.ndjson").open("a") as f:
                    f.write(text[i])
        one_line_per_sync()


EXPECTED: dict[str, str] = {sid: status for sid, (_, status) in CASES.items()}


def statuses(db: Path) -> dict[str, Any]:
    return {r["session_id"]: r["status"] for r in read.sessions(str(db))}


def summary(db: Path) -> list[tuple[Any, ...]]:
    with db_connection(db) as conn:
        return conn.execute("SELECT * FROM session_summary ORDER BY session_id").fetchall()


def rebuilt(db: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(connect(str(db))) as conn, atomic(conn, str(db)):
        rebuild_summary(conn)
    return summary(db)


class TestSqlite:
    @pytest.mark.parametrize("batches", ["whole", "line by line"])
    def test_status_is_the_latest_end_unless_one_failed(self, tmp_path: Path, batches: str) -> None:
        """Each case gives its status, whether its lines came in one sync or one per sync."""
        folder, db = tmp_path / "s", tmp_path / "m.db"
        if batches == "whole":
            write_cases(folder)
            sync_to_sqlite(db, folder)
        else:
            write_cases(folder, one_line_per_sync=lambda: sync_to_sqlite(db, folder))
        assert statuses(db) == EXPECTED
        kept = summary(db)
        assert rebuilt(db) == kept  # what the sync kept is what the rows say
        with db_connection(db) as conn:
            ((count,),) = conn.execute("SELECT COUNT(*) FROM sessions WHERE status = 'terminated'")
        assert count == list(EXPECTED.values()).count("terminated")

    def test_cli_and_the_viewer_read_show_terminated(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`codex-logs sessions` (text and --json) and the sessions page show and filter it."""
        from codex_logging._cli.main import main

        folder, db = tmp_path / "s", tmp_path / "m.db"
        write_cases(folder)
        sync_to_sqlite(db, folder)
        assert main(["sessions", "--db", str(db), "--session-id", "terminated", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "terminated"
        assert main(["sessions", "--db", str(db), "--session-id", "terminated"]) == 0
        assert capsys.readouterr().out.split()[5] == "terminated"
        count, rows = read.sessions_page(str(db), status="terminated")
        want = sorted((s for s, v in EXPECTED.items() if v == "terminated"), reverse=True)
        assert (count, sorted((r["session_id"] for r in rows), reverse=True)) == (len(want), want)
        assert {r["status"] for r in read.sessions_page(str(db), status="ok")[1]} == {"ok"}

    def test_an_existing_mirror_migrated_says_terminated(self, tmp_path: Path) -> None:
        """A schema-9 mirror (its summary without the latest end) gets it from its rows."""
        folder, db = tmp_path / "s", tmp_path / "m.db"
        write_cases(folder)
        sync_to_sqlite(db, folder)
        kept = summary(db)
        (old_view,) = [s for s in MIGRATIONS[3][1] if s.startswith("CREATE VIEW sessions")]
        with db_connection(db) as conn:  # the mirror as version 9 left it
            conn.execute("DROP VIEW sessions")
            conn.execute("ALTER TABLE session_summary DROP COLUMN end_status")
            conn.execute("ALTER TABLE session_summary DROP COLUMN end_seq")
            conn.execute(old_view)
            conn.execute("PRAGMA user_version = 9")
        with db_connection(db) as conn:
            ((before,),) = conn.execute(
                "SELECT status FROM sessions WHERE session_id = 'terminated'"
            )
        assert before == "ok"  # what it said before
        with contextlib.closing(connect(str(db))) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert summary(db) == kept
        assert statuses(db) == EXPECTED
        # A later ok end synced after the migration makes it ok.
        with (folder / "terminated.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 9.0, "kind": "end", "status": "ok", "pid": 3}) + "\n")
        sync_to_sqlite(db, folder)
        assert statuses(db)["terminated"] == "ok"

    def test_the_viewer_shows_and_filters_terminated(self, tmp_path: Path, serve: Any) -> None:
        """The sessions page offers the status, filters on it and shows its pill."""
        folder, db = tmp_path / "s", tmp_path / "m.db"
        write_cases(folder)
        sync_to_sqlite(db, folder)
        server = serve(db)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request("GET", "/?status=terminated")
            response = conn.getresponse()
            page = response.read().decode()
        finally:
            conn.close()
        assert response.status == 200
        assert '<option value="terminated" selected>' in page
        want = [s for s, v in EXPECTED.items() if v == "terminated"]
        assert page.count('<span class="pill pill-terminated">terminated</span>') == len(want)
        for sid in EXPECTED:
            assert (f">{sid}</a>" in page) == (sid in want), sid


@pytest.mark.skipif(
    not os.environ.get("CI") and not __import__("importlib").util.find_spec("psycopg"),
    reason="psycopg not installed",
)
class TestPostgres:
    @pytest.mark.parametrize("batches", ["whole", "line by line"])
    def test_same_statuses_as_sqlite(self, pg_url: str, tmp_path: Path, batches: str) -> None:
        """Every case gives the same status from both mirrors, synced whole or line by line."""
        from codex_logging._postgres.read import sessions_page_postgres, sessions_postgres

        folder, db = tmp_path / "s", tmp_path / "m.db"

        def both() -> None:
            sync_to_postgres(pg_url, folder)
            sync_to_sqlite(db, folder)

        if batches == "whole":
            write_cases(folder)
            both()
        else:
            write_cases(folder, one_line_per_sync=both)
        got = {r["session_id"]: r["status"] for r in sessions_postgres(pg_url)}
        assert got == statuses(db) == EXPECTED
        count, _rows = sessions_page_postgres(pg_url, status="terminated")
        assert count == list(EXPECTED.values()).count("terminated")
        assert summary_pg(pg_url) == rebuilt_pg(pg_url)
        with db_connection(db) as conn:
            lite = conn.execute(
                "SELECT session_id, end_seq, end_status FROM session_summary ORDER BY session_id"
            ).fetchall()
        assert summary_pg(pg_url) == lite

    def test_sources_merged_by_their_latest_end(self, pg_url: str, tmp_path: Path) -> None:
        """Two machines share a session id: the latest end of either decides."""
        from codex_logging._postgres.read import sessions_postgres

        first, second = tmp_path / "a" / "sessions", tmp_path / "b" / "sessions"
        for folder, ends in ((first, [(5.0, "terminated")]), (second, [(3.0, "ok")])):
            folder.mkdir(parents=True, mode=0o700)
            (folder / "shared.ndjson").write_text("".join(case_lines(ends)))
            (folder / "later-ok.ndjson").write_text(
                "".join(
                    case_lines(
                        [
                            (
                                9.0 if folder == second else 4.0,
                                "ok" if folder == second else "terminated",
                            )
                        ]
                    )
                )
            )
            sync_to_postgres(pg_url, folder)
        got = {r["session_id"]: r["status"] for r in sessions_postgres(pg_url)}
        assert got == {"shared": "terminated", "later-ok": "ok"}

    def test_an_existing_mirror_migrated_says_terminated(self, pg_url: str, tmp_path: Path) -> None:
        """A schema-7 database (its summary without the latest end) gets it from its rows."""
        import psycopg

        from codex_logging._postgres.db import MIGRATIONS as PG_MIGRATIONS
        from codex_logging._postgres.db import SCHEMA_VERSION as PG_VERSION
        from codex_logging._postgres.read import sessions_postgres

        folder = tmp_path / "s"
        write_cases(folder)
        sync_to_postgres(pg_url, folder)
        kept = summary_pg(pg_url)
        (old_view,) = [s for s in PG_MIGRATIONS[1][1] if "VIEW sessions" in s]
        with psycopg.connect(pg_url, autocommit=True) as conn:  # as version 7 left it
            conn.execute("DROP VIEW sessions")
            conn.execute("ALTER TABLE session_summary DROP COLUMN end_seq, DROP COLUMN end_status")
            conn.execute(old_view)
            conn.execute("UPDATE codex_schema_version SET version = 7")
            (before,) = conn.execute(
                "SELECT status FROM sessions WHERE session_id = 'terminated'"
            ).fetchone()
        assert before == "ok"
        with (folder / "late.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 1.0, "message": "a new file, to sync"}) + "\n")
        sync_to_postgres(pg_url, folder)
        with psycopg.connect(pg_url) as conn:
            (version,) = conn.execute("SELECT version FROM codex_schema_version").fetchone()
        assert version == PG_VERSION
        assert summary_pg(pg_url) == sorted([*kept, ("late", None, None)])
        got = {r["session_id"]: r["status"] for r in sessions_postgres(pg_url)}
        assert got == {**EXPECTED, "late": None}


def summary_pg(url: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT session_id, end_seq, end_status FROM session_summary ORDER BY session_id"
        ).fetchall()


def rebuilt_pg(url: str) -> list[tuple[Any, ...]]:
    """The latest ends as the migration fills them in from the rows."""
    import psycopg

    from codex_logging._postgres.db import _END_BACKFILL

    with psycopg.connect(url) as conn:
        conn.execute("UPDATE session_summary SET end_seq = NULL, end_status = NULL")
        conn.execute(_END_BACKFILL)
        rows = conn.execute(
            "SELECT session_id, end_seq, end_status FROM session_summary ORDER BY session_id"
        ).fetchall()
        conn.rollback()
    return rows


def test_postgres_sync_while_the_move_waits_then_migrates(pg_url: str, tmp_path: Path) -> None:
    """A sync into a database whose move is left for later (a reader holds the old table)
    writes the summary it has; the next sync's migration fills in the latest ends."""
    import psycopg

    from codex_logging._postgres.db import END_STATUS, LEGACY_TABLE, MOVING, _apply, connect
    from codex_logging._postgres.read import sessions_postgres
    from tests.test_postgres_compact import old_sync

    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    (folder / "old.ndjson").write_text("".join(case_lines([(2.0, "ok")])))
    old_sync(pg_url, folder)  # the old session_events table
    conn = connect(pg_url)
    try:
        _apply(conn, 10.0, MOVING)
    finally:
        conn.close()
    write_cases(folder)
    with psycopg.connect(pg_url) as reader:
        reader.execute(f"SELECT count(*) FROM {LEGACY_TABLE}").fetchone()  # holds its lock
        report = sync_to_postgres(pg_url, folder, busy_timeout=0.5)
        assert report.rows_inserted == sum(len(case_lines(e)) for e, _ in CASES.values())
        with psycopg.connect(pg_url) as other:
            (version,) = other.execute("SELECT version FROM codex_schema_version").fetchone()
        assert MOVING <= version < END_STATUS
        reader.rollback()
    (folder / "later.ndjson").write_text("".join(case_lines([(2.0, "terminated")])))
    sync_to_postgres(pg_url, folder)
    got = {r["session_id"]: r["status"] for r in sessions_postgres(pg_url)}
    assert got == {**EXPECTED, "old": "ok", "later": "terminated"}
    assert summary_pg(pg_url) == rebuilt_pg(pg_url)
