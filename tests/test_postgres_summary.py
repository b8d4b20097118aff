"""The PostgreSQL session summary: kept in each batch's transaction, equal to a scan of the events."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codex_logging import sync_to_postgres, sync_to_sqlite
from codex_logging._postgres.db import _TEXT_TIME, EVENTS_VIEW, SCHEMA_VERSION
from tests.conftest import db_connection
from tests.test_postgres_compact import old_sync
from tests.test_postgres_prune import rows

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")


#: What the summary must say, computed from the events themselves.
FULL_SCAN = """
    SELECT session_id,
        sum(events)::bigint, sum(messages)::bigint, sum(warnings)::bigint, sum(errors)::bigint,
        (SELECT count(*) FROM (
            SELECT DISTINCT e.source_id, e.pid FROM events e
            WHERE e.session_id = g.session_id AND e.kind <> 'message' AND e.pid IS NOT NULL) p),
        coalesce(min(start_ts), min(first_ts)), max(end_ts), bool_or(failed)
    FROM (
        SELECT session_id, source_id, count(*) AS events,
            count(*) FILTER (WHERE kind = 'message' OR kind IS NULL) AS messages,
            count(*) FILTER (WHERE level IN ('WARNING', 'WARN')) AS warnings,
            count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL', 'FATAL')) AS errors,
            min(ts) FILTER (WHERE kind = 'start') AS start_ts, min(ts) AS first_ts,
            max(ts) FILTER (WHERE kind = 'end') AS end_ts,
            coalesce(bool_or(status = 'error') FILTER (WHERE kind = 'end'), false) AS failed
        FROM events GROUP BY session_id, source_id
    ) g
    GROUP BY session_id ORDER BY session_id
"""
SUMMARY = """
    SELECT session_id, events, messages, warnings, errors, processes, start_ts, end_ts,
        status = 'error'
    FROM sessions ORDER BY session_id
"""


def write_round(folder: Path, sid: str, round_: int, pid: int) -> None:
    """One run of a session in ``folder``: start, a warning, an error, an end (failed on round 2)."""
    base = 100.0 * round_ + pid
    status = "error" if round_ == 2 else "ok"
    records = [
        {"ts": base, "kind": "start", "level": "INFO", "message": "start", "pid": pid},
        {"ts": base + 1, "level": "WARNING", "message": "careful", "pid": pid},
        {"ts": base + 2, "level": "ERROR", "message": "oops", "pid": pid},
        {"ts": base + 3, "kind": "end", "level": "INFO", "status": status, "pid": pid},
    ]
    with (folder / f"{sid}.ndjson").open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


class TestSummaryPostgres:
    def test_summary_equals_a_full_scan_after_rounds_from_three_folders(
        self, pg_url: str, tmp_path: Path
    ) -> None:
        """sessions reads the summary; after 3 rounds from 3 folders it equals a scan of the events."""
        folders = [tmp_path / f"m{i}" / "sessions" for i in range(3)]
        for round_ in range(3):
            for i, folder in enumerate(folders):
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_round(folder, "shared", round_, pid=10 + i)
                write_round(folder, f"own-{i}", round_, pid=20 + i)
                sync_to_postgres(pg_url, folder)
        expected = rows(pg_url, FULL_SCAN)
        assert rows(pg_url, SUMMARY) == expected
        assert expected[-1] == ("shared", 36, 18, 9, 9, 3, 10.0, 215.0, True)
        assert rows(pg_url, "SELECT count(*) FROM session_summary") == [(6,)]

    def test_migration_builds_the_summary_of_existing_rows(
        self, pg_url: str, tmp_path: Path
    ) -> None:
        """A database from before the summary gets it built from its rows when a sync migrates it."""
        folder = tmp_path / "sessions"
        folder.mkdir(mode=0o700)
        for round_ in range(2):
            write_round(folder, "s", round_, pid=5)
        old_sync(pg_url, folder)  # the old session_events table, before the compact tables
        before = rows(pg_url, SUMMARY)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP VIEW sessions")
            conn.execute("DROP TABLE session_summary, session_summary_pids")
            # The events view as version 1 made it (time as text).
            conn.execute("DROP VIEW events")
            conn.execute(EVENTS_VIEW.format(time=_TEXT_TIME, trace=""))
            conn.execute("UPDATE codex_schema_version SET version = 1")
        write_round(folder, "s", 2, pid=6)
        sync_to_postgres(pg_url, folder)
        assert rows(pg_url, "SELECT version FROM codex_schema_version") == [(SCHEMA_VERSION,)]
        after = rows(pg_url, SUMMARY)
        assert after == rows(pg_url, FULL_SCAN)
        assert (before[0][1], after[0][1], after[0][5]) == (8, 12, 2)


def test_processes_agree_with_sqlite(pg_url: str, tmp_path: Path) -> None:
    """`sessions` counts the same processes in both mirrors: integer pids, as numbers or strings."""
    lines = [
        {"ts": 1.0, "kind": "start", "pid": 42},
        {"ts": 2.0, "kind": "start", "pid": "42"},
        {"ts": 3.0, "kind": "start", "pid": "worker-1"},
        {"ts": 4.0, "kind": "end", "pid": True},
        {"ts": 5.0, "kind": "end", "pid": 1.5},
        {"ts": 6.0, "kind": "end", "pid": -7},
        {"ts": 7.0, "kind": "end", "pid": "12345678901234567890"},
    ]
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "p.ndjson").write_text("".join(json.dumps(x) + "\n" for x in lines))
    sync_to_postgres(pg_url, sessions)
    db = tmp_path / "x.db"
    sync_to_sqlite(db, sessions)
    with db_connection(db) as conn:
        (sqlite,) = conn.execute("SELECT processes FROM sessions").fetchone()
    assert rows(pg_url, "SELECT processes FROM sessions") == [(sqlite,)]
    assert sqlite == 2
