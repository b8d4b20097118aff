"""The read model through its public API: query, follow, sessions, and the views a person explores."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from codex_logging import DatabaseError, sync_to_sqlite
from codex_logging._errors import InvalidFilterError
from codex_logging._mirror.filters import parse_age, parse_time
from codex_logging._sqlite.db import SCHEMA_VERSION, atomic, connect, rebuild_summary
from codex_logging.query_logs import follow, query, sessions
from tests.conftest import db_connection

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def write(folder: Path, sid: str, records: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{sid}.ndjson").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def scope(ts: float, pid: int, status: str = "ok", **end: Any) -> list[dict[str, Any]]:
    """A start and an end record of one process's session_scope."""
    return [
        {"ts": ts, "kind": "start", "level": "INFO", "message": "session start", "pid": pid},
        {"ts": ts + 5, "kind": "end", "level": "ERROR" if status == "error" else "INFO",
         "message": "session end", "pid": pid, "status": status, "duration_s": 5.0, **end},
    ]  # fmt: skip


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """Session a: two processes, the first fails, the second succeeds; b: messages only."""
    folder = tmp_path / "sessions"
    first = scope(NOW, 11, "error", error_type="ValueError", error="disk on fire")
    second = scope(NOW + 10, 12)
    messages = [
        {"ts": NOW + 2, "level": "WARNING", "message": "Über careful", "pid": 11, "role": "tool"},
        {"ts": NOW + 3, "level": "ERROR", "message": "broke", "pid": 11, "role": "assistant"},
        {"ts": NOW + 4, "level": "DEBUG", "message": "noise", "pid": 11},
    ]
    write(folder, "a", [first[0], *messages, first[1], *second])
    write(
        folder, "b", [{"ts": NOW + 100 + i, "message": f"b{i}", "level": "INFO"} for i in range(3)]
    )
    db = tmp_path / "m.db"
    sync_to_sqlite(db, folder)
    return db


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events]


class TestQuery:
    def test_filters(self, mirror: Path) -> None:
        """Level is a minimum, grep ignores case (Unicode too), role and kind match exactly."""
        db = str(mirror)
        assert messages(query(db, level="warning")) == ["Über careful", "broke", "session end"]
        assert messages(query(db, level="WARN", kind="message")) == ["Über careful", "broke"]
        assert messages(query(db, grep="üBER")) == ["Über careful"]
        assert messages(query(db, role="assistant")) == ["broke"]
        assert [e["seq"] for e in query(db, "a", kind="end")] == [5, 7]

    def test_since_and_until(self, mirror: Path) -> None:
        """--since includes its moment, --until excludes it; ISO, datetime and seconds agree."""
        db = str(mirror)
        iso = datetime.fromtimestamp(NOW + 3, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        assert messages(query(db, "a", since=iso, until=NOW + 10)) == [
            "broke",
            "noise",
            "session end",
        ]
        moment = datetime.fromtimestamp(NOW + 100, tz=timezone.utc)
        assert messages(query(db, since=moment)) == ["b0", "b1", "b2"]

    def test_relative_times(self) -> None:
        """An age means that long before now; a naive ISO time is local time."""
        assert parse_time("10m", now=NOW) == NOW - 600
        assert parse_time("3d", now=NOW) == NOW - 3 * 86400
        assert parse_time("2026-11-18T11:06:40+00:00") == NOW
        local = datetime(2026, 11, 18, 11, 6, 40).astimezone()
        assert parse_time("2026-11-18T11:06:40") == local.timestamp()
        assert [parse_age(a) for a in ("90s", "1.5h", "2w")] == [90.0, 5400.0, 1209600.0]

    @pytest.mark.parametrize(
        ("kwargs", "needle"),
        [
            ({"kind": "bogus"}, "unknown kind 'bogus'"),
            ({"level": "loud"}, "unknown level 'loud'"),
            ({"level": "\u00b2"}, "unknown level '\u00b2'"),  # a digit to str.isdigit, not to int()
            ({"since": "yesterdayish"}, "invalid time 'yesterdayish'"),
        ],
    )
    def test_unknown_values_raise(self, mirror: Path, kwargs: dict[str, str], needle: str) -> None:
        """An unknown kind or level, or a time that is not one, is an InvalidFilterError (ValueError)."""
        with pytest.raises(InvalidFilterError, match=needle):
            query(str(mirror), **kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "age", ["-1h", "5", "10 parsecs", "", "1e3s", "36526d", "99999999999w", "9" * 400 + "s"]
    )
    def test_bad_ages(self, age: str) -> None:
        """An age needs a number and a unit, and is at most 100 years (400 digits are not inf)."""
        with pytest.raises(ValueError, match="invalid age"):
            parse_age(age)

    def test_ages_from_zero_to_a_hundred_years(self) -> None:
        """0s is now; 36525d, 100 years, is the longest age."""
        assert parse_age("0s") == 0.0
        assert parse_age("0m") == 0.0
        assert parse_age("36525d") == 36525 * 86400.0

    @pytest.mark.parametrize("tail", [0, -1, 2**63, 10**30, 1.5, True, "5"])
    def test_tail_out_of_range(self, mirror: Path, tail: object) -> None:
        """A tail below 1, above 2**63-1 or not a whole number is an InvalidFilterError, not an OverflowError."""
        with pytest.raises(InvalidFilterError, match="tail must be a whole number from 1 to"):
            query(str(mirror), tail=tail)  # type: ignore[arg-type]
        with pytest.raises(InvalidFilterError, match="tail must be a whole number from 1 to"):
            next(follow(str(mirror), tail=tail))  # type: ignore[arg-type]

    def test_the_largest_tail(self, mirror: Path) -> None:
        """A tail of 2**63-1 returns every event."""
        assert query(str(mirror), tail=2**63 - 1) == query(str(mirror), tail=10**6)

    def test_legacy_table_refuses_fields_it_lacks(self, tmp_path: Path) -> None:
        """The older logs table has no level or role: asking for them is a clear DatabaseError."""
        legacy = tmp_path / "old.db"
        with db_connection(legacy) as conn:
            conn.execute("CREATE TABLE logs (ts TEXT, session TEXT, kind TEXT, message TEXT)")
            conn.execute("INSERT INTO logs VALUES ('2025-01-01T00:00:00', 'old', 'end', 'bye')")
        assert query(str(legacy), kind="end", grep="BY") == [
            {
                "session_id": "old",
                "seq": 1,
                "ts": "2025-01-01T00:00:00",
                "kind": "end",
                "message": "bye",
            }
        ]
        with pytest.raises(DatabaseError, match="only the older logs table"):
            query(str(legacy), level="info")


class TestFollow:
    def test_yields_the_tail_then_what_lands(self, mirror: Path, tmp_path: Path) -> None:
        """follow yields the tail, nothing while nothing lands, then only new matching events."""
        stream = follow(str(mirror), tail=2, interval=0.01, grep="new")
        assert messages(next(stream)) == []
        assert next(stream) == []
        write(tmp_path / "sessions", "b", [{"ts": 1.0, "message": "new one"}, {"message": "old"}])
        write(tmp_path / "sessions", "c", [{"ts": 2.0, "message": "NEW two"}])
        sync_to_sqlite(mirror, tmp_path / "sessions")
        assert messages(next(stream)) == ["new one", "NEW two"]
        assert next(stream) == []
        stream.close()

    def test_a_large_landing_comes_in_batches_none_lost(self, mirror: Path, tmp_path: Path) -> None:
        """1,500 new events arrive as a batch of 1,000 then one of 500, in the order they landed."""
        stream = follow(str(mirror), tail=1, interval=0.01)
        assert messages(next(stream)) == ["b2"]
        write(tmp_path / "sessions", "big", [{"ts": 1.0, "message": f"n{i}"} for i in range(1500)])
        sync_to_sqlite(mirror, tmp_path / "sessions")
        first, second = next(stream), next(stream)
        assert (len(first), len(second)) == (1000, 500)
        assert messages(first + second) == [f"n{i}" for i in range(1500)]
        assert next(stream) == []
        stream.close()


class TestSessions:
    def test_status_is_error_if_any_end_failed(self, mirror: Path) -> None:
        """The first process failed and the second succeeded: the session's status is error."""
        assert sessions(str(mirror)) == [
            {"session_id": "a", "start_time": "2026-11-18T11:06:40.000Z",
             "end_time": "2026-11-18T11:06:55.000Z", "status": "error", "events": 7,
             "messages": 3, "warnings": 1, "errors": 2, "processes": 2, "duration_s": 15.0,
             "start_ts": NOW, "end_ts": NOW + 15},
            {"session_id": "b", "start_time": "2026-11-18T11:08:20.000Z", "end_time": None,
             "status": None, "events": 3, "messages": 3, "warnings": 0, "errors": 0,
             "processes": 0, "duration_s": None, "start_ts": NOW + 100, "end_ts": None},
        ]  # fmt: skip
        assert [s["session_id"] for s in sessions(str(mirror), "b")] == ["b"]

    def test_older_schema_is_named(self, tmp_path: Path) -> None:
        """A database whose sessions view predates the counts says to sync once to upgrade."""
        db = tmp_path / "v1.db"
        with contextlib.closing(connect(str(db))) as conn:
            conn.execute("DROP VIEW sessions")
            conn.execute("CREATE VIEW sessions AS SELECT session_id FROM session_events")
        with pytest.raises(DatabaseError, match="older schema"):
            sessions(str(db))


class TestViews:
    def test_events_view_has_iso_time_and_common_fields(self, mirror: Path) -> None:
        """The events view shows an ISO-8601 UTC time and the end record's fields as columns."""
        with db_connection(mirror) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM events WHERE session_id = 'a' AND seq = 5").fetchone()
        record = dict(row)
        assert json.loads(record.pop("data"))["error"] == "disk on fire"
        assert record == {
            "time": "2026-11-18T11:06:45.000Z", "session_id": "a", "seq": 5, "ts": NOW + 5,
            "kind": "end", "level": "ERROR", "logger": None, "role": None,
            "message": "session end", "pid": 11, "status": "error", "error_type": "ValueError",
            "error": "disk on fire", "duration_s": 5.0,
            "trace_id": None, "span_id": None, "trace_flags": None,
        }  # fmt: skip

    def test_failed_sessions_yesterday_in_one_select(self, mirror: Path) -> None:
        """The docs' SELECT answers "which sessions failed, and why" from the events view."""
        sql = (
            "SELECT session_id, time, error_type, error FROM events"
            " WHERE kind = 'end' AND status = 'error'"
            " AND time >= '2026-11-18' AND time < '2026-11-19'"
        )
        with db_connection(mirror) as conn:
            assert conn.execute(sql).fetchall() == [
                ("a", "2026-11-18T11:06:45.000Z", "ValueError", "disk on fire")
            ]

    def test_nan_line_does_not_break_the_views(self, tmp_path: Path) -> None:
        """A line with NaN (older hooks) is in the views with NULL fields, not an SQL error."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "n.ndjson").write_text('{"ts": 5, "kind": "end", "status": "error", "x": NaN}\n')
        db = tmp_path / "n.db"
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            assert conn.execute("SELECT status, pid FROM events").fetchall() == [(None, None)]
            assert conn.execute("SELECT status FROM sessions").fetchall() == [("ok",)]

    def test_migration_upgrades_a_version_1_database(self, tmp_path: Path) -> None:
        """A database made by the first schema gains the views and indexes, rows untouched."""
        from codex_logging._sqlite.db import MIGRATIONS

        db = tmp_path / "old.db"
        with db_connection(db) as conn:
            for statement in MIGRATIONS[0][1]:
                conn.execute(statement)
            conn.execute("INSERT INTO session_events VALUES ('s', 1, 1.0, 'end', 'INFO', NULL,"
                         " NULL, 'bye', '{\"status\": \"error\"}')")  # fmt: skip
            conn.execute("PRAGMA user_version = 1")
        with contextlib.closing(connect(str(db))) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert [(s["session_id"], s["status"], s["events"]) for s in sessions(str(db))] == [
            ("s", "error", 1)
        ]


from codex_logging._sqlite.read import _levelno  # noqa: E402 - beside its one user


def _plans(db: Path, statements: list[str]) -> list[str]:
    with db_connection(db) as conn:
        conn.create_function("codex_levelno", 2, _levelno, deterministic=True)
        return [
            " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in statements
            if sql.lstrip().upper().startswith("SELECT") and "FROM" in sql.upper()
        ]


class TestIndexes:
    def test_common_reads_answer_from_an_index(
        self, tmp_path: Path, traced_reads: list[str]
    ) -> None:
        """query --tail, --kind across sessions, --session-id --kind end and sessions never scan the table."""

        db = tmp_path / "big.db"
        with contextlib.closing(connect(str(db))) as conn:
            conn.executemany(
                "INSERT INTO session_events VALUES (?, ?, ?, ?, 'INFO', NULL, NULL, 'm', '{}')",
                [(f"s{i % 40}", i, float(i), "start" if i % 500 == 0 else "message")
                 for i in range(1, 20001)],
            )  # fmt: skip
            with atomic(conn, str(db)):
                rebuild_summary(conn)  # rows loaded around the sync, as a bulk load would
        traced = traced_reads
        shapes = [
            ({"tail": 20}, "SCAN r USING INDEX session_rows_ts"),
            ({"session_id": "s7", "tail": 20}, "SEARCH k USING COVERING INDEX sqlite_autoindex_session_keys_1 (session_id=?)"),
            ({"kind": "start", "tail": 20}, "SEARCH r USING INDEX session_rows_kind_ts (kind=?)"),
            ({"session_id": "s0", "kind": "end", "tail": 20}, "SEARCH k USING COVERING INDEX sqlite_autoindex_session_keys_1 (session_id=?)"),
            ({"level": "warning", "tail": 20}, "SCAN r USING INDEX session_rows_above_info_ts"),
        ]  # fmt: skip
        for shape, first_step in shapes:
            traced.clear()
            query(str(db), **shape)  # type: ignore[arg-type]
            (plan,) = _plans(db, [s for s in traced if " ORDER BY " in s and " LIMIT " in s])
            self._assert_indexed(plan, shape)
            assert plan.split(" / ")[0] == first_step, plan
        # sessions reads the summary, one row per session, never the events.
        traced.clear()
        assert len(sessions(str(db))) == 40
        (plan,) = _plans(db, [s for s in traced if "FROM sessions" in s])
        assert plan == "SCAN session_summary / USE TEMP B-TREE FOR ORDER BY", plan
        traced.clear()
        assert [s["events"] for s in sessions(str(db), "s7")] == [500]
        (plan,) = _plans(db, [s for s in traced if "FROM sessions" in s])
        assert plan == (
            "SEARCH session_summary USING INDEX sqlite_autoindex_session_summary_1 (session_id=?)"
        ), plan

    @staticmethod
    def _assert_indexed(plan: str, shape: object) -> None:
        steps = plan.split(" / ")
        scans = [s for s in steps if s.startswith("SCAN ") and s != "SCAN c"]
        assert any(s.startswith("SEARCH ") for s in steps) or scans, (shape, plan)
        # A scan is only ever of an index, never of the table itself.
        assert all(" INDEX " in s for s in scans), (shape, plan)
        # A full sort is only over the rows a SEARCH already narrowed down.
        assert "USE TEMP B-TREE FOR ORDER BY" not in steps or "SEARCH" in plan, (shape, plan)
