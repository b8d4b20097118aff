"""sync_to_sqlite: incremental, exactly once, under concurrency and crashes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_logging import (
    CodexHandler,
    DatabaseError,
    DatabaseLockedError,
    InvalidSessionId,
    UnknownSessionError,
    session_scope,
    sync_to_sqlite,
)
from codex_logging._errors import SessionsDirError
from codex_logging._mirror import engine
from codex_logging._mirror.engine import LONG_LINE_BYTES
from codex_logging._mirror.target import Batch
from codex_logging._sqlite.db import MIGRATIONS, SCHEMA_VERSION, atomic, connect
from tests.checks import assert_exactly_once, expected_numbered
from tests.conftest import db_connection
from tests.writers import run_load_with_sync_loops

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: A sync that prints its running total of rows after each committed batch.
SYNC_REPORTING = (
    "import sys; from codex_logging import sync_to_sqlite\n"
    "sync_to_sqlite(sys.argv[1], sys.argv[2],"
    " progress=lambda s, r: print(r.rows_inserted, flush=True))"
)


def rows(db: Path, session: str | None = None) -> list[tuple[int, str | None]]:
    with db_connection(db) as conn:
        sql = "SELECT seq, message FROM session_events"
        if session is None:
            return conn.execute(sql + " ORDER BY session_id, seq").fetchall()
        return conn.execute(sql + " WHERE session_id = ? ORDER BY seq", (session,)).fetchall()


@contextlib.contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection for the block."""
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def write_lines(path: Path, count: int, start: int = 0) -> None:
    with path.open("ab") as f:
        for i in range(start, start + count):
            f.write(
                json.dumps({"ts": 1.0 + i, "kind": "message", "message": f"m{i}"}).encode() + b"\n"
            )


def summary_and_recomputation(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Return the ``sessions`` view (from the summary) and the view of migration 2 over the rows.

    Its ``processes`` count the pids the PostgreSQL mirror counts (integers,
    as numbers or strings: migration 6), not every JSON value of ``pid``.
    """
    from codex_logging._sqlite.db import PID_OF

    (old_view,) = [s for s in MIGRATIONS[1][1] if s.startswith("CREATE VIEW sessions")]
    any_pid = """json_extract(
                        CASE WHEN json_valid(m.data) THEN m.data END, '$.pid')"""
    assert any_pid in old_view
    old_view = old_view.replace(any_pid, PID_OF.format(line="m.data"))
    # The status of migration 10: a session whose latest end (by ts, then
    # seq) is terminated, and none failed, is terminated.
    latest_end = """(SELECT json_extract(CASE WHEN json_valid(l.data) THEN l.data END, '$.status')
        FROM session_events l WHERE l.session_id = c.session_id AND l.kind = 'end'
        AND l.ts IS NOT NULL ORDER BY l.ts DESC, l.seq DESC LIMIT 1) AS latest_end,"""
    ok = "CASE WHEN failed THEN 'error' WHEN end_ts IS NOT NULL THEN 'ok' END AS status"
    assert ok in old_view
    old_view = old_view.replace(
        ok,
        "CASE WHEN failed THEN 'error' WHEN end_ts IS NULL THEN NULL"
        " WHEN latest_end = 'terminated' THEN 'terminated' ELSE 'ok' END AS status",
    )
    old_view = old_view.replace("c.events AS events,", "c.events AS events, " + latest_end)
    with db_connection(db) as conn:
        conn.execute(old_view.replace("CREATE VIEW sessions", "CREATE TEMP VIEW old_sessions"))
        sql = "SELECT * FROM {} ORDER BY session_id"
        return (
            conn.execute(sql.format("sessions")).fetchall(),
            conn.execute(sql.format("old_sessions")).fetchall(),
        )


def random_line(rng: random.Random) -> bytes:
    """One line as hooks old and new write them: odd kinds, levels, times, pids and statuses."""
    if rng.random() < 0.03:
        return rng.choice([b"not json", b"[1, 2]", b'"text"', b"{"])
    record: dict[str, Any] = {"message": f"m{rng.randrange(10**6)}"}
    kind = rng.choice(["start", "end", "message", "message", "message", "other", None, 7])
    if kind is not None:
        record["kind"] = kind
    elif rng.random() < 0.3:
        record["type"] = rng.choice(["session_start", "session_end"])
    level = rng.choice(["INFO", "DEBUG", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", None, 3])
    if level is not None:
        record["level"] = level
    record["ts"] = rng.choice([
        rng.uniform(0, 1000), rng.randrange(1000), None, "2025-01-01T12:34:56.123456Z",
        "2025-01-01T12:00:00+02:00", "yesterday", float("nan"),
    ])  # fmt: skip
    if rng.random() < 0.7:
        record["pid"] = rng.choice([1, 2, 2.0, "2", True, None, [1]])
    if rng.random() < 0.6:
        record["status"] = rng.choice(["ok", "error", "error", "terminated", 1, None])
    return json.dumps(record).encode() + b"\n"


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder


class TestBasics:
    def test_incremental_and_idempotent(self, tmp_path: Path, sessions: Path) -> None:
        """Lines go in once with 1-based seq; a second sync inserts nothing; new lines follow."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        first = sync_to_sqlite(db, sessions)
        assert (first.files, first.rows_inserted, first.lines_quarantined) == (1, 3, 0)
        assert sync_to_sqlite(db, sessions).rows_inserted == 0
        write_lines(sessions / "s.ndjson", 2, start=3)
        assert sync_to_sqlite(db, sessions).rows_inserted == 2
        assert rows(db) == [(i + 1, f"m{i}") for i in range(5)]

    def test_partial_last_line_waits(self, tmp_path: Path, sessions: Path) -> None:
        """A last line with no newline is left for the next sync."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        path.write_bytes(b'{"message": "a"}\n{"message": "b"')
        assert sync_to_sqlite(db, sessions).rows_inserted == 1
        with db_connection(db) as conn:
            assert conn.execute(
                "SELECT seq, byte_offset FROM session_ingest_watermark"
            ).fetchone() == (1, 17)
        with path.open("ab") as f:
            f.write(b', "x": 1}\n')
        assert sync_to_sqlite(db, sessions).rows_inserted == 1
        assert rows(db) == [(1, "a"), (2, "b")]

    def test_bad_lines_are_quarantined(self, tmp_path: Path, sessions: Path) -> None:
        """Broken JSON, arrays, scalars, invalid UTF-8 and blank lines go to session_ingest_errors."""
        db = tmp_path / "x.db"
        bad = [b'{"broken', b"[1, 2]", b"42", b'{"message": "\xff\xfe"}', b""]
        content = b'{"message": "ok1"}\n' + b"\n".join(bad) + b'\n{"message": "ok2"}\n'
        (sessions / "s.ndjson").write_bytes(content)
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (2, 5)
        assert rows(db) == [(1, "ok1"), (7, "ok2")]
        with db_connection(db) as conn:
            errors = conn.execute(
                "SELECT seq, byte_offset, error, raw FROM session_ingest_errors ORDER BY seq"
            ).fetchall()
        assert [e[0] for e in errors] == [2, 3, 4, 5, 6]
        assert [e[3] for e in errors] == [
            '{"broken',
            "[1, 2]",
            "42",
            b'{"message": "\xff\xfe"}',
            "",
        ]
        assert [content[e[1] : e[1] + len(bad[i])] for i, e in enumerate(errors)] == bad
        assert "not a JSON object but list" in errors[1][2]

    def test_older_hook_lines(self, tmp_path: Path, sessions: Path) -> None:
        """ISO ts become Unix seconds, type session_start/end becomes kind, missing fields are NULL."""
        db = tmp_path / "x.db"
        lines = [
            {"ts": "2025-01-01T12:34:56.123456Z", "type": "session_start"},
            {"ts": "2025-01-01T13:34:56+01:00", "message": {"text": "hi"}},
            {"ts": "2025-01-01T12:34:56", "type": "session_end", "level": 5},
            {"ts": "not a date", "type": "other"},
        ]
        (sessions / "old.ndjson").write_text("".join(json.dumps(x) + "\n" for x in lines))
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            got = conn.execute(
                "SELECT seq, ts, kind, level, logger, message FROM session_events ORDER BY seq"
            ).fetchall()
        assert got == [
            (1, 1735734896.123456, "start", None, None, None),
            (2, 1735734896.0, "message", None, None, '{"text": "hi"}'),
            (3, 1735734896.0, "end", "5", None, None),
            (4, None, "message", None, None, None),
        ]

    def test_session_id_is_the_files(self, tmp_path: Path, sessions: Path) -> None:
        """session_id comes from the file name whatever the line says; data keeps the line."""
        db = tmp_path / "x.db"
        (sessions / "real.ndjson").write_text('{"session_id": "fake", "message": "m"}\n')
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            ((session_id, data),) = conn.execute("SELECT session_id, data FROM session_events")
        assert session_id == "real"
        assert json.loads(data) == {"session_id": "fake", "message": "m"}

    def test_session_filter_and_errors(self, tmp_path: Path, sessions: Path) -> None:
        """session_id= syncs one file; unknown and invalid ids raise named errors."""
        db = tmp_path / "x.db"
        write_lines(sessions / "a.ndjson", 2)
        write_lines(sessions / "b.ndjson", 3)
        (sessions / "not valid.ndjson").write_text("{}\n")
        (sessions / "link.ndjson").symlink_to(sessions / "a.ndjson")
        report = sync_to_sqlite(db, sessions, session_id="b")
        assert (report.files, report.rows_inserted, report.sessions) == (1, 3, ["b"])
        with pytest.raises(UnknownSessionError):
            sync_to_sqlite(db, sessions, session_id="nope")
        with pytest.raises(InvalidSessionId):
            sync_to_sqlite(db, sessions, session_id="../b")
        assert sync_to_sqlite(db, sessions).sessions == ["a", "b"]

    def test_sessions_view(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The sessions view gives start, end, status and event count per session."""
        with session_scope("good"):
            pass
        with pytest.raises(RuntimeError), session_scope("bad"):
            raise RuntimeError
        sync_to_sqlite()
        with db_connection(tmp_path / ".codex" / "session_logs.db") as conn:
            got = conn.execute(
                "SELECT session_id, status, events, start_ts <= end_ts FROM sessions ORDER BY 1"
            ).fetchall()
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert got == [("bad", "error", 2, 1), ("good", "ok", 2, 1)]

    def test_database_files_are_private(self, tmp_path: Path, sessions: Path) -> None:
        """Under umask(0) the database and its -wal / -shm files are 0600."""
        write_lines(sessions / "s.ndjson", 1)
        old = os.umask(0)
        try:
            db = tmp_path / "new" / "x.db"
            holder = threading.Event()
            done = threading.Event()

            def hold_open() -> None:
                # A second connection keeps -wal and -shm in place to be inspected.
                sync_to_sqlite(db, sessions)
                with db_connection(db) as c:
                    c.execute("SELECT count(*) FROM session_events").fetchone()
                    holder.set()
                    done.wait(10)

            t = threading.Thread(target=hold_open)
            t.start()
            assert holder.wait(10)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}
            done.set()
            t.join()
        finally:
            os.umask(old)
        assert modes["x.db"] == 0o600
        assert modes.get("x.db-wal", 0o600) == 0o600
        assert modes.get("x.db-shm", 0o600) == 0o600
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


class TestChangedFiles:
    def test_truncated_file(self, tmp_path: Path, sessions: Path) -> None:
        """A file that shrank is reported; its new lines follow on; nothing stored is lost."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 3)
        sync_to_sqlite(db, sessions)
        path.write_bytes(b"")
        write_lines(path, 1, start=10)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 1
        assert len(report.warnings) == 1
        assert "truncated" in report.warnings[0]
        assert rows(db) == [(1, "m0"), (2, "m1"), (3, "m2"), (4, "m10")]

    def test_emptied_file_is_reported_once(self, tmp_path: Path, sessions: Path) -> None:
        """A file emptied by a cleaner is reported by one sync, not by every later one."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 2)
        sync_to_sqlite(db, sessions)
        path.write_bytes(b"")
        assert len(sync_to_sqlite(db, sessions).warnings) == 1
        assert sync_to_sqlite(db, sessions).warnings == []
        assert len(rows(db)) == 2

    def test_replaced_file(self, tmp_path: Path, sessions: Path) -> None:
        """A file replaced by a longer one with other first bytes is reported and taken again."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 2)
        sync_to_sqlite(db, sessions)
        replacement = tmp_path / "new.ndjson"
        write_lines(replacement, 3, start=100)
        replacement.replace(path)
        report = sync_to_sqlite(db, sessions)
        assert ["replaced" in w for w in report.warnings] == [True]
        assert rows(db) == [(1, "m0"), (2, "m1"), (3, "m100"), (4, "m101"), (5, "m102")]


class TestLocking:
    def test_locked_database_is_a_clear_error(self, tmp_path: Path, sessions: Path) -> None:
        """A database held by another writer past the timeout raises; nothing half-written."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 5)
        sync_to_sqlite(db, sessions, session_id="s")
        write_lines(sessions / "s.ndjson", 5, start=5)
        with write_lock_held(db), pytest.raises(DatabaseLockedError, match="stayed locked"):
            sync_to_sqlite(db, sessions, busy_timeout=0.2)
        assert len(rows(db)) == 5
        assert sync_to_sqlite(db, sessions).rows_inserted == 5
        assert [r[0] for r in rows(db)] == list(range(1, 11))

    def test_not_a_database(self, tmp_path: Path, sessions: Path) -> None:
        """A file that is not a database gives DatabaseError and is left as it was."""
        db = tmp_path / "x.db"
        db.write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(DatabaseError):
            sync_to_sqlite(db, sessions)
        assert db.read_bytes() == b"this is not sqlite" * 100

    def test_broken_schema_is_a_database_error(self, tmp_path: Path, sessions: Path) -> None:
        """A database whose watermark table was dropped gives DatabaseError, not a raw sqlite3 error."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 1)
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            conn.execute("DROP TABLE session_ingest_watermark")
        with pytest.raises(DatabaseError, match="no such table: session_ingest_watermark"):
            sync_to_sqlite(db, sessions)

    def test_new_database_waits_for_a_writer_instead_of_failing(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """Switching a new database to WAL waits out another writer's lock like any write.

        SQLite refuses that switch at once, without its busy handler, while another
        connection holds the write lock; three syncs starting together on a new
        database hit exactly that (it failed CI once).
        """
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        # Another sync's first transaction on the new file (still in
        # rollback-journal mode), its tables not committed yet.
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("CREATE TABLE other (x)")
        blocker.execute("INSERT INTO other VALUES (1)")
        started = threading.Event()

        def release_later() -> None:
            # The lock is released only once the sync has started: the
            # precondition (a sync meeting the lock) cannot silently be missed.
            started.wait(10)
            time.sleep(0.3)
            blocker.execute("COMMIT")

        release = threading.Thread(target=release_later)
        release.start()
        try:
            started.set()
            # Without the wait this raised DatabaseLockedError at once.
            report = sync_to_sqlite(db, sessions, busy_timeout=10)
        finally:
            release.join()
            blocker.close()
        assert report.rows_inserted == 3
        with db_connection(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_new_database_still_locked_past_the_timeout(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A new database whose lock outlasts busy_timeout gives DatabaseLockedError, not a hang."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        with write_lock_held(db), pytest.raises(DatabaseLockedError, match="stayed locked"):
            sync_to_sqlite(db, sessions, busy_timeout=0.3)
        assert sync_to_sqlite(db, sessions).rows_inserted == 3

    def test_two_syncs_in_threads(self, tmp_path: Path, sessions: Path) -> None:
        """Syncs from three threads released together never duplicate a row."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 20_000)
        reports = []
        spans: list[tuple[float, float]] = []
        start = threading.Barrier(3)

        def sync() -> None:
            start.wait()
            began = time.monotonic()
            reports.append(sync_to_sqlite(db, sessions))
            spans.append((began, time.monotonic()))

        threads = [threading.Thread(target=sync) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The precondition: the three syncs really overlapped.
        assert max(b for b, _ in spans) < min(e for _, e in spans), spans
        assert sum(r.rows_inserted for r in reports) == 20_000
        assert [r[0] for r in rows(db)] == list(range(1, 20_001))


@pytest.mark.slow
class TestProcesses:
    def test_writers_and_sync_loops_together(self, tmp_path: Path, sessions: Path) -> None:
        """4 writer processes and 2 sync loops, then one last sync: every line once, seq contiguous."""
        db = tmp_path / "x.db"
        run_load_with_sync_loops(str(sessions), str(db), workers=4, threads=2, count=1500, size=200)
        # The precondition: the loops synced while the writers wrote.
        assert db.exists()
        assert len(rows(db, "load")) > 0
        sync_to_sqlite(db, sessions)
        got = rows(db, "load")
        assert [seq for seq, _ in got] == list(range(1, 12_001))
        assert_exactly_once((m for _, m in got), expected_numbered(4, 2, 1500))

    def test_syncs_starting_together_on_a_new_database(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """Six processes released at once onto a database that does not exist yet all succeed."""
        write_lines(sessions / "s.ndjson", 2000)
        wait_then_sync = (
            "import os, sys, time\n"
            "from codex_logging import sync_to_sqlite\n"
            "print('ready', flush=True)\n"
            "while not os.path.exists(sys.argv[3]): time.sleep(0.001)\n"
            "sync_to_sqlite(sys.argv[1], sys.argv[2])\n"
        )
        for attempt in range(4):
            db = tmp_path / f"x{attempt}.db"
            go = tmp_path / f"go{attempt}"
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", wait_then_sync, str(db), str(sessions), str(go)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for _ in range(6)
            ]
            for proc in procs:  # every child imported and waiting
                assert proc.stdout is not None
                assert proc.stdout.readline() == b"ready\n"
            assert not db.exists()  # the precondition: a database that does not exist yet
            go.touch()
            for proc in procs:
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err.decode()
            assert [seq for seq, _ in rows(db)] == list(range(1, 2001))

    def test_sync_killed_at_random_points(self, tmp_path: Path, sessions: Path) -> None:
        """A sync killed with SIGKILL after a random number of observed batches, 6 times, then a clean one: every line once."""
        db = tmp_path / "x.db"
        with (sessions / "big.ndjson").open("w") as f:
            for i in range(200_000):  # every 1000 lines a process: start, warnings, errors, end
                step = i % 1000
                kind = "start" if step == 0 else "end" if step == 999 else "message"
                level = "WARNING" if step % 7 == 1 else "ERROR" if step % 11 == 1 else "INFO"
                status = "error" if i // 1000 % 3 == 0 else "ok"
                f.write(json.dumps({"ts": 1.0 + i, "kind": kind, "level": level, "message": f"m{i}",
                                    "pid": i // 1000, "status": status}) + "\n")  # fmt: skip
        rng = random.Random(1234)
        seen = []
        for _ in range(6):
            proc = subprocess.Popen(
                [sys.executable, "-c", SYNC_REPORTING, str(db), str(sessions)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            # Killed on observed progress, not on a timer: after 1 to 4 more
            # committed batches, somewhere inside the batch that follows.
            wanted = rng.randint(1, 4)
            reported = [int(proc.stdout.readline()) for _ in range(wanted)]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
            stored = len(rows(db))
            # The precondition: the kill landed mid-file, after the batches seen.
            assert 0 < reported[-1] <= stored < 200_000, (reported, stored)
            summary, recomputed = summary_and_recomputation(db)
            assert summary == recomputed
            assert summary[0][7] == stored  # events
            seen.append(stored)
        assert seen == sorted(seen)
        sync_to_sqlite(db, sessions)
        got = rows(db)
        assert len(got) == 200_000
        assert [seq for seq, _ in got] == list(range(1, 200_001))
        assert [m for _, m in got] == [f"m{i}" for i in range(200_000)]
        summary, recomputed = summary_and_recomputation(db)
        assert summary == recomputed
        (row,) = summary
        # processes, events, messages, warnings, errors, status
        assert row[6:12] == (200, 200_000, 199_600, 200 * 143, 200 * 78, "error")


class TestSummary:
    @pytest.mark.parametrize("seed", range(8))
    def test_summary_equals_the_aggregate_over_the_rows(
        self, tmp_path: Path, sessions: Path, seed: int
    ) -> None:
        """Random lines synced in rounds, files cut and rewritten: the summary-based view equals migration 2's aggregate view and a rebuild."""
        from codex_logging._sqlite.db import rebuild_summary

        rng = random.Random(seed)
        db = tmp_path / "x.db"
        names = [f"s{i}" for i in range(4)]
        cuts = 0
        for _ in range(6):
            for name in rng.sample(names, rng.randint(1, 4)):
                path = sessions / f"{name}.ndjson"
                lines = b"".join(random_line(rng) for _ in range(rng.randint(1, 60)))
                if path.exists() and rng.random() < 0.25:
                    path.write_bytes(lines[: rng.randint(1, len(lines))])  # cut and rewritten
                    cuts += 1
                else:
                    with path.open("ab") as f:
                        f.write(lines)
            sync_to_sqlite(db, sessions)
            summary, recomputed = summary_and_recomputation(db)
            assert summary == recomputed
        # The precondition: sessions with starts, failed ends, warnings, errors
        # and several processes were compared, after at least one cut.
        assert cuts > 0
        with db_connection(db) as conn:
            stats = conn.execute(
                "SELECT COUNT(*), SUM(end_ts IS NOT NULL), SUM(status = 'error'),"
                " SUM(warnings > 0), SUM(errors > 0), SUM(processes > 1) FROM sessions"
            ).fetchone()
            assert stats[0] == len(names)
            assert all(value > 0 for value in stats), stats
            kept = conn.execute("SELECT * FROM session_summary ORDER BY session_id").fetchall()
            with atomic(conn, str(db)):
                rebuild_summary(conn)
            assert (
                conn.execute("SELECT * FROM session_summary ORDER BY session_id").fetchall() == kept
            )

    def test_a_row_the_database_refuses_is_not_in_the_summary(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A failed end the database refuses is quarantined and left out of the summary, the rest counted."""
        db = tmp_path / "x.db"
        path = sessions / "r.ndjson"
        path.write_bytes(b'{"ts": 1.0, "kind": "start", "pid": 1, "message": "go"}\n')
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON session_rows"
                " WHEN NEW.message = 'poison' BEGIN SELECT RAISE(ABORT, 'no poison here'); END"
            )
        with path.open("ab") as f:
            f.write(b'{"ts": 2.0, "level": "WARNING", "message": "a"}\n'
                    b'{"ts": 3.0, "kind": "end", "status": "error", "pid": 2, "message": "poison"}\n'
                    b'{"ts": 4.0, "kind": "end", "status": "ok", "pid": 1, "message": "b"}\n')  # fmt: skip
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (2, 1)
        summary, recomputed = summary_and_recomputation(db)
        assert summary == recomputed
        # start, end, duration, processes, events, messages, warnings, errors, status
        assert [row[3:12] for row in summary] == [(1.0, 4.0, 3.0, 1, 3, 1, 1, 0, "ok")]

    def test_migration_builds_the_summary_of_existing_rows(self, tmp_path: Path) -> None:
        """A version-3 database with rows gains a summary equal to the aggregate over them."""
        from codex_logging._sqlite.db import MIGRATIONS

        db = tmp_path / "old.db"
        rng = random.Random(7)
        with db_connection(db) as conn:
            for _, statements in MIGRATIONS[:3]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("PRAGMA user_version = 3")
            conn.executemany(
                "INSERT INTO session_events VALUES (?, ?, ?, ?, ?, NULL, NULL, '', ?)",
                [(f"s{i % 5}", i, rng.choice([float(i), None]),
                  rng.choice(["start", "end", "message", None]), rng.choice(["INFO", "WARN", "ERROR"]),
                  json.dumps({"pid": i % 3, "status": rng.choice(["ok", "error"])}))
                 for i in range(1, 400)],
            )  # fmt: skip
            conn.commit()
        with contextlib.closing(connect(str(db))) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        summary, recomputed = summary_and_recomputation(db)
        assert len(summary) == 5
        assert summary == recomputed
        assert {row[6] for row in summary} == {3}  # processes: pids 0, 1 and 2


class TestCompareAndSet:
    def test_batch_is_dropped_when_the_watermark_moved(
        self, tmp_path: Path, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If another sync moved the watermark meanwhile, this sync's batch is not written twice."""
        from codex_logging._sqlite.sync import SqliteTarget

        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        original = SqliteTarget.commit

        def racing_commit(self: SqliteTarget, batch: Batch) -> int:
            # Another sync (on a rotated file at the same path) commits first.
            with db_connection(db) as other:
                other.executemany(
                    "INSERT INTO session_events (session_id, seq, message) VALUES ('s', ?, ?)",
                    [(i + 1, f"m{i}") for i in range(3)],
                )
                other.execute(
                    "INSERT INTO session_ingest_watermark (session_id, seq, byte_offset) VALUES ('s', 3, ?)",
                    (batch.mark.byte_offset,),
                )
            return original(self, batch)

        monkeypatch.setattr(SqliteTarget, "commit", racing_commit)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 0
        assert ["moved its watermark" in w for w in report.warnings] == [True]
        assert [r[0] for r in rows(db)] == [1, 2, 3]


def watermark(db: Path, session: str) -> tuple[int, int, int, int]:
    with db_connection(db) as conn:
        return conn.execute(
            "SELECT seq, byte_offset, file_dev, file_ino FROM session_ingest_watermark"
            " WHERE session_id = ?",
            (session,),
        ).fetchone()


class TestCuts:
    def test_cut_and_regrown_past_the_watermark_loses_nothing(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """truncate -s 8000 then 200 more records past the old watermark: reported, every new record stored."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 300)
        sync_to_sqlite(db, sessions)
        old_offset = watermark(db, "s")[1]
        os.truncate(path, 8000)
        write_lines(path, 200, start=1000)
        assert path.stat().st_size > old_offset  # the precondition of the case
        report = sync_to_sqlite(db, sessions)
        assert len(report.warnings) == 1
        assert "truncated" in report.warnings[0]
        with db_connection(db) as conn:
            new = [
                m
                for (m,) in conn.execute(
                    "SELECT message FROM session_events WHERE seq > 300 ORDER BY seq"
                )
            ]
            torn = conn.execute("SELECT seq, error FROM session_ingest_errors").fetchall()
        lines = path.read_bytes().split(b"\n")[:-1]
        assert len(new) == len(lines)
        assert new[-200:] == [f"m{i}" for i in range(1000, 1200)]
        assert torn == [(300 + len(lines) - 199, "torn record")]  # the cut line, glued to m1000

    def test_replaced_by_a_file_with_the_same_first_bytes(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """Another file at the path with the same first 4 KiB is noticed by (dev, ino); both are filled in."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 200)
        sync_to_sqlite(db, sessions)
        info = path.stat()
        assert watermark(db, "s") == (200, info.st_size, info.st_dev, info.st_ino)
        copy = tmp_path / "copy.ndjson"
        copy.write_bytes(path.read_bytes()[:5000])
        write_lines(copy, 100, start=500)
        copy.replace(path)
        report = sync_to_sqlite(db, sessions)
        assert ["replaced" in w for w in report.warnings] == [True]
        info = path.stat()
        lines = path.read_bytes().split(b"\n")[:-1]
        assert watermark(db, "s") == (200 + len(lines), info.st_size, info.st_dev, info.st_ino)
        assert rows(db)[-1] == (200 + len(lines), "m599")


class TestFolders:
    def test_one_session_id_in_two_folders(self, tmp_path: Path) -> None:
        """Two folders with a 'nightly' session into one database: the second is refused, never duplicated."""
        db = tmp_path / "x.db"
        first, second = tmp_path / "a" / "sessions", tmp_path / "b" / "sessions"
        for folder, start in ((first, 0), (second, 100)):
            folder.mkdir(parents=True)
            write_lines(folder / "nightly.ndjson", 10, start=start)
        warnings = []
        for _ in range(4):
            assert sync_to_sqlite(db, first).warnings == []
            warnings += sync_to_sqlite(db, second).warnings
        assert rows(db) == [(i + 1, f"m{i}") for i in range(10)]
        assert len(warnings) == 4
        assert str(first) in warnings[0]
        assert str(second) in warnings[0]
        assert "nightly: skipped" in warnings[0]

    def test_folder_id_survives_a_rename(self, tmp_path: Path) -> None:
        """A renamed sessions folder is still the same folder: its new lines follow, no warning."""
        db = tmp_path / "x.db"
        folder = tmp_path / "old"
        folder.mkdir()
        write_lines(folder / "s.ndjson", 3)
        sync_to_sqlite(db, folder)
        folder.rename(tmp_path / "new")
        write_lines(tmp_path / "new" / "s.ndjson", 2, start=3)
        report = sync_to_sqlite(db, tmp_path / "new")
        assert (report.rows_inserted, report.warnings) == (2, [])
        assert rows(db) == [(i + 1, f"m{i}") for i in range(5)]

    def test_missing_folder_creates_no_database(self, tmp_path: Path) -> None:
        """A missing sessions folder: one warning, nothing raised, no database created."""
        db = tmp_path / "x.db"
        report = sync_to_sqlite(db, tmp_path / "nope")
        assert report.warnings == [f"no sessions folder {tmp_path / 'nope'} (yet): nothing to sync"]
        assert (report.files, report.rows_inserted) == (0, 0)
        assert not db.exists()

    def test_folder_that_is_a_file(self, tmp_path: Path) -> None:
        """A sessions folder that is a regular file raises SessionsDirError, a NotADirectoryError."""
        (tmp_path / "f").write_text("x")
        with pytest.raises(SessionsDirError, match="is not a folder") as caught:
            sync_to_sqlite(tmp_path / "x.db", tmp_path / "f")
        assert isinstance(caught.value, NotADirectoryError)
        assert not (tmp_path / "x.db").exists()

    def test_cli_folder_edges(self, tmp_path: Path) -> None:
        """codex-logs sync: a file as folder is one line and exit 2; a missing one exit 0, no database."""
        db = tmp_path / "x.db"
        (tmp_path / "f").write_text("x")
        cli = [str(BIN / "codex-logs"), "sync", "--db", str(db), "--sessions-dir"]
        out = subprocess.run(
            [*cli, str(tmp_path / "f")], capture_output=True, text=True, check=False
        )
        assert (out.returncode, out.stdout) == (2, "")
        assert out.stderr.startswith("codex-logs")
        assert out.stderr.endswith(
            f": error: the sessions folder {tmp_path / 'f'} is not a folder\n"
        )
        assert out.stderr.count("\n") == 1
        out = subprocess.run(
            [*cli, str(tmp_path / "m")], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0
        assert (
            out.stderr == f"warning: no sessions folder {tmp_path / 'm'} (yet): nothing to sync\n"
        )
        assert not db.exists()

    def test_watch_waits_for_the_first_session(self, tmp_path: Path) -> None:
        """sync --watch started before the folder exists keeps going and takes the first session."""
        db, folder = tmp_path / "x.db", tmp_path / "later"
        proc = subprocess.Popen(
            [
                str(BIN / "codex-logs"),
                "sync",
                "--watch",
                "0.1",
                "--db",
                str(db),
                "--sessions-dir",
                str(folder),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "synced 0 files: 0 rows inserted, 0 lines quarantined\n"
        assert not db.exists()
        folder.mkdir()
        write_lines(folder / "s.ndjson", 2)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "2 rows inserted" in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert seen[-1] == "synced 1 file: 2 rows inserted, 0 lines quarantined\n"
        assert rows(db) == [(1, "m0"), (2, "m1")]


class TestOpenOnce:
    @pytest.mark.parametrize("swap", ["fifo", "symlink", "directory"])
    def test_file_swapped_during_a_sync(
        self, tmp_path: Path, sessions: Path, swap: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file swapped for a FIFO, symlink or folder once looked at is skipped with a warning; the next file syncs."""
        db = tmp_path / "x.db"
        for name in ("a", "b", "c"):
            write_lines(sessions / f"{name}.ndjson", 2)
        swapped = []
        real_stat = os.stat

        def stat_then_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            # The idle check's lstat of b says "regular file"; b is swapped
            # before the sync opens it.
            info = real_stat(path, *args, **kwargs)
            if path == "b.ndjson" and not swapped:
                b = sessions / "b.ndjson"
                b.unlink()
                if swap == "fifo":
                    os.mkfifo(b)
                elif swap == "symlink":
                    b.symlink_to(sessions / "a.ndjson")
                else:
                    b.mkdir()
                swapped.append(swap)
            return info

        monkeypatch.setattr(os, "stat", stat_then_swap)
        report = sync_to_sqlite(db, sessions)
        monkeypatch.undo()
        assert swapped == [swap]
        assert len(report.warnings) == 1
        assert report.warnings[0].startswith("b: skipped")
        assert {sid for (sid,) in _session_ids(db)} == {"a", "c"}
        assert report.rows_inserted == 4
        # Swapped before the sync looks at it, it is not a session file at all.
        report = sync_to_sqlite(db, sessions)
        assert (report.warnings, report.rows_inserted, report.sessions) == ([], 0, ["a", "c"])

    def test_one_session_in_a_folder_that_cannot_be_listed(
        self, tmp_path: Path, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A folder that can be searched but not read (mode 0o100) still syncs a named session."""
        write_lines(sessions / "a.ndjson", 2)
        real_open = os.open

        def no_read(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_DIRECTORY:  # what a folder without read permission answers
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", no_read)
        report = sync_to_sqlite(tmp_path / "x.db", sessions, session_id="a")
        monkeypatch.undo()
        assert (report.rows_inserted, report.warnings) == (2, [])


def _session_ids(db: Path) -> list[tuple[str]]:
    with db_connection(db) as conn:
        return conn.execute("SELECT DISTINCT session_id FROM session_events").fetchall()


class TestMirrorRedaction:
    def test_foreign_lines_are_redacted(self, tmp_path: Path, sessions: Path) -> None:
        """A foreign line's secret keys and shapes, and a quarantined line's shapes, never reach the database."""
        db = tmp_path / "x.db"
        token = "Bearer abcdefghijklmnop"
        (sessions / "f.ndjson").write_bytes(
            json.dumps(
                {"message": f"auth {token}", "api_key": "k-123", "n": {"password": "p"}}
            ).encode()
            + b"\n"
            + f"not json {token}".encode()
            + b"\n"
            + b"\xff not utf-8 "
            + token.encode()
            + b"\n"
        )
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (1, 2)
        with db_connection(db) as conn:
            message, data = conn.execute("SELECT message, data FROM session_events").fetchone()
            raws = [
                r for (r,) in conn.execute("SELECT raw FROM session_ingest_errors ORDER BY seq")
            ]
        assert message == "auth Bearer [REDACTED]"
        assert json.loads(data) == {
            "message": "auth Bearer [REDACTED]",
            "api_key": "[REDACTED]",
            "n": {"password": "[REDACTED]"},
        }
        assert raws == ["not json Bearer [REDACTED]", b"\xff not utf-8 Bearer [REDACTED]"]

    def test_fields_of_lines_written_unredacted_are_redacted(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A secret name's value in any string field (not only message) never reaches the mirror."""
        handler = CodexHandler(sessions, "raw", redact=False)
        logger = logging.getLogger("raw-fields")
        logger.addHandler(handler)
        try:
            logger.warning(
                "callback",
                extra={"detail": "password=CANARYpw", "url": "/cb?access_token=CANARYat"},
            )
        finally:
            logger.removeHandler(handler)
        assert b"CANARYpw" in (sessions / "raw.ndjson").read_bytes()  # written as given
        sync_to_sqlite(tmp_path / "x.db", sessions)
        with db_connection(tmp_path / "x.db") as conn:
            (data,) = conn.execute("SELECT data FROM session_events").fetchone()
        assert "CANARY" not in data
        assert json.loads(data)["detail"] == "password=[REDACTED]"
        assert json.loads(data)["url"] == "/cb?access_token=[REDACTED]"


def _proc_read_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


class TestBoundedWork:
    def test_batches_close_at_a_byte_budget(
        self, tmp_path: Path, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """30 records of 1 MiB commit in batches of 8 (8 MiB), not all in one 5,000-line batch.

        Without a parse worker (with one, a line longer than its batches
        commits alone: tests/test_parse_worker.py).
        """
        monkeypatch.setattr(engine, "WORKER_RUN_BYTES", 1 << 60)
        db = tmp_path / "x.db"
        with (sessions / "big.ndjson").open("wb") as f:
            for i in range(30):
                f.write(json.dumps({"message": f"m{i}", "pad": "x" * (1 << 20)}).encode() + b"\n")
        seen: list[int] = []
        sync_to_sqlite(db, sessions, progress=lambda _s, r: seen.append(r.rows_inserted))
        assert seen == [8, 16, 24, 30]
        assert [m for _, m in rows(db)] == [f"m{i}" for i in range(30)]

    def test_pending_long_line_is_not_read_again_each_round(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A 16 MiB unterminated line synced 6 times is read about once, then lands whole."""
        db = tmp_path / "x.db"
        # The modules and the database, before the count starts.
        (sessions / "warm.ndjson").write_bytes(b'{"message": "warm"}\n')
        sync_to_sqlite(db, sessions)
        path = sessions / "long.ndjson"
        path.write_bytes(b'{"message": "first"}\n{"message": "' + b"y" * (16 << 20))
        before = _proc_read_bytes()
        for _ in range(6):
            with path.open("ab") as f:
                f.write(b"z" * 1000)
            assert sync_to_sqlite(db, sessions).rows_inserted in (0, 1)
        read = _proc_read_bytes() - before
        # Once, plus the small appends and the database, and the parse
        # worker's share (docs/mirror.md, "Sync"): the chunk its reader took
        # before it handed the long line over, and the modules its interpreter
        # read at start (about 2.5 MiB, more under coverage: a reaped child's
        # reads count here). Reading the line a second time would be 32 MiB.
        assert 16 << 20 < read < 24 << 20
        with path.open("ab") as f:
            f.write(b'"}\n')
        assert sync_to_sqlite(db, sessions).rows_inserted == 1
        assert [(seq, len(m)) for seq, m in rows(db, "long")] == [(1, 5), (2, (16 << 20) + 6000)]

    def test_pending_line_cut_and_rewritten_is_scanned_again(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A pending partial line replaced in place by shorter complete lines is split at their line ends."""
        db = tmp_path / "x.db"
        path = sessions / "p.ndjson"
        path.write_bytes(b'{"message": "pending')
        assert sync_to_sqlite(db, sessions).rows_inserted == 0
        with path.open("r+b") as f:  # same file, new bytes: a line end inside the scanned part
            f.truncate(0)
            f.write(b'{}\n{"message": "y", "pad": "zzzz"}\n')
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (2, 0)
        assert rows(db) == [(1, None), (2, "y")]

    @pytest.mark.slow
    def test_peak_memory_of_many_large_records(self, tmp_path: Path, sessions: Path) -> None:
        """Syncing 150 records of 1 MiB peaks far below their size (main held them all in one batch)."""
        with (sessions / "big.ndjson").open("wb") as f:
            for i in range(150):
                f.write(json.dumps({"message": f"m{i}", "pad": "x" * (1 << 20)}).encode() + b"\n")
        peak = (
            "import sys\nfrom codex_logging import sync_to_sqlite\n"
            "r = sync_to_sqlite(sys.argv[1], sys.argv[2])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "print(r.rows_inserted, hwm)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", peak, str(tmp_path / "x.db"), str(sessions)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        inserted, hwm_kb = map(int, out.stdout.split())
        assert inserted == 150
        assert hwm_kb < 120 * 1024, hwm_kb


class TestIdle:
    def test_unchanged_files_are_not_opened(self, tmp_path: Path, sessions: Path) -> None:
        """An unchanged file is skipped without taking its lock; a changed one still waits for it."""
        import portalocker

        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        settled = time.time() - 60
        os.utime(sessions / "s.ndjson", (settled, settled))  # last written long before the sync
        sync_to_sqlite(db, sessions)
        with portalocker.Lock(
            str(sessions / "s.ndjson"),
            mode="rb",
            flags=portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING,
        ):
            idle = sync_to_sqlite(db, sessions, busy_timeout=0.1)
            write_lines(sessions / "s.ndjson", 1, start=3)
            busy = sync_to_sqlite(db, sessions, busy_timeout=0.1)
        assert (idle.files, idle.files_skipped, idle.warnings) == (1, 1, [])
        assert busy.files_skipped == 0
        assert ["held its lock" in w for w in busy.warnings] == [True]
        assert sync_to_sqlite(db, sessions).rows_inserted == 1

    def test_cut_and_regrown_to_the_same_size_right_after_a_sync(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A file emptied and refilled to its old size on the same inode is read, not skipped."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        path.write_bytes(b"not jsonnot json 2\n")
        sync_to_sqlite(db, sessions)
        inode = path.stat().st_ino
        path.write_bytes(b"")  # truncate: same inode
        path.write_bytes(b"not json 3\nnot jso\n")  # the same 19 bytes
        assert (path.stat().st_ino, path.stat().st_size) == (inode, 19)
        report = sync_to_sqlite(db, sessions)
        assert report.files_skipped == 0
        assert ["replaced" in w or "truncated" in w for w in report.warnings] == [True]
        with db_connection(db) as conn:
            raw = [r for (r,) in conn.execute("SELECT raw FROM session_ingest_errors ORDER BY seq")]
        assert raw == ["not jsonnot json 2", "not json 3", "not jso"]

    def test_recent_file_is_checked_once_then_skipped(self, tmp_path: Path, sessions: Path) -> None:
        """A file written just before its sync is opened on the next round, which records the check."""
        db = tmp_path / "x.db"
        write_lines(sessions / "s.ndjson", 3)
        sync_to_sqlite(db, sessions)

        def synced_at() -> float:
            with db_connection(db) as conn:
                return float(
                    conn.execute("SELECT updated_at FROM session_ingest_watermark").fetchone()[0]
                )

        first = synced_at()
        again = sync_to_sqlite(db, sessions)
        assert (again.files_skipped, again.rows_inserted, again.warnings) == (0, 0, [])
        assert synced_at() > first  # the check was recorded
        settled = synced_at() - 5
        os.utime(sessions / "s.ndjson", (settled, settled))
        assert sync_to_sqlite(db, sessions).files_skipped == 1


class TestAtomic:
    def test_error_after_sqlite_rolled_back_is_not_masked(self, tmp_path: Path) -> None:
        """When SQLite already ended the transaction, the block's own error comes out, not a ROLLBACK error."""
        db = str(tmp_path / "x.db")
        with contextlib.closing(connect(db)) as conn:

            def rolled_back_then_failed() -> None:
                with atomic(conn, db):
                    conn.execute("INSERT INTO session_events (session_id, seq) VALUES ('s', 1)")
                    conn.execute("ROLLBACK")  # as SQLite does itself on a full disk
                    _ = 1 / 0

            with pytest.raises(ZeroDivisionError):
                rolled_back_then_failed()
            assert not conn.in_transaction
            assert conn.execute("SELECT count(*) FROM session_events").fetchone() == (0,)

    def test_failed_commit_is_rolled_back(self, tmp_path: Path) -> None:
        """A COMMIT that fails (a deferred constraint) raises DatabaseError and leaves no transaction open."""
        db = str(tmp_path / "x.db")
        with contextlib.closing(connect(db)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
            with pytest.raises(DatabaseError, match="FOREIGN KEY"), atomic(conn, db):
                conn.execute("INSERT INTO child VALUES (7)")
            assert not conn.in_transaction
            with atomic(conn, db):
                conn.execute("INSERT INTO parent VALUES (1)")
            assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)


class TestMoreCuts:
    def test_rewritten_in_place_with_other_first_bytes(
        self, tmp_path: Path, sessions: Path
    ) -> None:
        """A file rewritten in place (same inode) with other first bytes is reported as replaced."""
        db = tmp_path / "x.db"
        path = sessions / "s.ndjson"
        write_lines(path, 3)
        sync_to_sqlite(db, sessions)
        ino = path.stat().st_ino
        with path.open("r+b") as f:
            f.write(b'{"ts": 9.0, "kind": "message", "message": "x0"}\n')
        write_lines(path, 2, start=50)
        assert path.stat().st_ino == ino
        report = sync_to_sqlite(db, sessions)
        assert report.warnings == [
            "s: file was replaced (its first bytes differ); its lines are taken again from seq 4"
        ]
        assert rows(db)[3:] == [(4, "x0"), (5, "m1"), (6, "m2"), (7, "m50"), (8, "m51")]

    def test_unknown_session_in_a_missing_folder(self, tmp_path: Path) -> None:
        """Asking for one session in a folder that does not exist is UnknownSessionError, no database."""
        with pytest.raises(UnknownSessionError, match="no sessions folder"):
            sync_to_sqlite(tmp_path / "x.db", tmp_path / "nope", session_id="s")
        assert not (tmp_path / "x.db").exists()


class TestLongLines:
    """A line of LONG_LINE_BYTES or more is synced alone, held as text only."""

    LONG = LONG_LINE_BYTES + 4096

    @staticmethod
    def write(path: Path, long_field: str, value: str, kind: str = "message") -> bytes:
        long_line = json.dumps(
            {"ts": 10.0, "kind": kind, "message": "m", long_field: value, "pid": 9},
            ensure_ascii=False,
        ).encode()
        with path.open("wb") as f:
            for i in range(3):
                f.write(json.dumps({"ts": 1.0 + i, "message": f"before {i}"}).encode() + b"\n")
            f.write(long_line + b"\n")
            for i in range(2):
                f.write(json.dumps({"ts": 20.0 + i, "message": f"after {i}"}).encode() + b"\n")
        return long_line

    @pytest.mark.parametrize(
        ("field", "char"),
        [("pad", "y"), ("message", "y"), ("pad", "\u00e9"), ("message", "\u20ac")],
    )
    def test_round_trips_as_text_in_its_own_batch(
        self, tmp_path: Path, sessions: Path, field: str, char: str
    ) -> None:
        """The long line reads back byte-exact as TEXT, json_extract and the views work, and its batch holds it alone."""
        db = tmp_path / "x.db"
        value = char * (self.LONG // len(char.encode()))
        line = self.write(sessions / "s.ndjson", field, value)
        batches: list[int] = []
        report = sync_to_sqlite(
            db, sessions, progress=lambda _s, r: batches.append(r.rows_inserted)
        )
        assert report.rows_inserted == 6
        assert batches == [3, 4, 6]  # before it, the long line alone, after it
        with db_connection(db) as conn:
            got = conn.execute(
                "SELECT typeof(data), typeof(message), data, message,"
                " json_extract(data, '$.pid'), length(json_extract(data, '$.' || ?))"
                " FROM session_events WHERE seq = 4",
                (field,),
            ).fetchone()
            assert json.loads(got[2]) == json.loads(line)
            assert got[:2] + got[3:] == (
                "text",
                "text",
                value if field == "message" else "m",
                9,
                len(value),
            )
            assert conn.execute("SELECT pid FROM events WHERE seq = 4").fetchone() == (9,)
            assert conn.execute("SELECT events FROM sessions").fetchone() == (6,)
        assert [seq for seq, _ in rows(db)] == [1, 2, 3, 4, 5, 6]
        assert sync_to_sqlite(db, sessions).rows_inserted == 0

    def test_long_start_line_counts_its_process(self, tmp_path: Path, sessions: Path) -> None:
        """A long start line keeps its data for the summary: its pid is counted."""
        db = tmp_path / "x.db"
        self.write(sessions / "s.ndjson", "pad", "y" * self.LONG, kind="start")
        assert sync_to_sqlite(db, sessions).rows_inserted == 6
        with db_connection(db) as conn:
            assert conn.execute("SELECT processes, events FROM sessions").fetchone() == (1, 6)
        summary, recomputed = summary_and_recomputation(db)
        assert summary == recomputed

    def test_refused_long_line_is_quarantined(self, tmp_path: Path, sessions: Path) -> None:
        """A long line the database refuses is quarantined with the reason; no row holds NULL texts."""
        db = tmp_path / "x.db"
        sync_to_sqlite(db, sessions)  # creates the schema
        with contextlib.closing(connect(str(db))) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON session_rows"
                " WHEN length(NEW.message) > 1000000 BEGIN SELECT RAISE(ABORT, 'too long here'); END"
            )
        self.write(sessions / "s.ndjson", "message", "y" * self.LONG)
        report = sync_to_sqlite(db, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (5, 1)
        assert [seq for seq, _ in rows(db)] == [1, 2, 3, 5, 6]
        with db_connection(db) as conn:
            ((seq, error),) = conn.execute("SELECT seq, error FROM session_ingest_errors")
        assert seq == 4
        assert "too long here" in error
        assert sync_to_sqlite(db, sessions).rows_inserted == 0

    def test_killed_inside_the_long_lines_transaction(self, tmp_path: Path, sessions: Path) -> None:
        """SIGKILL after the long row was inserted, before its commit: the next sync stores every line once."""
        db = tmp_path / "x.db"
        line = self.write(sessions / "s.ndjson", "message", "y" * self.LONG)
        child = (
            "import sys, time\n"
            "from codex_logging import sync_to_sqlite\n"
            "from codex_logging._sqlite import sync as _sync\n"
            "insert = _sync._insert_handed_off\n"
            "def stalled(*args):\n"
            "    done = insert(*args)\n"
            "    print('inserted', flush=True)\n"
            "    time.sleep(60)\n"
            "    return done\n"
            "_sync._insert_handed_off = stalled\n"
            "sync_to_sqlite(sys.argv[1], sys.argv[2])\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", child, str(db), str(sessions)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "inserted\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        assert [seq for seq, _ in rows(db)] == [1, 2, 3]  # the batch before it, committed
        assert sync_to_sqlite(db, sessions).rows_inserted == 3
        assert [seq for seq, _ in rows(db)] == [1, 2, 3, 4, 5, 6]
        with db_connection(db) as conn:
            (data,) = conn.execute("SELECT data FROM session_events WHERE seq = 4").fetchone()
        assert json.loads(data) == json.loads(line)
        summary, recomputed = summary_and_recomputation(db)
        assert summary == recomputed


class TestProcessCount:
    def test_only_integer_pids_are_processes(self, tmp_path: Path, sessions: Path) -> None:
        """`processes` counts integer pids (as numbers or digit strings), as in PostgreSQL."""
        db = tmp_path / "x.db"
        lines = [
            {"ts": 1.0, "kind": "start", "pid": 42},
            {"ts": 2.0, "kind": "start", "pid": "42"},
            {"ts": 3.0, "kind": "start", "pid": "worker-1"},
            {"ts": 4.0, "kind": "end", "pid": True},
            {"ts": 5.0, "kind": "end", "pid": 1.5},
            {"ts": 6.0, "kind": "end", "pid": -7},
        ]
        (sessions / "p.ndjson").write_text("".join(json.dumps(x) + "\n" for x in lines))
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            assert conn.execute("SELECT processes FROM sessions").fetchone() == (2,)

    def test_migration_recounts(self, tmp_path: Path, sessions: Path) -> None:
        """A database summarised by the earlier rule counts its pids again when migrated."""
        db = tmp_path / "x.db"
        with db_connection(db) as conn:
            for _name, statements in MIGRATIONS[:5]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("PRAGMA user_version = 5")
            for seq, pid in ((1, "3"), (2, '"worker"')):
                conn.execute(
                    "INSERT INTO session_events (session_id, seq, ts, kind, data)"
                    " VALUES ('p', ?, 1.0, 'start', ?)",
                    (seq, f'{{"kind": "start", "pid": {pid}}}'),
                )
            conn.execute("INSERT INTO session_summary_pids VALUES ('p', 3), ('p', 'worker')")
            conn.execute(
                "INSERT INTO session_summary VALUES ('p', 2, 2, 0, 0, 2, 1.0, NULL, 1.0, 1.0, 0)"
            )
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            assert conn.execute("SELECT processes FROM sessions").fetchone() == (1,)
            assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


class TestNotASessionFile:
    def test_symlink_swapped_in_between_two_syncs(self, tmp_path: Path, sessions: Path) -> None:
        """A synced file swapped for a symlink: one warning, nothing read through it."""
        db = tmp_path / "x.db"
        secret = tmp_path / "secret.ndjson"
        secret.write_text('{"message": "do not mirror me"}\n')
        write_lines(sessions / "a.ndjson", 2)
        sync_to_sqlite(db, sessions)
        (sessions / "a.ndjson").unlink()
        (sessions / "a.ndjson").symlink_to(secret)
        (sessions / "never-synced.ndjson").symlink_to(secret)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 0
        assert report.warnings == [
            (
                f"a: skipped, {sessions / 'a.ndjson'} is now a symlink, no longer the session"
                " file synced before: nothing is read through it"
            )
        ]
        assert rows(db) == [(1, "m0"), (2, "m1")]

    def test_hard_linked_file_is_refused(self, tmp_path: Path, sessions: Path) -> None:
        """A session file with a second name is refused, as the writer refuses it."""
        db = tmp_path / "x.db"
        elsewhere = tmp_path / "elsewhere.ndjson"
        elsewhere.write_text('{"message": "someone else\'s file"}\n')
        os.link(elsewhere, sessions / "h.ndjson")
        write_lines(sessions / "ok.ndjson", 1)
        report = sync_to_sqlite(db, sessions)
        assert report.rows_inserted == 1
        assert report.warnings == [
            (
                f"h: skipped, {sessions / 'h.ndjson'} is hard-linked (2 names): the writer"
                " refuses it too"
            )
        ]
        assert _session_ids(db) == [("ok",)]

    def test_watch_says_a_standing_refusal_once(self, tmp_path: Path, sessions: Path) -> None:
        """`sync --watch` says a refusal that stands from round to round once, not every round."""
        (tmp_path / "other").write_text("{}\n")
        os.link(tmp_path / "other", sessions / "h.ndjson")
        proc = subprocess.Popen(
            [
                str(BIN / "codex-logs"),
                "sync",
                "--watch",
                "0.1",
                "--db",
                str(tmp_path / "x.db"),
                "--sessions-dir",
                str(sessions),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("synced")  # the first round
        time.sleep(0.5)  # several more rounds, quiet: they find nothing new
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert err.count("hard-linked") == 1, err
