"""sync_to_postgres against a real throwaway server: the same rows as SQLite, exactly once."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from codex_logging import UnknownSessionError, sync_to_postgres, sync_to_sqlite
from codex_logging._errors import DatabaseError, DatabaseLockedError, InvalidFilterError
from codex_logging._mirror.filters import Filters, build
from codex_logging._mirror.target import Batch, Watermark, WatermarkMovedError, source_id
from codex_logging._postgres.db import SCHEMA_VERSION, connect, display_url, migrate
from codex_logging._postgres.read import query_postgres, query_where, sessions_postgres
from codex_logging._postgres.sync import PostgresTarget
from codex_logging._sqlite.read import query as sqlite_query
from tests.checks import assert_exactly_once
from tests.conftest import db_connection, synced_text

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")

ROOT = Path(__file__).resolve().parent.parent
EVENT_COLUMNS = "session_id, seq, ts, kind, level, logger, role, message, data"


def pg_rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def pg_events(url: str, source: bool = False) -> list[tuple[Any, ...]]:
    columns = ("source_id, " if source else "") + EVENT_COLUMNS
    return pg_rows(url, f"SELECT {columns} FROM session_events ORDER BY source_id, session_id, seq")


def write_lines(path: Path, count: int, start: int = 0, prefix: str = "m") -> None:
    with path.open("ab") as f:
        for i in range(start, start + count):
            record = {"ts": 1.0 + i, "kind": "message", "message": f"{prefix}{i}"}
            f.write(json.dumps(record).encode() + b"\n")


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    return folder


HOSTILE_LINES = [
    json.dumps({"ts": 10.5, "kind": "start", "level": "INFO", "logger": "app", "message": "hi"}),
    json.dumps({"ts": "2025-01-01T12:34:56.123456Z", "type": "session_start"}),
    "not json at all",
    "[1, 2, 3]",
    json.dumps({"ts": 11, "message": "nul \u0000 inside", "role": "tool", "logger": "a\u0000b"}),
    '{"ts": 12, "message": "lone \\ud800 surrogate"}',
    '{"ts": 13, "message": "torn',  # a writer died here and the next record was glued on
    json.dumps({"ts": 14, "level": {"nested": 1}, "message": ["a", "list"]}),
    json.dumps({"ts": 15, "kind": "end", "status": "error", "message": "é ☃ \u2028"}),
]
RAW_BAD_LINES = [b"\xff\xfe not utf-8", b'{"raw": "nul \x00 byte"}']


def hostile_file(path: Path) -> bytes:
    text = "\n".join(HOSTILE_LINES[:6]) + "\n" + HOSTILE_LINES[6] + HOSTILE_LINES[7] + "\n"
    data = text.encode("utf-8") + b"\n".join(RAW_BAD_LINES) + b"\n"
    data += HOSTILE_LINES[8].encode("utf-8") + b"\n" + b'{"ts": 99, "message": "partial'
    path.write_bytes(data)
    return data


class TestSameAsSqlite:
    def test_same_rows_and_quarantine_in_both_databases(
        self, pg_url: str, tmp_path: Path, sessions: Path
    ) -> None:
        """Hostile lines give the same events and quarantine in SQLite and PostgreSQL (NUL shown as U+FFFD)."""
        data = hostile_file(sessions / "s.ndjson")
        lite = sync_to_sqlite(tmp_path / "x.db", sessions)
        pg = sync_to_postgres(pg_url, sessions)
        assert (pg.files, pg.rows_inserted, pg.lines_quarantined, pg.bytes_read) == (
            lite.files,
            lite.rows_inserted,
            lite.lines_quarantined,
            lite.bytes_read,
        )
        assert (pg.rows_inserted, pg.lines_quarantined) == (6, 5)
        with db_connection(tmp_path / "x.db") as conn:
            lite_events = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM session_events ORDER BY seq"
            ).fetchall()
            lite_errors = conn.execute(
                "SELECT session_id, seq, byte_offset, error, raw FROM session_ingest_errors"
                " ORDER BY seq"
            ).fetchall()
        nul_safe = [
            tuple(
                v.replace("\x00", "\ufffd") if isinstance(v, str) and i < 8 else v
                for i, v in enumerate(row)
            )
            for row in lite_events
        ]
        assert pg_events(pg_url) == nul_safe
        assert [row[7] for row in pg_events(pg_url) if row[1] == 5] == ["nul \ufffd inside"]
        pg_errors = pg_rows(
            pg_url,
            "SELECT session_id, seq, byte_offset, error,"
            " coalesce(raw_bytes, convert_to(raw, 'UTF8')) FROM session_ingest_errors"
            " ORDER BY seq, byte_offset",
        )
        assert pg_errors == [
            (s, q, o, e, r.encode() if isinstance(r, str) else r) for s, q, o, e, r in lite_errors
        ]
        # Every event's record is given back whole from what is stored (a
        # torn fragment's line ends with the record glued to it).
        lines = data.split(b"\n")
        for seq, text in pg_rows(pg_url, "SELECT seq, data FROM session_events ORDER BY seq"):
            line = lines[seq - 1]
            glued = line.find(b'{"ts": 1', 1)
            assert json.loads(text) == json.loads(line[glued:] if glued > 0 else line)

    def test_foreign_fields_are_redacted_as_in_sqlite(
        self, pg_url: str, tmp_path: Path, sessions: Path
    ) -> None:
        """A secret name's value in a field other than message is redacted in PostgreSQL too."""
        line = {
            "ts": 1.0,
            "message": "cb",
            "detail": "password=CANARYpw",
            "url": "/cb?access_token=CANARYat",
        }
        (sessions / "f.ndjson").write_text(json.dumps(line) + "\n")
        sync_to_postgres(pg_url, sessions)
        ((data,),) = pg_rows(pg_url, "SELECT data FROM session_events")
        assert "CANARY" not in data
        assert json.loads(data)["detail"] == "password=[REDACTED]"

    def test_second_sync_inserts_nothing(self, pg_url: str, sessions: Path) -> None:
        """Syncing again inserts nothing; appended lines are taken incrementally."""
        write_lines(sessions / "s.ndjson", 7000)
        settled = time.time() - 60
        os.utime(sessions / "s.ndjson", (settled, settled))  # last written long before the sync
        first = sync_to_postgres(pg_url, sessions)
        again = sync_to_postgres(pg_url, sessions)
        write_lines(sessions / "s.ndjson", 5, start=7000)
        more = sync_to_postgres(pg_url, sessions, session_id="s")
        assert (first.rows_inserted, again.rows_inserted, more.rows_inserted) == (7000, 0, 5)
        assert (again.bytes_read, again.warnings, again.files_skipped) == (0, [], 1)
        got = pg_rows(pg_url, "SELECT seq, message FROM session_events ORDER BY seq")
        assert got == [(i + 1, f"m{i}") for i in range(7005)]

    def test_truncated_and_replaced_files_as_in_sqlite(
        self, pg_url: str, tmp_path: Path, sessions: Path
    ) -> None:
        """A file that shrank, then one replaced by another, give SQLite's warnings and rows, nothing lost."""
        path = sessions / "x.ndjson"

        def both() -> tuple[list[str], list[str]]:
            lite = sync_to_sqlite(tmp_path / "x.db", sessions)
            pg = sync_to_postgres(pg_url, sessions)
            assert (pg.rows_inserted, pg.lines_quarantined) == (
                lite.rows_inserted,
                lite.lines_quarantined,
            )
            return pg.warnings, lite.warnings

        write_lines(path, 3, prefix="a")
        assert both() == ([], [])
        path.write_bytes(b"")
        write_lines(path, 1, start=10, prefix="b")
        pg, lite = both()
        assert pg == lite
        assert pg == [
            "x: file shrank from 144 to 50 bytes (truncated); its lines are taken again from seq 4"
        ]
        path.rename(sessions / "old")
        write_lines(path, 4, start=20, prefix="c")
        pg, lite = both()
        assert pg == lite
        assert pg == [
            "x: file was replaced (another file now has its name); its lines are taken again from seq 5"
        ]
        with db_connection(tmp_path / "x.db") as conn:
            lite_rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM session_events ORDER BY seq"
            ).fetchall()
        assert pg_events(pg_url) == lite_rows
        assert [(row[1], row[7]) for row in lite_rows] == [
            (1, "a0"), (2, "a1"), (3, "a2"), (4, "b10"), (5, "c20"), (6, "c21"), (7, "c22"), (8, "c23"),
        ]  # fmt: skip

    def test_refused_row_is_quarantined_with_the_servers_message(
        self, pg_url: str, sessions: Path
    ) -> None:
        """A row the server refuses is quarantined alone; the rest of its batch is stored."""
        sync_to_postgres(pg_url, sessions)  # creates the schema
        with psycopg.connect(pg_url) as conn:
            conn.execute("ALTER TABLE session_rows ADD CONSTRAINT no_m2 CHECK (message <> 'm2')")
        write_lines(sessions / "s.ndjson", 4)
        report = sync_to_postgres(pg_url, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (3, 1)
        assert pg_rows(pg_url, "SELECT seq FROM session_events ORDER BY seq") == [(1,), (2,), (4,)]
        ((seq, error, raw),) = pg_rows(pg_url, "SELECT seq, error, raw FROM session_ingest_errors")
        assert (seq, raw) == (3, json.dumps({"ts": 3.0, "kind": "message", "message": "m2"}))
        assert error.startswith("database refused the row: ")
        assert 'violates check constraint "no_m2"' in error

    def test_refused_error_row_is_kept_without_its_raw_line(
        self, pg_url: str, sessions: Path
    ) -> None:
        """A quarantine row the server refuses is stored without its raw line, saying why."""
        sync_to_postgres(pg_url, sessions)
        with psycopg.connect(pg_url) as conn:
            conn.execute(
                "ALTER TABLE session_ingest_errors ADD CONSTRAINT no_raw CHECK (raw <> 'oops')"
            )
        (sessions / "s.ndjson").write_bytes(b'oops\n{"message": "fine"}\n')
        report = sync_to_postgres(pg_url, sessions)
        assert (report.rows_inserted, report.lines_quarantined) == (1, 1)
        ((seq, error, raw, raw_bytes),) = pg_rows(
            pg_url, "SELECT seq, error, raw, raw_bytes FROM session_ingest_errors"
        )
        assert (seq, raw, raw_bytes) == (1, "", None)
        assert "raw not stored, database refused it" in error
        assert 'violates check constraint "no_raw"' in error

    def test_missing_folder_touches_no_server(self, tmp_path: Path) -> None:
        """A sessions folder that does not exist yet gives one warning and never connects."""
        url = f"postgresql://nobody@/nothing?host={tmp_path}"
        report = sync_to_postgres(url, tmp_path / "missing")
        assert (report.files, report.warnings) == (
            0,
            [f"no sessions folder {tmp_path / 'missing'} (yet): nothing to sync"],
        )

    def test_lock_held_past_the_timeout_is_a_clear_error(self, pg_url: str, sessions: Path) -> None:
        """A watermark row locked by another session past busy_timeout raises DatabaseLockedError."""
        write_lines(sessions / "s.ndjson", 2)
        sync_to_postgres(pg_url, sessions)
        write_lines(sessions / "s.ndjson", 1, start=2)
        with psycopg.connect(pg_url) as blocker:
            blocker.execute("SELECT 1 FROM session_ingest_watermark FOR UPDATE")
            with pytest.raises(DatabaseLockedError, match="stayed locked by another sync"):
                sync_to_postgres(pg_url, sessions, busy_timeout=0.2)
        assert sync_to_postgres(pg_url, sessions).rows_inserted == 1

    def test_interrupted_while_a_batch_waits_on_the_server(
        self, pg_url: str, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C while batch 1 waits on a lock: the server cancels it at once, nothing is stored."""
        from codex_logging._mirror.engine import BATCH_LINES
        from codex_logging._mirror.lines import LineParser

        write_lines(sessions / "s.ndjson", 2)
        sync_to_postgres(pg_url, sessions)
        write_lines(sessions / "s.ndjson", 2 * BATCH_LINES, start=2)
        take = LineParser.take

        def interrupted(self: LineParser, sid: str, seq: int, *args: Any) -> int:
            if seq == BATCH_LINES + 200:  # reading batch 2, batch 1 in flight
                time.sleep(0.3)  # batch 1 is waiting on the blocker's lock by now
                raise KeyboardInterrupt
            return take(self, sid, seq, *args)

        monkeypatch.setattr(LineParser, "take", interrupted)
        with psycopg.connect(pg_url) as blocker:
            blocker.execute("SELECT 1 FROM session_ingest_watermark FOR UPDATE")
            start = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                sync_to_postgres(pg_url, sessions, busy_timeout=30)
            waited = time.monotonic() - start
        assert waited < 10, waited  # not the 30 s lock timeout: the statement was cancelled
        monkeypatch.undo()
        assert len(pg_events(pg_url)) == 2
        assert sync_to_postgres(pg_url, sessions).rows_inserted == 2 * BATCH_LINES

    def test_role_that_may_not_create_tables(self, pg_url: str, sessions: Path) -> None:
        """A role without CREATE on the schema gets one clear DatabaseError on the first sync."""
        role = f"nocreate_{os.getpid()}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN")
        write_lines(sessions / "s.ndjson", 1)
        try:
            with pytest.raises(DatabaseError, match="permission denied for schema public"):
                sync_to_postgres(pg_url.replace("postgres@", f"{role}@", 1), sessions)
        finally:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f"DROP ROLE {role}")
        assert pg_rows(pg_url, "SELECT to_regclass('session_events') IS NULL") == [(True,)]


class TestManyMachines:
    def test_three_folders_write_one_session(self, pg_url: str, tmp_path: Path) -> None:
        """Three folders (three machines) with one session id land side by side in one session."""
        folders = [tmp_path / f"host{n}" / "sessions" for n in range(3)]
        for n, folder in enumerate(folders):
            folder.mkdir(parents=True)
            path = folder / "ci-run.ndjson"
            path.write_text(
                "".join(
                    json.dumps({"ts": 100.0 + 3 * i + n, "message": f"h{n}-{i}"}) + "\n"
                    for i in range(4)
                )
            )
        threads = [threading.Thread(target=sync_to_postgres, args=(pg_url, f)) for f in folders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [(f / ".codex-source-id").read_text().strip() for f in folders]
        assert len(set(ids)) == 3
        assert sorted(pg_rows(pg_url, "SELECT source_id, host, folder FROM sources")) == sorted(
            (i, socket.gethostname(), str(f)) for i, f in zip(ids, folders, strict=True)
        )
        (summary,) = sessions_postgres(pg_url)
        assert {
            k: summary[k] for k in ("session_id", "start_ts", "end_ts", "status", "events")
        } == {
            "session_id": "ci-run",
            "start_ts": 100.0,
            "end_ts": None,
            "status": None,
            "events": 12,
        }
        assert pg_rows(pg_url, "SELECT sources FROM sessions") == [(3,)]
        merged = query_postgres(pg_url, "ci-run", tail=100)
        assert [e["message"] for e in merged] == [f"h{n}-{i}" for i in range(4) for n in range(3)]
        again = [sync_to_postgres(pg_url, f).rows_inserted for f in folders]
        assert again == [0, 0, 0]

    def test_folders_wrongly_sharing_a_source_id(
        self, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two folders given one CODEX_SOURCE_ID race: the compare-and-set alone keeps every stored line once."""
        monkeypatch.setenv("CODEX_SOURCE_ID", "shared")
        folders = [tmp_path / "a", tmp_path / "b"]
        for folder in folders:
            folder.mkdir()
        write_lines(folders[0] / "s.ndjson", 12_000, prefix="a")
        write_lines(folders[1] / "s.ndjson", 12_000, prefix="b")
        reports: list[Any] = []
        barrier = threading.Barrier(2)

        def run(folder: Path) -> None:
            barrier.wait()
            reports.append(sync_to_postgres(pg_url, folder))

        threads = [threading.Thread(target=run, args=(f,)) for f in folders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        warnings = [w for r in reports for w in r.warnings]
        # The race really happened: one sync found the watermark moved.
        assert any("watermark" in w for w in warnings), warnings
        got = pg_rows(pg_url, "SELECT seq, message FROM session_events ORDER BY seq")
        assert [seq for seq, _ in got] == list(range(1, len(got) + 1))
        assert len({m for _, m in got}) == len(got)
        assert pg_rows(pg_url, "SELECT count(*) FROM session_ingest_errors") == [(0,)]
        assert sum(r.rows_inserted for r in reports) == len(got)

    def test_no_statement_prepared_on_the_server(self, pg_url: str, sessions: Path) -> None:
        """Many batches on one connection prepare nothing server-side, which a transaction-pooling pgbouncer would lose."""
        target = PostgresTarget(pg_url, str(sessions), 10.0)
        try:
            for seq in range(1, 9):
                record = {"message": "m"}
                row = ("s", seq, float(seq), "message", None, None, None, "m", "{}", record, None)
                target.commit(Batch("s", seq - 1, [row], [], Watermark(seq=seq), [0]))
                assert target.read_watermark("s") is not None
            prepared = target.conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        finally:
            target.close()
        assert prepared == (0,)
        assert pg_rows(pg_url, "SELECT count(*) FROM session_events") == [(8,)]

    def test_lost_race_inserts_nothing(
        self, pg_url: str, sessions: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Of two targets that read the same watermark, the second commit raises and stores nothing."""
        monkeypatch.setenv("CODEX_SOURCE_ID", "src")
        first = PostgresTarget(pg_url, str(sessions), 10.0)
        second = PostgresTarget(pg_url, str(sessions), 10.0)
        try:
            assert first.read_watermark("s") is None
            assert second.read_watermark("s") is None
            row = ("s", 1, 1.0, "message", None, None, None, "one", "{}", {"message": "one"}, None)
            mark = Watermark(seq=1, byte_offset=20)
            assert first.commit(Batch("s", 0, [row], [], mark, [0])) == 1
            with pytest.raises(WatermarkMovedError):
                second.commit(
                    Batch("s", 0, [row], [("s", 2, 20, "bad", "x")], Watermark(seq=2), [0])
                )
            assert second.read_watermark("s") == Watermark(seq=1, byte_offset=20, source_id="src")
            with pytest.raises(WatermarkMovedError):  # a stale seq that is not 0
                second.commit(Batch("s", 5, [], [], Watermark(seq=6), []))
            # A raw NUL, which no parsed line holds but PostgreSQL text refuses:
            # that row alone is quarantined, its line kept byte for byte.
            raw = '{"m": "a\x00b"}'
            nul = ("s", 2, 2.0, "message", None, None, None, "a\x00b", raw, {"m": "a\x00b"}, None)
            assert first.commit(Batch("s", 1, [nul], [], Watermark(seq=2), [20])) == 0
            error = ("s", 3, 40, "bad", "x")
            assert first.commit(Batch("s", 2, [], [error], Watermark(seq=3), [])) == 0
        finally:
            first.close()
            second.close()
        assert pg_rows(pg_url, "SELECT seq FROM session_events") == [(1,)]
        got = pg_rows(
            pg_url,
            "SELECT seq, byte_offset, error, raw, raw_bytes FROM session_ingest_errors ORDER BY seq",
        )
        assert [row[:2] for row in got] == [(2, 20), (3, 40)]
        assert got[0][2].startswith("database refused the row: ")
        assert got[0][3:] == ('{"m": "a\ufffdb"}', b'{"m": "a\x00b"}')
        assert got[1][2:] == ("bad", "x", None)


SYNC_WITH_PROGRESS = """
import sys
from codex_logging import sync_to_postgres
def progress(session_id, report):
    print(report.rows_inserted, flush=True)
sync_to_postgres(sys.argv[1], sys.argv[2], progress=progress)
"""

SYNC_LOOP = """
import os, sys
from codex_logging import sync_to_postgres
url, folder, stop = sys.argv[1:4]
print("ready", flush=True)
while True:
    last = os.path.exists(stop)
    inserted = sync_to_postgres(url, folder).rows_inserted
    if inserted:
        print(inserted, flush=True)
    if last:
        break
"""

TWO_PHASE_WRITER = """
import os, sys, time
from tests.writers import log_numbered
folder, worker, half, go = sys.argv[1:5]
log_numbered(folder, "load", worker + "a", 2, 2000, 200)
open(half, "w").close()
while not os.path.exists(go):  # paused, alive, until the parent saw a sync land
    time.sleep(0.002)
log_numbered(folder, "load", worker + "b", 2, 2000, 200)
"""


PHASED_WRITER = """
import os, sys, time
from tests.writers import log_numbered
folder, machine, flags = sys.argv[1:4]
for phase in range(3):
    log_numbered(folder, "shared", f"{machine}{phase}", 1, 1000, 200)
    log_numbered(folder, f"own{machine}", f"{machine}{phase}o", 1, 300, 200)
    open(os.path.join(flags, f"done{machine}-{phase}"), "w").close()
    while phase < 2 and not os.path.exists(os.path.join(flags, f"go{phase}")):
        time.sleep(0.002)  # paused, alive, with more to write
"""


@pytest.mark.slow
class TestCrashesAndRaces:
    def test_sync_killed_mid_batch(self, pg_url: str, sessions: Path) -> None:
        """Syncs killed with SIGKILL right after a committed batch, then a clean one: every line once."""
        write_lines(sessions / "big.ndjson", 60_000)
        seen = []
        for wait_for in (1, 2, 1, 3):
            proc = subprocess.Popen(
                [sys.executable, "-c", SYNC_WITH_PROGRESS, pg_url, str(sessions)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            for _ in range(wait_for):
                assert proc.stdout.readline() != ""
            proc.send_signal(signal.SIGKILL)  # while it reads or copies the next batch
            proc.wait(timeout=60)
            proc.stdout.close()
            seen.append(pg_rows(pg_url, "SELECT count(*) FROM session_events")[0][0])
        # Every kill landed mid-file and left only whole batches behind.
        assert all(0 < n < 60_000 for n in seen), seen
        assert seen == sorted(seen)
        sync_to_postgres(pg_url, sessions)
        got = pg_rows(pg_url, "SELECT seq, message FROM session_events ORDER BY seq")
        assert got == [(i + 1, f"m{i}") for i in range(60_000)]
        assert pg_rows(pg_url, "SELECT seq, byte_offset FROM session_ingest_watermark") == [
            (60_000, (sessions / "big.ndjson").stat().st_size)
        ]

    def test_sync_killed_inside_its_transaction(self, pg_url: str, sessions: Path) -> None:
        """A sync SIGKILLed with a batch copied but not committed leaves none of it; a clean sync then stores every line once."""
        write_lines(sessions / "big.ndjson", 60_000)
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND xact_start IS NOT NULL AND query LIKE '%%INSERT INTO session_summary %%'"
        )
        summarising = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%INSERT INTO session_summary %%' AND pid <> pg_backend_pid()"
        for _ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-c", SYNC_WITH_PROGRESS, pg_url, str(sessions)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            assert proc.stdout.readline() != ""  # a batch committed: its summary row exists
            with psycopg.connect(pg_url) as blocker:
                # The next batch's summary, its last step after the watermark and
                # the COPY, waits on this row lock inside the batch's transaction.
                blocker.execute("SELECT 1 FROM session_summary FOR UPDATE")
                deadline = time.monotonic() + 60
                while pg_rows(pg_url, waiting) != [(1,)]:
                    assert proc.poll() is None
                    assert time.monotonic() < deadline, "the sync never reached the lock"
                    time.sleep(0.01)
                ((committed,),) = pg_rows(pg_url, "SELECT count(*) FROM session_events")
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                proc.stdout.close()
            # The lock released, the orphaned backend finds its client gone and rolls back.
            deadline = time.monotonic() + 60
            while pg_rows(pg_url, summarising) != [(0,)]:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert pg_rows(pg_url, "SELECT count(*) FROM session_events") == [(committed,)]
            # Only whole batches, each with its watermark.
            assert pg_rows(pg_url, "SELECT seq FROM session_ingest_watermark") == [(committed,)]
            assert 0 < committed < 60_000
        sync_to_postgres(pg_url, sessions)
        got = pg_rows(pg_url, "SELECT seq, message FROM session_events ORDER BY seq")
        assert got == [(i + 1, f"m{i}") for i in range(60_000)]
        (summary,) = sessions_postgres(pg_url)
        assert summary["events"] == 60_000
        assert pg_rows(pg_url, "SELECT count(*) FROM session_ingest_errors") == [(0,)]

    def test_concurrent_syncs_while_writers_append(
        self, pg_url: str, tmp_path: Path, sessions: Path
    ) -> None:
        """Three writer processes and two sync loops, then a last sync: numbered messages exactly once."""
        stop, go = tmp_path / "stop", tmp_path / "go"
        loops = [
            subprocess.Popen(
                [sys.executable, "-c", SYNC_LOOP, pg_url, str(sessions), str(stop)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for loop in loops:  # both loops are running before the first record is written
            assert loop.stdout is not None
            assert loop.stdout.readline() == "ready\n"
        halves = [tmp_path / f"half{w}" for w in range(3)]
        try:
            writers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        TWO_PHASE_WRITER,
                        str(sessions),
                        str(w),
                        str(half),
                        str(go),
                    ],
                    cwd=ROOT,
                )
                for w, half in enumerate(halves)
            ]
            # Every writer is paused halfway, alive, until the loops have
            # synced some of its lines: the syncs really overlap the writing.
            while not all(h.exists() for h in halves) or not pg_rows(
                pg_url, "SELECT 1 FROM pg_class WHERE relname = 'session_events'"
            ):
                assert all(w.poll() is None for w in writers)
            while (paused := pg_rows(pg_url, "SELECT count(*) FROM session_events")[0][0]) == 0:
                assert all(w.poll() is None for w in writers)
            go.touch()
            codes = [w.wait(timeout=120) for w in writers]
        finally:
            go.touch()
            stop.touch()
            outputs = [loop.communicate(timeout=120)[0] for loop in loops]
        assert codes == [0, 0, 0]
        assert [loop.returncode for loop in loops] == [0, 0]
        assert 0 < paused <= 12_000
        final = sync_to_postgres(pg_url, sessions)
        got = pg_rows(pg_url, "SELECT seq, message FROM session_events ORDER BY seq")
        expected = [
            f"{w}{p}:{t}:{i}" for w in range(3) for p in "ab" for t in range(2) for i in range(2000)
        ]
        assert_exactly_once((m for _, m in got), expected)
        assert [seq for seq, _ in got] == list(range(1, 24_001))
        assert pg_rows(pg_url, "SELECT count(*) FROM sources") == [(1,)]
        rounds = [int(n) for out in outputs for n in out.split()]
        assert sum(rounds) + final.rows_inserted == 24_000

    def test_eight_concurrent_first_migrations(self, pg_url: str) -> None:
        """Eight connections migrating an empty database at once all succeed, the schema made once."""
        barrier = threading.Barrier(8)
        failures: list[BaseException] = []

        def run() -> None:
            conn = connect(pg_url)
            try:
                barrier.wait()
                migrate(conn)
            except BaseException as exc:
                failures.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert pg_rows(pg_url, "SELECT version FROM codex_schema_version") == [(SCHEMA_VERSION,)]
        # The lock was the transaction's: a migrating connection holds none afterwards
        # (a session-level one would outlive its transaction behind pgbouncer).
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE codex_schema_version SET version = %s", (SCHEMA_VERSION - 1,))
        conn = connect(pg_url)
        try:
            migrate(conn)
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            ).fetchone()
        finally:
            conn.close()
        assert held == (0,)
        assert pg_rows(pg_url, "SELECT version FROM codex_schema_version") == [(SCHEMA_VERSION,)]
        tables = pg_rows(
            pg_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " ORDER BY table_name",
        )
        assert [t for (t,) in tables] == [
            "codex_schema_version",
            "events",
            "session_events",
            "session_ingest_errors",
            "session_ingest_watermark",
            "session_keys",
            "session_rows",
            "session_summary",
            "session_summary_pids",
            "sessions",
            "sources",
        ]


def build_filters(level: str) -> Filters:
    return build(
        session_id=None, kind=None, since=None, until=None, level=level, grep=None, role=None
    )


class TestReads:
    def test_query_filters_and_sessions(self, pg_url: str, sessions: Path) -> None:
        """query_postgres filters as the SQLite query does; sessions shows status error from any end."""
        records = [
            {"ts": 1.0, "kind": "start", "level": "INFO", "message": "begin", "pid": 7},
            {"ts": 2.0, "level": "DEBUG", "message": "Detail one", "role": "tool"},
            {"ts": 3.0, "level": "WARNING", "message": "careful", "role": "assistant"},
            {
                "ts": 4.0,
                "kind": "end",
                "level": "ERROR",
                "status": "error",
                "message": "boom",
                "pid": 8,
                "error_type": "ValueError",
                "error": "bad",
                "duration_s": 3.0,
            },
        ]
        (sessions / "s.ndjson").write_text("".join(json.dumps(r) + "\n" for r in records))
        (sessions / "t.ndjson").write_text(
            json.dumps({"ts": 0.5, "kind": "end", "status": "ok"}) + "\n"
        )
        sync_to_postgres(pg_url, sessions)

        def messages(**kw: Any) -> list[str | None]:
            return [e["message"] for e in query_postgres(pg_url, **kw)]

        assert messages(tail=3) == ["Detail one", "careful", "boom"]
        assert messages(session_id="s", tail=2) == ["careful", "boom"]
        assert messages(levels=("WARNING", "WARN", "ERROR")) == ["careful", "boom"]
        assert messages(levels=("NOTICE",)) == []
        assert messages(kind="end") == [None, "boom"]
        assert messages(role="tool") == ["Detail one"]
        assert messages(grep="DETAIL") == ["Detail one"]
        assert messages(since=2.0, until=4.0) == ["Detail one", "careful"]
        first = query_postgres(pg_url, "s", tail=1)
        assert json.loads(first[0]["data"]) == records[3]
        assert first == [
            {
                "session_id": "s",
                "seq": 4,
                "ts": 4.0,
                "kind": "end",
                "level": "ERROR",
                "logger": None,
                "role": None,
                "message": "boom",
                "data": first[0]["data"],
                "source_id": source_id(str(sessions)),
                "host": socket.gethostname(),
                "folder": str(sessions),
            }
        ]
        assert sessions_postgres(pg_url) == [
            {
                "session_id": "t",
                "start_time": "1970-01-01T00:00:00.500Z",
                "end_time": "1970-01-01T00:00:00.500Z",
                "status": "ok",
                "events": 1,
                "messages": 0,
                "warnings": 0,
                "errors": 0,
                "processes": 0,  # its end record names no pid (as in SQLite)
                "duration_s": 0.0,
                "start_ts": 0.5,
                "end_ts": 0.5,
            },
            {
                "session_id": "s",
                "start_time": "1970-01-01T00:00:01.000Z",
                "end_time": "1970-01-01T00:00:04.000Z",
                "status": "error",
                "events": 4,
                "messages": 2,
                "warnings": 1,
                "errors": 1,
                "processes": 2,
                "duration_s": 3.0,
                "start_ts": 1.0,
                "end_ts": 4.0,
            },
        ]
        assert [r["session_id"] for r in sessions_postgres(pg_url, "s")] == ["s"]
        assert pg_rows(
            pg_url,
            "SELECT time, pid, status, error_type, error, duration_s FROM events"
            " WHERE session_id = 's' AND kind = 'end'",
        ) == [
            (
                datetime(1970, 1, 1, 0, 0, 4, tzinfo=timezone.utc),
                8,
                "error",
                "ValueError",
                "bad",
                3.0,
            )
        ]
        with pytest.raises(UnknownSessionError, match="unknown session nope"):
            query_postgres(pg_url, "nope")
        with pytest.raises(UnknownSessionError, match="unknown session nope"):
            sessions_postgres(pg_url, "nope")

    def test_level_filter_by_number_and_held_names_as_sqlite(
        self, pg_url: str, sessions: Path, tmp_path: Path
    ) -> None:
        """--level: the same events from PostgreSQL as from SQLite, by levelno or standard name."""
        records = [
            {"ts": 1.0, "level": "TRACE", "levelno": 5, "message": "trace"},
            {"ts": 2.0, "level": "DEBUG", "message": "debug"},
            {"ts": 3.0, "level": "info", "message": "older hook's lower case"},
            {"ts": 4.0, "level": "SUCCESS", "levelno": 25, "message": "success"},
            {"ts": 5.0, "level": "Level 25", "levelno": 25, "message": "level 25"},
            {"ts": 6.0, "level": "NOTICE", "message": 'no number, "levelno":99 in text'},
            {"ts": 7.0, "level": "WARN", "message": "warn", "cfg": {"levelno": 1}},
            {"ts": 8.0, "level": "ERROR", "message": "error"},
        ]
        (sessions / "s.ndjson").write_text("".join(json.dumps(r) + "\n" for r in records))
        sync_to_postgres(pg_url, sessions)
        db = tmp_path / "mirror.db"
        sync_to_sqlite(db, sessions)

        def both(level: str) -> list[str]:
            found = [e["message"] for e in query_where(pg_url, build_filters(level))]
            assert found == [e["message"] for e in sqlite_query(str(db), level=level)]
            return found

        assert both("trace") == [r["message"] for r in records if r["level"] != "NOTICE"]
        assert both("debug")[0] == "debug"
        assert both("success") == ["success", "level 25", "warn", "error"]
        assert both("level 25") == ["success", "level 25", "warn", "error"]
        assert both("21") == ["success", "level 25", "warn", "error"]
        assert both("warning") == ["warn", "error"]
        with pytest.raises(InvalidFilterError, match="level 'notice' has no number in this mirror"):
            query_where(pg_url, build_filters("notice"))
        with pytest.raises(InvalidFilterError, match="level 'notice' has no number in this mirror"):
            sqlite_query(str(db), level="notice")

    def test_views_survive_lines_json_cannot_read(self, pg_url: str, sessions: Path) -> None:
        """An end record holding \\u0000, a lone surrogate escape or NaN leaves its view fields NULL, never an error."""
        lines = [
            '{"ts": 1, "kind": "end", "status": "error", "error": "nul \\u0000"}',
            '{"ts": 2, "kind": "end", "status": "ok", "error": "\\udc80"}',
            '{"ts": 3, "kind": "end", "status": "ok", "duration_s": NaN}',
            '{"ts": 4, "kind": "end", "status": "ok", "pid": 99999999999999999999, "duration_s": 1e400}',
        ]
        (sessions / "s.ndjson").write_text("".join(line + "\n" for line in lines))
        assert sync_to_postgres(pg_url, sessions).rows_inserted == 4
        assert pg_rows(pg_url, "SELECT seq, status, pid, duration_s FROM events ORDER BY seq") == [
            (1, None, None, None),
            (2, None, None, None),
            (3, None, None, None),
            (4, "ok", None, None),
        ]
        assert pg_rows(pg_url, "SELECT status, events FROM sessions") == [("ok", 4)]

    def test_views_show_the_trace_context(
        self, pg_url: str, tmp_path: Path, sessions: Path
    ) -> None:
        """A record written inside an OpenTelemetry span shows its trace_id, span_id and trace_flags in both events views."""
        from opentelemetry import trace

        from codex_logging import CodexProcessor

        context = trace.SpanContext(
            trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
        )
        processor = CodexProcessor(sessions, "t")
        with trace.use_span(trace.NonRecordingSpan(context)):
            processor(None, "info", {"event": "inside"})
        processor(None, "info", {"event": "outside"})
        sync_to_postgres(pg_url, sessions)
        sync_to_sqlite(tmp_path / "x.db", sessions)
        sql = "SELECT message, trace_id, span_id, trace_flags FROM events ORDER BY seq"
        expected = [
            ("inside", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01"),
            ("outside", None, None, None),
        ]
        assert pg_rows(pg_url, sql) == expected
        with db_connection(tmp_path / "x.db") as conn:
            assert conn.execute(sql).fetchall() == expected

    def test_reads_never_create_the_schema(self, pg_url: str) -> None:
        """Reading a database that was never synced is a clear error, and creates nothing."""
        with pytest.raises(DatabaseError, match="has no session_events table"):
            sessions_postgres(pg_url)
        assert pg_rows(pg_url, "SELECT to_regclass('session_events') IS NULL") == [(True,)]

    def test_unreachable_server_is_a_database_error(self, tmp_path: Path) -> None:
        """A URL no server answers raises DatabaseError naming the URL without its password."""
        url = f"postgresql://me:secret@/db?host={tmp_path}"
        with pytest.raises(DatabaseError, match=r"postgresql://me:\*\*\*@/db") as info:
            sync_to_postgres(url, tmp_path)
        assert "secret" not in str(info.value)

    def test_display_url(self) -> None:
        """Only the password is hidden."""
        assert display_url("postgresql://u:pw@h:5/d?x=1") == "postgresql://u:***@h:5/d?x=1"
        assert display_url("postgresql://u@h/d") == "postgresql://u@h/d"
        # A URL urllib cannot split still loses its password, never raises.
        assert display_url("postgresql://u:pw@[::1/d") == "postgresql://u:***@[::1/d"
        assert display_url("postgresql://[bad/x") == "postgresql://[bad/x"

    @pytest.mark.parametrize(
        "command",
        [
            ["sync", "--sessions-dir", "s"],
            ["sync", "--watch", "1", "--sessions-dir", "s"],
            ["query"],
            ["query", "--follow"],
            ["sessions"],
            ["prune", "--older-than", "1d", "--sessions-dir", "s"],
        ],
    )
    def test_malformed_url_is_one_line_exit_2(
        self, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A URL libpq cannot parse is one stderr line and exit 2 from every command, no traceback."""
        from codex_logging._cli.main import main

        (tmp_path / "s").mkdir(mode=0o700)
        write_lines(tmp_path / "s" / "x.ndjson", 1)
        assert main([*command, "--db", "postgresql://u:pw@[bad/x"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        (line,) = captured.err.splitlines()
        assert line.startswith(
            f"codex-logs {command[0]}: error: cannot use database postgresql://u:***@[bad/x: "
        )
        assert "pw" not in line


def test_without_psycopg_a_clear_error(tmp_path: Path) -> None:
    """Without psycopg, sync_to_postgres names the extra to install; importing the package never loads it."""
    script = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "import codex_logging\n"
        "assert 'psycopg' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    codex_logging.sync_to_postgres('postgresql:///x', sys.argv[1])\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith(
        "PostgresNotInstalledError PostgreSQL support needs psycopg 3:"
        " pip install 'psycopg[binary]>=3.1' (the postgres extra: pip install '.[postgres]' in a checkout)"
    )


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_missing_server_fails_under_ci(ci: str, outcome: str, tmp_path: Path) -> None:
    """Without server binaries the PostgreSQL tests fail under CI and are skipped elsewhere."""
    (tmp_path / "test_needs_pg.py").write_text(
        "import tests.pg\n"
        "tests.pg.find_bin_dir = lambda: None  # as on a machine without PostgreSQL\n"
        "def test_needs_server(pg_server):\n"
        "    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.pg", "-p", "no:cacheprovider",
         "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_needs_pg.py")],
        cwd=ROOT, env={**os.environ, "CI": ci}, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout
    assert done.returncode == (1 if ci else 0)
    if ci:
        assert "PostgreSQL tests cannot run under CI: no PostgreSQL server binaries" in done.stdout


def test_scale_out_example(pg_url: str, tmp_path: Path) -> None:
    """The first example of docs/scale-out.md prints what the page says and fills the sessions view."""
    import re

    page = (ROOT / "docs" / "scale-out.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, re.DOTALL)[0]
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "CODEX_MIRROR_URL": pg_url}
    out = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == "3 rows from 1 file\n"
    assert "`3 rows from 1 file`" in page
    ((sid, status, events),) = pg_rows(pg_url, "SELECT session_id, status, events FROM sessions")
    assert (sid, status, events) == ("ci-build-42", "ok", 3)


def test_team_commands_example(pg_url: str, tmp_path: Path) -> None:
    """The shell block of docs/scale-out.md, run after its Python example, syncs and shows the session."""
    import re

    page = (ROOT / "docs" / "scale-out.md").read_text()
    (tmp_path / "example.py").write_text(re.findall(r"```python\n(.*?)```", page, re.DOTALL)[0])
    env = {
        **os.environ,
        "CODEX_MIRROR_URL": pg_url,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    (block,) = re.findall(r"```sh\n(.*?)```", page, re.DOTALL)
    assert "postgresql://logs@db.internal/logs" in block
    assert "--watch 30 &" in block
    script = block.replace("postgresql://logs@db.internal/logs", f"'{pg_url}'")
    # The watch a machine leaves running: a short round here, ended once the reads are done.
    script = script.replace("--watch 30 &", "--watch 0.1 &") + 'kill -INT "$!"\nwait "$!"\n'
    done = subprocess.run(
        ["bash", "-euc", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=60
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert done.stderr == ""
    assert "synced 1 file: 0 rows inserted, 0 lines quarantined" in lines  # already there, once
    (summary,) = [line for line in lines if line.startswith("ci-build-42  ")]
    assert summary.split("  ")[3:5] == ["ok", "3"]
    events = [line.split("  ", 2)[2] for line in lines if "  ci-build-42  " in line]
    assert [e.split()[0] for e in events] == ["start", "message", "end"]


class TestCommandLine:
    def test_sync_query_and_sessions_take_a_url(
        self, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """codex-logs sync / query / sessions --db postgresql://... work as with a SQLite path."""
        from codex_logging import CodexHandler, session_scope
        from codex_logging._cli.main import main

        handler = CodexHandler(tmp_path / "s")
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        with session_scope("cli-pg"):
            logging.getLogger("app").warning("over the wire")
        handler.close()
        folder = str(tmp_path / "s")
        assert main(["sync", "--db", pg_url, "--sessions-dir", folder]) == 0
        assert "3 rows inserted" in capsys.readouterr().out
        assert main(["query", "--db", pg_url, "--session-id", "cli-pg", "--json"]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [e["kind"] for e in events] == ["start", "message", "end"]
        assert main(["sessions", "--db", pg_url, "--json"]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert (row["session_id"], row["status"], row["events"]) == ("cli-pg", "ok", 3)

    def test_environment_url(
        self,
        pg_url: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """CODEX_LOG_DB_PATH may hold the URL: sync, query and prune use it."""
        from codex_logging._cli.main import main

        monkeypatch.setenv("CODEX_LOG_DB_PATH", pg_url)
        (tmp_path / "s").mkdir(mode=0o700)
        write_lines(tmp_path / "s" / "env.ndjson", 2)
        assert main(["sync", "--sessions-dir", str(tmp_path / "s")]) == 0
        assert "2 rows inserted" in capsys.readouterr().out
        assert main(["query", "--session-id", "env", "--json"]) == 0
        assert [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()] == [
            "m0",
            "m1",
        ]
        args = ["prune", "--older-than", "1d", "--dry-run", "--sessions-dir", str(tmp_path / "s")]
        assert main(args) == 0
        assert capsys.readouterr().out == "would retire 0 sessions: nothing deleted (--dry-run)\n"

    def test_watch_outlives_a_server_that_goes_away(self, pg_url: str, tmp_path: Path) -> None:
        """sync --watch keeps going while the database refuses connections, says so once, then syncs every row once."""
        folder = tmp_path / "s"
        folder.mkdir(mode=0o700)
        write_lines(folder / "w.ndjson", 3)
        out, err = tmp_path / "out", tmp_path / "err"
        name = pg_url.rpartition("/")[2].partition("?")[0]
        admin = pg_url.replace(f"/{name}?", "/postgres?", 1)

        def wait_for(check: Any) -> None:
            deadline = time.monotonic() + 60
            while not check():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, (out.read_text(), err.read_text())
                time.sleep(0.02)

        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "codex-logs"), "sync", "--watch", "0.05", "--db", pg_url, "--sessions-dir", str(folder)],
                stdout=stdout, stderr=stderr, cwd=ROOT,
            )  # fmt: skip
        try:
            wait_for(lambda: "3 rows inserted" in out.read_text())
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            write_lines(folder / "w.ndjson", 2, start=3)
            wait_for(err.read_text)
            rounds = out.read_text().count("\n")
            time.sleep(0.5)  # rounds go on failing, each one silent
            assert out.read_text().count("\n") == rounds
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            wait_for(lambda: "2 rows inserted" in out.read_text())
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        assert proc.returncode == 0
        refused, resumed = err.read_text().splitlines()
        assert refused.startswith(f"warning: cannot use database {pg_url}: ")
        assert refused.endswith(
            f'database "{name}" is not currently accepting connections (trying again each round)'
        )
        assert resumed == "warning: the database answers again: syncing resumed"
        got = pg_rows(pg_url, "SELECT seq, message FROM session_events ORDER BY seq")
        assert got == [(i + 1, f"m{i}") for i in range(5)]


@pytest.mark.slow
def test_three_machines_sync_watch_through_kills(pg_url: str, tmp_path: Path) -> None:
    """Three folders sharing one session id, each under codex-logs sync --watch (one folder twice), watchers
    killed with SIGKILL and restarted while writers append: sessions and query show every row exactly once."""
    cli = str(Path(sys.executable).parent / "codex-logs")
    folders = [tmp_path / f"machine{n}" / "sessions" for n in range(3)]
    for folder in folders:
        folder.mkdir(parents=True, mode=0o700)
    flags = tmp_path / "flags"
    flags.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    starts = itertools.count()

    def watch(folder: Path) -> subprocess.Popen[bytes]:
        with (logs / f"{next(starts)}.out").open("w") as out:
            return subprocess.Popen(
                [cli, "sync", "--watch", "0.05", "--db", pg_url, "--sessions-dir", str(folder)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stored(machine: int | None = None) -> int:
        if pg_rows(pg_url, "SELECT to_regclass('session_events') IS NULL") == [(True,)]:
            return 0  # no watcher has synced a line yet
        sql = "SELECT count(*) FROM session_events e JOIN sources s USING (source_id)"
        if machine is None:
            return int(pg_rows(pg_url, sql)[0][0])
        sql += " WHERE s.folder = %s"
        return int(pg_rows(pg_url, sql, (str(folders[machine]),))[0][0])

    def wait_for(check: Any) -> None:
        deadline = time.monotonic() + 120
        while not check():
            assert all(w.poll() in (None, 0) for w in writers)
            assert all(p.poll() is None for p in watchers), "a watcher died"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def kill_and_restart(which: list[int]) -> None:
        for n in which:
            assert watchers[n].poll() is None  # killed while it runs
            watchers[n].send_signal(signal.SIGKILL)
            watchers[n].wait(timeout=60)
            watchers[n] = watch(folders[n % 3])

    # Watcher 3 syncs folder 0 too: two syncs of one folder race on one machine.
    watchers = [watch(folder) for folder in (*folders, folders[0])]
    writers = [
        subprocess.Popen([sys.executable, "-c", PHASED_WRITER, str(folder), str(n), str(flags)], cwd=ROOT)
        for n, folder in enumerate(folders)
    ]  # fmt: skip
    try:
        for phase in range(2):
            # Every writer is paused, alive, with a phase still to write: each
            # kill lands while a watcher has work ahead of it.
            wait_for(lambda: all((flags / f"done{n}-{phase}").exists() for n in range(3)))  # noqa: B023
            before = stored()
            wait_for(lambda: all(stored(n) > 0 for n in range(3)))
            kill_and_restart([0, 1, 2, 3] if phase == 0 else [0, 2])
            (flags / f"go{phase}").touch()
            wait_for(lambda: stored() > before)  # noqa: B023 - the next phase is landing
        codes = [w.wait(timeout=120) for w in writers]
        assert codes == [0, 0, 0]
        total = 3 * 3 * 1300
        wait_for(lambda: stored() == total)
    finally:
        for phase in range(2):
            (flags / f"go{phase}").touch()
        for p in watchers:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (*watchers, *writers):
            p.wait(timeout=60)
    outputs = "".join(log.read_text() for log in sorted(logs.iterdir()))
    assert [p.returncode for p in watchers] == [0, 0, 0, 0], outputs
    assert "Traceback" not in outputs
    sessions = subprocess.run(
        [cli, "sessions", "--db", pg_url, "--json"], capture_output=True, text=True, check=True
    ).stdout
    summary = {row["session_id"]: row["events"] for row in map(json.loads, sessions.splitlines())}
    assert summary == {"shared": 9000, "own0": 900, "own1": 900, "own2": 900}
    assert pg_rows(pg_url, "SELECT sources FROM sessions WHERE session_id = 'shared'") == [(3,)]
    assert pg_rows(pg_url, "SELECT count(*) FROM session_ingest_errors") == [(0,)]
    query = subprocess.run(
        [cli, "query", "--db", pg_url, "--json", "--tail", "100000"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    events = [json.loads(line) for line in query.splitlines()]
    assert_exactly_once(
        (f"{e['session_id']}/{e['message']}" for e in events),
        [f"shared/{n}{p}:0:{i}" for n in range(3) for p in range(3) for i in range(1000)]
        + [f"own{n}/{n}{p}o:0:{i}" for n in range(3) for p in range(3) for i in range(300)],
    )


class TestReadingAlike:
    """query --where / --grep / --all and show answer the same from PostgreSQL as from SQLite."""

    CASES = (
        ["--where", "tool=git"],
        ["--where", "tool=git", "--where", "user=alice"],
        ["--where", "ms>1000"],
        ["--where", "ms<1000", "--where", "ms>=812.5"],
        ["--where", "ok=true"],
        ["--where", "levelno=25"],
        ["--where", "tool!=git"],
        ["--where", "tool>1"],
        ["--where", 'tags=["a", "b"]'],
        ["--where", "tags!=x"],
        ["--grep", "ALICE"],
        ["--grep", "two words"],
        ["--grep", "user"],
        ["--grep", "warning"],
        ["--grep", "valueerror"],
        ["--grep", "git"],
    )

    def test_same_answers_on_both_mirrors(
        self, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from codex_logging._cli.main import main
        from tests.checks import write_rich_session

        folder = tmp_path / "s"
        folder.mkdir(mode=0o700)
        write_rich_session(folder)
        sqlite = str(tmp_path / "x.db")
        sync_to_sqlite(sqlite, folder)
        sync_to_postgres(pg_url, folder)
        answers: dict[str, list[list[str]]] = {}
        for name, db in (("sqlite", sqlite), ("postgres", pg_url)):
            answers[name] = []
            for case in self.CASES:
                assert main(["query", "--db", db, "--json", "--all", *case]) == 0
                out = capsys.readouterr().out.splitlines()
                answers[name].append([json.loads(line)["message"] for line in out])
            assert main(["show", "--db", db, "--all"]) == 0
            answers[name].append(capsys.readouterr().out.splitlines())
        assert answers["postgres"] == answers["sqlite"]
        by_case = dict(zip(map(tuple, self.CASES), answers["sqlite"], strict=False))
        assert by_case[("--where", "tool=git")] == ["calling git", "boom"]
        assert by_case[("--grep", "ALICE")] == ["calling git"]
        assert by_case[("--grep", "user")] == []
        assert "── end r · error · KeyboardInterrupt · 4.00s ──" in answers["postgres"][-1][-1]

    def test_numbers_alike(
        self, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--where with a number finds the same rows, however the number is spelled."""
        from codex_logging._cli.main import main
        from tests.checks import NUMBER_LINES, NUMBER_WHERE

        sqlite = synced_text(tmp_path, NUMBER_LINES, sid="n")
        sync_to_postgres(pg_url, tmp_path / "sessions")
        for db in (str(sqlite), pg_url):
            found = []
            for test, _ in NUMBER_WHERE:
                assert main(["query", "--db", db, "--json", "--all", "--where", test]) == 0
                lines = capsys.readouterr().out.splitlines()
                found.append((test, [json.loads(line)["message"] for line in lines]))
            assert found == list(NUMBER_WHERE), db


def test_events_time_is_a_timestamp_on_sqlites_millisecond(pg_url: str, tmp_path: Path) -> None:
    """events.time is a timestamptz; for every ts it is the millisecond SQLite's view shows."""
    import random

    rng = random.Random(7)
    stamps = [20.0215, 20.0216, 1.0004999, 1795442560.9995, 1795442560.0005, 0.0]
    stamps += [rng.uniform(0, 2e9) for _ in range(300)]
    stamps += [round(rng.uniform(0, 2e9), 3) + 0.0005 for _ in range(300)]
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    (folder / "t.ndjson").write_text(
        "".join(json.dumps({"ts": ts, "message": "m"}) + "\n" for ts in stamps)
    )
    sqlite_db = tmp_path / "x.db"
    sync_to_sqlite(sqlite_db, folder)
    sync_to_postgres(pg_url, folder)
    with db_connection(sqlite_db) as conn:
        shown = [row[0] for row in conn.execute("SELECT time FROM events ORDER BY seq")]
    times = pg_rows(pg_url, "SELECT time FROM events ORDER BY seq")
    assert all(isinstance(row[0], datetime) and row[0].utcoffset() is not None for row in times)
    as_text = [
        row[0].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for row in times
    ]
    assert as_text == shown
    assert shown[:2] == ["1970-01-01T00:00:20.022Z", "1970-01-01T00:00:20.022Z"]


def test_rows_say_which_machine_and_folder(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session synced from two folders: text lines say host:folder, --json has source_id, host, folder."""
    from codex_logging._cli.main import main

    folders = [tmp_path / "one", tmp_path / "two"]
    for number, folder in enumerate(folders):
        folder.mkdir(mode=0o700)
        (folder / "ci.ndjson").write_text(
            json.dumps({"ts": 10.0 + number, "message": f"from {number}"}) + "\n"
        )
        sync_to_postgres(pg_url, folder)
    host = socket.gethostname()
    assert main(["query", "--db", pg_url, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["message"], r["host"], r["folder"]) for r in rows] == [
        ("from 0", host, str(folders[0])),
        ("from 1", host, str(folders[1])),
    ]
    assert len({r["source_id"] for r in rows}) == 2
    assert main(["query", "--db", pg_url]) == 0
    text = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1:3] for line in text] == [
        ["ci", f"{host}:{folders[0]}"],
        ["ci", f"{host}:{folders[1]}"],
    ]
    assert main(["show", "ci", "--db", pg_url]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert f" {host}:{folders[1]} " in shown[1]
    # One source: no column for it.
    assert main(["query", "--db", pg_url, "--tail", "1"]) == 0
    assert f"{host}:" not in capsys.readouterr().out


def test_abandoned_as_in_sqlite(pg_url: str, tmp_path: Path) -> None:
    """A session whose only process is gone, without an end, is `abandoned` in both mirrors."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(gone.stdout)
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    start = {"ts": time.time(), "kind": "start", "pid": pid, "host": socket.gethostname()}
    (folder / "gone.ndjson").write_text(
        json.dumps(start) + "\n" + json.dumps({"message": "m"}) + "\n"
    )
    live = {"ts": time.time(), "kind": "start", "pid": os.getpid(), "host": socket.gethostname()}
    (folder / "live.ndjson").write_text(json.dumps(live) + "\n")
    sync_to_postgres(pg_url, folder)
    sync_to_sqlite(tmp_path / "x.db", folder)
    from codex_logging.query_logs import sessions

    expected = {"gone": "abandoned", "live": None}
    assert {r["session_id"]: r["status"] for r in sessions_postgres(pg_url)} == expected
    assert {r["session_id"]: r["status"] for r in sessions(tmp_path / "x.db")} == expected
