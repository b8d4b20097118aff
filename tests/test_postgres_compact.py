"""The compact PostgreSQL mirror: the same reads as before, a resumable move of an old mirror.

An old mirror is made as the sync made it before the compact tables: the
schema of the first five migrations, and the engine's rows written into the
old ``session_events`` table by the old statements (:class:`OldTarget`).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest

import codex_logging._postgres.sync as pg_sync
from codex_logging import sync_to_postgres
from codex_logging._cli.main import main
from codex_logging._errors import DatabaseNotFoundError
from codex_logging._mirror.engine import run_sync
from codex_logging._mirror.filters import Filters, parse_where
from codex_logging._mirror.lines import EventRow
from codex_logging._mirror.target import SyncReport
from codex_logging._postgres.db import (
    LEGACY_TABLE,
    MIGRATIONS,
    MOVING,
    SCHEMA_VERSION,
    SUMMARY_PIDS,
    SUMMARY_ROWS,
    _apply,
    _finish_move,
    migrate,
    schema_version,
)
from codex_logging._postgres.migrate import compact_mirror
from codex_logging._postgres.read import (
    events_page_postgres,
    latest_session_postgres,
    query_where,
    sessions_page_postgres,
    sessions_postgres,
    timeline_postgres,
)
from codex_logging._postgres.sync import PostgresTarget, _safe_row
from codex_logging._settings import sessions_dir_path
from tests.pg import Server

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")

ROOT = Path(__file__).resolve().parent.parent

#: The schema before the compact tables.
OLD_VERSION = MOVING - 1


def old_migrate(conn: Any, name: str = "", busy_timeout: float = 0, progress: Any = None) -> None:
    """Give an empty database the schema of the first :data:`OLD_VERSION` migrations."""
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS codex_schema_version (version integer)")
        if schema_version(conn) == 0:
            conn.execute("INSERT INTO codex_schema_version VALUES (%s)", (OLD_VERSION,))
            for _name, statements in MIGRATIONS[:OLD_VERSION]:
                for statement in statements:
                    conn.execute(statement)


class OldTarget(PostgresTarget):
    """The sync as it wrote rows before the compact tables: columns, and the line as ``data``."""

    def _key(self, session_id: str) -> int:
        return 0

    def _copy(self, sid: int, events: Any) -> None:
        copy_sql = (
            "COPY session_events (source_id, session_id, seq, ts, kind, level, logger, role,"
            " message, data) FROM STDIN (FORMAT BINARY)"
        )
        with self.conn.cursor().copy(copy_sql) as copy:
            copy.set_types(("text", "text", "int8", "float8", *("text",) * 6))
            for row in events:
                safe: EventRow = _safe_row(row) if "\\u0000" in row[8] else row
                copy.write_row((self.source, *safe[:9]))

    def _summarise(self, session_id: str, sid: int, after: int, upto: int, events: Any) -> None:
        if not events:
            return
        where = "source_id = %s AND session_id = %s AND seq > %s AND seq <= %s"
        params = (self.source, session_id, after, upto)
        if any(row[3] != "message" for row in events):
            self.conn.execute(SUMMARY_PIDS.format(where=where), params)
        self.conn.execute(SUMMARY_ROWS.format(where=where), params)


def old_sync(url: str, folder: Path) -> SyncReport:
    """Sync ``folder`` into ``url`` as the sync did before the compact tables."""
    path = sessions_dir_path(folder)
    with mock.patch.object(pg_sync, "migrate", old_migrate):
        target = OldTarget(url, path, 10.0)
        try:
            return run_sync(target, path, busy_timeout=10.0)
        finally:
            target.close()


def record_lines(session: str, count: int, seed: int) -> list[str]:
    """Lines of one session as the write path and older hooks write them, some hostile."""
    rng = random.Random(seed)
    lines = [
        json.dumps({"ts": 1_700_000_000.0 + seed, "session_id": session, "kind": "start",
                    "level": "INFO", "logger": "codex", "message": "start", "pid": 4000 + seed,
                    "role": "system", "argv": ["x", "--y"]}),
    ]  # fmt: skip
    for i in range(count):
        ts = 1_700_000_000.0 + seed + i / 997 + rng.random() / 1000
        record: dict[str, Any] = {
            "ts": ts,
            "session_id": session,
            "kind": "message",
            "level": rng.choice(["DEBUG", "INFO", "INFO", "WARNING", "ERROR", "SUCCESS"]),
            "logger": rng.choice(["agent", "tool.shell", "http"]),
            "message": f"step {i} of {session[:4]} é ☃",
            "pid": 4000 + seed,
        }
        if record["level"] == "SUCCESS":
            record["levelno"] = 25
        if i % 3 == 0:
            record["role"] = rng.choice(["assistant", "tool", "user"])
        if i % 5 == 0:
            record["step"] = i
            record["user"] = {"name": "alice", "tags": ["a", "b"]}
        if i % 7 == 0:
            record["trace_id"] = f"{i:032x}"
            record["span_id"] = f"{i:016x}"
            record["trace_flags"] = "01"
        if i % 11 == 0:
            del record["pid"]  # no pid: its column is NULL
        if i % 13 == 0:
            record["duration_s"] = round(rng.random(), 3)
        lines.append(json.dumps(record))
    lines += [
        # Older hooks and other tools: an ISO time, an object as message, no session id.
        json.dumps({"ts": "2024-01-01T00:00:00Z", "type": "session_start", "message": {"a": 1}}),
        json.dumps({"ts": 5, "kind": "message", "message": "int ts", "session_id": "another"}),
        # What the server's json cannot read: NUL, a lone surrogate, NaN (no pid,
        # which the old view could not read from such a line either).
        json.dumps({"ts": ts, "kind": "message", "level": "INFO", "message": "nul \u0000 in"}),
        '{"ts": 1700000009.5, "message": "lone \\ud800", "logger": "a\\u0000b"}',
        '{"ts": 1700000009.25, "kind": "message", "ratio": NaN, "big": 1e400}',
        json.dumps({"ts": ts + 1, "kind": "message", "pid": 12345678901234567890, "x": None}),
        "{}",
        json.dumps({"ts": ts + 2, "session_id": session, "kind": "end", "level": "INFO",
                    "status": "error" if seed % 2 else "ok", "pid": 4000 + seed,
                    "duration_s": 12.5, "error_type": "ValueError", "error": "bad"}),
    ]  # fmt: skip
    return lines


def write_sessions(folder: Path, sessions: int, per_session: int) -> list[str]:
    """Write ``sessions`` files of UUID sessions; return their ids."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ids = [str(uuid.UUID(int=random.Random(n).getrandbits(128))) for n in range(sessions)]
    for n, session in enumerate(ids):
        lines = record_lines(session, per_session, n)
        (folder / f"{session}.ndjson").write_text("".join(line + "\n" for line in lines))
    return ids


def constant(name: str) -> Any:
    return "NaN" if name == "NaN" else float(name)


def normal(value: Any) -> Any:
    """A read's rows with ``data`` parsed (key order is not kept; NaN made comparable)."""
    if isinstance(value, dict):
        return {
            key: json.loads(item, parse_constant=constant)
            if key == "data" and isinstance(item, str)
            else normal(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [normal(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def outcome(read: Callable[[], Any]) -> Any:
    # A read the server refuses (jsonb of a line holding \u0000) refuses alike.
    try:
        return normal(read())
    except Exception as exc:
        return type(exc).__name__


def reads(url: str) -> dict[str, Any]:
    """Every read the command line and the viewer make, normalised."""
    with psycopg.connect(url) as conn:
        ids = [row[0] for row in conn.execute("SELECT DISTINCT session_id FROM session_events")]
        conn.row_factory = psycopg.rows.dict_row
        events = conn.execute("SELECT * FROM events ORDER BY source_id, session_id, seq").fetchall()
    answers: dict[str, Any] = {"events view": normal(events)}
    filters = {
        "all": Filters(),
        "kind": Filters(kind="end"),
        "levels": Filters(levels=("WARNING", "ERROR")),
        "min level": Filters(min_level="warning"),
        "success": Filters(min_level="success"),
        "role": Filters(role="tool"),
        "logger": Filters(logger="http"),
        "since until": Filters(since=1_700_000_000.2, until=1_700_000_001.1),
        "grep": Filters(grep="STEP 1", session_id=ids[0]),
        "where": Filters(fields=(parse_where("step>5"),), session_id=ids[0]),
    }
    for name, where in filters.items():
        answers[name] = outcome(lambda where=where: query_where(url, where, tail=None))
        answers[f"{name} tail"] = outcome(lambda where=where: query_where(url, where, tail=7))
    answers["sessions"] = normal(sessions_postgres(url))
    answers["sessions page"] = normal(sessions_page_postgres(url, limit=3))
    answers["latest"] = latest_session_postgres(url)
    for session in sorted(ids):
        answers[f"timeline {session}"] = normal(timeline_postgres(url, session))
        page, after = events_page_postgres(url, Filters(session_id=session), limit=40)
        more = events_page_postgres(url, Filters(session_id=session), after=after, limit=40)
        answers[f"pages {session}"] = normal([page, after, more])
    return answers


def assert_same_reads(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got.keys() == expected.keys()
    for name, answer in expected.items():
        assert got[name] == answer, name
    assert len(expected["all"]) > 100


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture
def clone(pg_server: Server, pg_url: str) -> Iterator[Callable[[str], str]]:
    """Return a function that copies a database (``CREATE DATABASE ... TEMPLATE``)."""
    made: list[str] = []

    def copy(url: str) -> str:
        name = f"{database_name(pg_url)}_c{len(made)}"
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{database_name(url)}"')
        made.append(name)
        return pg_server.url(name)

    yield copy
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " ORDER BY table_name"
        ).fetchall()
    return [name for (name,) in rows]


def version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return schema_version(conn)


class TestFreshMirror:
    def test_every_read_answers_as_the_old_mirror_did(
        self, pg_url: str, tmp_path: Path, clone: Callable[[str], str]
    ) -> None:
        """A compact mirror and an old one of the same files answer every read alike."""
        folder = tmp_path / "sessions"
        write_sessions(folder, 4, 150)
        old_url = clone("template0")
        old = old_sync(old_url, folder)
        new = sync_to_postgres(pg_url, folder)
        assert (new.rows_inserted, new.lines_quarantined) == (old.rows_inserted, 0)
        assert version(old_url) == OLD_VERSION
        assert version(pg_url) == SCHEMA_VERSION
        assert "session_rows" in tables(pg_url)
        assert_same_reads(reads(pg_url), reads(old_url))

    def test_data_is_the_whole_record(self, pg_url: str, tmp_path: Path) -> None:
        """data parses to the line's object; each value is stored once."""
        folder = tmp_path / "sessions"
        (session,) = write_sessions(folder, 1, 60)
        sync_to_postgres(pg_url, folder)
        lines = (folder / f"{session}.ndjson").read_text().splitlines()
        with psycopg.connect(pg_url) as conn:
            got = conn.execute("SELECT seq, data FROM session_events ORDER BY seq").fetchall()
            stored = conn.execute(
                "SELECT count(*) FILTER (WHERE strpos(fields, %s) > 0),"
                " count(*) FILTER (WHERE fields LIKE '%%\"ts\":%%'), count(*) FROM session_rows",
                (session,),
            ).fetchone()
        assert [seq for seq, _ in got] == list(range(1, len(lines) + 1))
        for seq, data in got:
            expected = json.loads(lines[seq - 1], parse_constant=constant)
            assert normal({"data": data}) == normal({"data": json.dumps(expected)}), seq
        # The session id and the float ts are columns: only lines whose ts is
        # no float (ISO, an integer) keep theirs in the other fields.
        assert stored == (0, 2, len(lines))


class TestMigration:
    def test_old_mirror_migrated_answers_every_read_as_before(
        self, pg_url: str, tmp_path: Path, clone: Callable[[str], str]
    ) -> None:
        """An old mirror compacted in place answers every read as before, and syncs on."""
        folder = tmp_path / "sessions"
        ids = write_sessions(folder, 4, 150)
        old_sync(pg_url, folder)
        before = reads(pg_url)
        seen: list[tuple[int, int]] = []
        size_before, size_after = compact_mirror(pg_url, progress=lambda *p: seen.append(p))
        assert version(pg_url) == SCHEMA_VERSION
        assert LEGACY_TABLE not in tables(pg_url)
        assert seen[-1] == (len(before["all"]), len(before["all"]))
        assert min(size_before, size_after) > 0  # smaller at scale: bench/bench_postgres.py
        assert_same_reads(reads(pg_url), before)
        # Syncs go on from the old watermarks, into the compact tables.
        with (folder / f"{ids[0]}.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 1_700_000_100.0, "message": "after"}) + "\n")
        assert sync_to_postgres(pg_url, folder).rows_inserted == 1
        # An older version's sync still writes, through the view's trigger.
        with (folder / f"{ids[1]}.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 1_700_000_101.0, "message": "old writer"}) + "\n")
        assert old_sync(pg_url, folder).rows_inserted == 1
        fresh = clone("template0")
        sync_to_postgres(fresh, folder)
        assert_same_reads(reads(pg_url), reads(fresh))
        # A tool's DELETE through the view deletes the row.
        with psycopg.connect(pg_url) as conn:
            cursor = conn.execute(
                "DELETE FROM session_events WHERE session_id = %s AND seq = 1", (ids[0],)
            )
            assert cursor.rowcount == 1
            (left,) = conn.execute(
                "SELECT count(*) FROM session_events WHERE session_id = %s", (ids[0],)
            ).fetchone()
        assert left == len([r for r in before["all"] if r["session_id"] == ids[0]])

    def test_half_moved_mirror_reads_and_takes_old_writers(
        self, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Stopped halfway, the mirror reads as before; an older version's sync still writes to it."""
        folder = tmp_path / "sessions"
        ids = write_sessions(folder, 3, 100)
        old_sync(pg_url, folder)
        before = reads(pg_url)
        monkeypatch.setattr("codex_logging._postgres.db.MOVE_BATCH", 50)

        def stop(moved: int, total: int) -> None:
            if moved >= 150:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            compact_mirror(pg_url, progress=stop)
        assert version(pg_url) == MOVING
        with psycopg.connect(pg_url) as conn:
            (left,) = conn.execute(f"SELECT count(*) FROM {LEGACY_TABLE}").fetchone()
        assert 0 < left == len(before["all"]) - 150
        assert_same_reads(reads(pg_url), before)
        # An older version's sync writes through the view (its INSERT trigger).
        with (folder / f"{ids[1]}.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 1_700_000_200.0, "message": "old writer"}) + "\n")
        assert old_sync(pg_url, folder).rows_inserted == 1
        after = reads(pg_url)
        assert len(after["all"]) == len(before["all"]) + 1
        with psycopg.connect(pg_url) as conn:
            written = conn.execute(
                "SELECT shape, fields FROM session_rows WHERE message = 'old writer'"
            ).fetchall()
        assert written == [(0, '{"ts": 1700000200.0, "message": "old writer"}')]
        compact_mirror(pg_url)
        assert version(pg_url) == SCHEMA_VERSION
        assert_same_reads(reads(pg_url), after)

    def test_three_movers_at_once_move_each_row_once(
        self, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Three connections compacting one mirror at once share the rows: each moves its own."""
        folder = tmp_path / "sessions"
        write_sessions(folder, 4, 600)
        old_sync(pg_url, folder)
        before = reads(pg_url)
        monkeypatch.setattr("codex_logging._postgres.db.MOVE_BATCH", 100)
        barrier = threading.Barrier(3)
        moved = [0, 0, 0]
        failures: list[BaseException] = []

        def run(n: int) -> None:
            def progress(count: int, total: int) -> None:
                moved[n] = count

            try:
                barrier.wait()
                compact_mirror(pg_url, progress=progress)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert sum(moved) == len(before["all"])
        assert version(pg_url) == SCHEMA_VERSION
        assert_same_reads(reads(pg_url), before)

    def test_last_step_and_a_reader_of_the_view_do_not_deadlock(self, pg_url: str) -> None:
        """The step that drops the old table waits for a reader of the views instead of deadlocking with it.

        A reader locks the view, then the tables under it. The step takes the
        old table and the views: if it took the table first, a reader holding
        the view and waiting for the table would deadlock with it.
        """
        with psycopg.connect(pg_url) as conn:
            old_migrate(conn)
            _apply(conn, 10.0, MOVING)
        assert version(pg_url) == MOVING
        waiting = (
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        results: dict[str, Any] = {}

        def finish() -> None:
            with psycopg.connect(pg_url) as conn:
                results["finish"] = outcome(lambda: _finish_move(conn, 30.0))

        def read() -> None:
            with psycopg.connect(pg_url) as conn:
                results["read"] = outcome(
                    lambda: conn.execute("SELECT count(*) FROM session_events").fetchone()
                )

        def wait_for_waiters(count: int) -> None:
            deadline = time.monotonic() + 30
            with psycopg.connect(pg_url, autocommit=True) as conn:
                while conn.execute(waiting).fetchone() != (count,):
                    assert time.monotonic() < deadline, conn.execute(
                        "SELECT * FROM pg_locks"
                    ).fetchall()
                    time.sleep(0.01)

        with psycopg.connect(pg_url) as batch:
            # A batch of moved rows in flight holds the old table.
            batch.execute(f"LOCK TABLE {LEGACY_TABLE} IN ROW SHARE MODE")
            threads = [threading.Thread(target=finish), threading.Thread(target=read)]
            for n, thread in enumerate(threads, 1):
                thread.start()
                wait_for_waiters(n)
            batch.rollback()
        for thread in threads:
            thread.join(timeout=60)
        assert results == {"finish": True, "read": [0]}
        assert version(pg_url) == MOVING + 1

    def test_last_step_with_rows_left_keeps_the_views(self, pg_url: str, tmp_path: Path) -> None:
        """The step finds rows still to move: it takes nothing, the views still read every row."""
        folder = tmp_path / "sessions"
        write_sessions(folder, 3, 100)
        old_sync(pg_url, folder)
        before = reads(pg_url)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            _apply(conn, 10.0, MOVING)
            assert _finish_move(conn, 10.0) is False
        assert version(pg_url) == MOVING
        assert {"session_events", "events"} <= set(tables(pg_url))
        assert_same_reads(reads(pg_url), before)

    def test_new_database_gets_every_step_at_once(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A new database is made in one transaction: no move, no step between for a reader to see."""

        def refuse(*args: Any) -> None:
            raise AssertionError("a new database has nothing to move")

        monkeypatch.setattr("codex_logging._postgres.db.move_legacy_rows", refuse)
        monkeypatch.setattr("codex_logging._postgres.db._finish_move", refuse)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            migrate(conn)
        assert version(pg_url) == SCHEMA_VERSION
        assert LEGACY_TABLE not in tables(pg_url)
        assert {"session_rows", "session_events", "events", "sessions"} <= set(tables(pg_url))

    def test_dry_run_estimates_and_changes_nothing(
        self, pg_url: str, tmp_path: Path, clone: Callable[[str], str]
    ) -> None:
        """--dry-run's estimate of the size after is near the size a real run leaves."""
        folder = tmp_path / "sessions"
        write_sessions(folder, 6, 2000)
        old_sync(pg_url, folder)
        with psycopg.connect(pg_url) as conn:
            conn.execute("ANALYZE")
        size, estimate = compact_mirror(pg_url, dry_run=True)
        assert version(pg_url) == OLD_VERSION
        before, after = compact_mirror(pg_url)
        assert abs(before - size) < 65536  # the catalog's rows of the scratch table, rolled back
        assert abs(estimate - after) < 0.1 * (before - after), (before, estimate, after)
        # Migrated, nothing is left to do: the size now twice (autovacuum may
        # have added a table's free space map since).
        now, again = compact_mirror(pg_url, dry_run=True)
        assert now == again
        assert abs(now - after) < 0.1 * (before - after), (after, now)

    def test_no_mirror_is_an_error(self, pg_url: str) -> None:
        """A database never synced is refused, and nothing is created."""
        with pytest.raises(DatabaseNotFoundError, match="has no session_events table"):
            compact_mirror(pg_url)
        assert tables(pg_url) == []


class TestCommandLine:
    def test_migrate_a_postgres_mirror(
        self, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """codex-logs migrate --db URL: --dry-run changes nothing; then the move, its sizes said."""
        folder = tmp_path / "sessions"
        write_sessions(folder, 2, 100)
        old_sync(pg_url, folder)
        assert main(["migrate", "--db", pg_url, "--dry-run"]) == 0
        assert " expected after (" in capsys.readouterr().out
        assert version(pg_url) == OLD_VERSION
        assert main(["migrate", "--db", pg_url]) == 0
        out = capsys.readouterr().out
        assert " before, " in out
        assert " now (" in out
        assert version(pg_url) == SCHEMA_VERSION

    def test_no_mirror_is_one_line_and_exit_2(
        self, pg_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["migrate", "--db", pg_url]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert len(captured.err.splitlines()) == 1
        assert "has no session_events table" in captured.err
        assert tables(pg_url) == []


MIGRATE = """
import sys
import codex_logging._postgres.db as db
db.MOVE_BATCH = int(sys.argv[2])
from codex_logging._postgres.migrate import compact_mirror
def progress(moved, total):
    print(moved, flush=True)
compact_mirror(sys.argv[1], progress=progress)
print("done", flush=True)
"""


class TestKilled:
    def test_killed_migrations_rerun_to_the_same_rows(
        self, pg_url: str, tmp_path: Path, clone: Callable[[str], str]
    ) -> None:
        """kill -9 of the migrating process at random points, then a rerun: as an uninterrupted run."""
        folder = tmp_path / "sessions"
        write_sessions(folder, 6, 1500)
        old_sync(pg_url, folder)
        before = reads(pg_url)
        whole = clone(pg_url)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", MIGRATE, whole, "200"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert done.stdout.endswith("done\n")
        rng = random.Random(os.getpid())
        kills = []
        for batches in (0, 1, rng.randint(2, 8), rng.randint(9, 20)):
            proc = subprocess.Popen(
                [sys.executable, "-c", MIGRATE, pg_url, "100"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            if batches == 0:
                # Importing, or the schema step: on a quiet machine the whole
                # move can take less than half a second.
                time.sleep(rng.uniform(0.05, 0.3))
            else:
                for _ in range(batches):
                    proc.stdout.readline()
                time.sleep(rng.uniform(0, 0.05))
            proc.kill()
            proc.wait()
            proc.stdout.close()
            kills.append(version(pg_url))
        assert MOVING in kills  # at least one kill fell inside the move
        rerun = subprocess.run(
            [sys.executable, "-c", MIGRATE, pg_url, "100"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert rerun.stdout.endswith("done\n")
        assert version(pg_url) == version(whole) == SCHEMA_VERSION
        got = reads(pg_url)
        assert_same_reads(got, reads(whole))
        assert_same_reads(got, before)
