"""Query: the read commands on 1,000,000 events across 1,000 sessions, process start included.

Each session has a start and an end record and a warning every 100 events, so
the partial indexes hold what they hold in real use. Beside the wall times, the
query plans SQLite chose for the exact SQL the read module ran: no step may scan
the table itself (``sessions`` scans ``session_summary``, one row per session:
the answer). A second table: ``sessions`` at 5,000,000 events across 10,000
sessions, from the summary and from the aggregate view it replaced.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import codex_logging._sqlite.read as read_module
from codex_logging._mirror.compact import BIT
from codex_logging._sqlite.db import INSERT_ROW, MIGRATIONS, atomic, connect, rebuild_summary
from codex_logging.query_logs import query, sessions

EVENTS = int(os.environ.get("BENCH_QUERY_EVENTS", "1000000"))
SESSIONS = 1000
#: Target: ``sessions`` answers in < 100 ms at 5,000,000 events and 10,000 sessions.
SUMMARY_EVENTS = int(os.environ.get("BENCH_SUMMARY_EVENTS", str(EVENTS * 5)))
SUMMARY_SESSIONS = 10_000
CLI = "import sys; from codex_logging._cli.main import main; sys.exit(main(sys.argv[1:]))"


def build(db: Path, events: int = EVENTS, sessions: int = SESSIONS) -> float:
    """Load the rows with executemany, then build their summary; return the summary's seconds."""
    per = events // sessions
    # The records {"message": ..., "pid": ..., "status": "ok"} as the compact
    # mirror stores them (docs/mirror.md, "Each value stored once").
    shape = BIT["message"] | BIT["pid"]
    with contextlib.closing(connect(str(db))) as conn, atomic(conn, str(db)):
        for s in range(sessions):
            conn.execute(
                "INSERT INTO session_keys (id, session_id) VALUES (?, ?)", (s + 1, f"s{s:04d}")
            )
            rows = []
            for i in range(per):
                kind = "start" if i == 0 else "end" if i == per - 1 else "message"
                level = "WARNING" if i % 100 == 50 else "INFO"
                rows.append((s + 1, i + 1, 1_700_000_000.0 + i * sessions + s, kind, level,
                             "agent", None, f"event {i}", 4000 + s, shape, '{"status":"ok"}'))  # fmt: skip
            conn.executemany(INSERT_ROW, rows)
        start = time.perf_counter()
        rebuild_summary(conn)  # what migration 4 does to a database that has rows
        return time.perf_counter() - start


def in_process(db: Path, sql: str, repeats: int = 5) -> tuple[float, int]:
    """Median seconds of one read-only SELECT, and its row count."""
    times, count = [], 0
    for _ in range(repeats):
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            start = time.perf_counter()
            count = len(conn.execute(sql).fetchall())
            times.append(time.perf_counter() - start)
    return statistics.median(times), count


def summary_table() -> str:
    """``sessions`` at SUMMARY_EVENTS events / 10,000 sessions: the summary against the old view."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "s.db"
        start = time.perf_counter()
        backfill = build(db, SUMMARY_EVENTS, SUMMARY_SESSIONS)
        built = time.perf_counter() - start
        (old_view,) = [s for s in MIGRATIONS[1][1] if s.startswith("CREATE VIEW sessions")]
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute(old_view.replace("CREATE VIEW sessions", "CREATE VIEW old_sessions"))
            conn.commit()
        select = "SELECT * FROM {} ORDER BY start_ts, session_id"
        new, new_rows = in_process(db, select.format("sessions"))
        old, old_rows = in_process(db, select.format("old_sessions"), repeats=3)
        assert new_rows == old_rows == SUMMARY_SESSIONS, (new_rows, old_rows)
        api = []
        for _ in range(5):
            start = time.perf_counter()
            assert len(sessions(str(db))) == SUMMARY_SESSIONS
            api.append(time.perf_counter() - start)
        cli, out = run(["sessions", "--db", str(db)])
        assert len(out.splitlines()) == SUMMARY_SESSIONS
    head = (f"Sessions: {SUMMARY_EVENTS:,} events across {SUMMARY_SESSIONS:,} sessions (rows loaded in {built - backfill:.0f} s; "
            f"the summary built from them, as migration 4 does, in {backfill:.1f} s), median")  # fmt: skip
    return "\n".join([
        head, "",
        "| read | seconds |", "| --- | ---: |",
        f"| `sessions` view from `session_summary` (the SELECT alone; target < 0.100) | {new:.3f} |",
        f"| the aggregate `sessions` view it replaced (migration 2; the SELECT alone) | {old:.3f} |",
        f"| `query_logs.sessions()`: the read model, open to dicts | {statistics.median(api):.3f} |",
        f"| `codex-logs sessions` (wall time with process start and printing) | {cli:.3f} |",
    ])  # fmt: skip


def run(args: list[str], repeats: int = 5) -> tuple[float, str]:
    times = []
    out = ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CLI, *args], capture_output=True, text=True, check=True
        ).stdout
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def plans(db: Path) -> dict[str, str]:
    """The plan of the SQL each read shape really ran, traced from the read module."""
    traced: list[str] = []
    real = read_module.connect_readonly

    def tracing(path: str) -> sqlite3.Connection:
        conn = real(path)
        conn.set_trace_callback(traced.append)
        return conn

    read_module.connect_readonly = tracing
    shapes = {
        "query --tail 20": lambda: query(str(db), tail=20),
        "query --session-id ID --tail 20": lambda: query(str(db), "s0500", tail=20),
        "query --kind start --tail 20": lambda: query(str(db), kind="start", tail=20),
        "query --level warning --tail 20": lambda: query(str(db), level="warning", tail=20),
        "query --session-id ID --kind end": lambda: query(str(db), "s0500", kind="end"),
        "sessions": lambda: sessions(str(db)),
    }
    found = {}
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.create_function("codex_levelno", 2, read_module._levelno)
            for name, call in shapes.items():
                traced.clear()
                call()
                sql = next(s for s in traced if " ORDER BY " in s and "sqlite_master" not in s)
                steps = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
                scans = [s for s in steps if s.startswith("SCAN ") and s != "SCAN session_summary"]
                assert all(" INDEX " in s for s in scans), (name, steps)
                found[name] = " / ".join(dict.fromkeys(steps))
    finally:
        read_module.connect_readonly = real
    return found


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "q.db"
        start = time.perf_counter()
        build(db)
        built = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import codex_logging"], check=True)
        python_start = time.perf_counter() - start
        rows = [
            ("query --tail 20 (all sessions, by ts)", ["query", "--db", str(db), "--tail", "20"], 20),
            ("query --session-id ID --tail 20 (by seq)", ["query", "--db", str(db), "--session-id", "s0500", "--tail", "20"], 20),
            ("query --kind start --tail 20 (across sessions)", ["query", "--db", str(db), "--kind", "start", "--tail", "20"], 20),
            ("query --level warning --tail 20 (across sessions)", ["query", "--db", str(db), "--level", "warning", "--tail", "20"], 20),
            ("query --session-id ID --kind end", ["query", "--db", str(db), "--session-id", "s0500", "--kind", "end"], 1),
            (f"sessions ({SESSIONS:,} lines)", ["sessions", "--db", str(db)], SESSIONS),
        ]  # fmt: skip
        table = []
        for label, args, lines in rows:
            seconds, out = run(args)
            assert len(out.splitlines()) == lines, (label, len(out.splitlines()))
            table.append(f"| {label} | {seconds:.3f} |")
        found = plans(db)
    return "\n".join([
        f"Query: {EVENTS:,} events across {SESSIONS:,} sessions (built in {built:.0f} s), median of 5 runs, wall time with process start", "",
        "| command | seconds |", "| --- | ---: |",
        f"| python -c 'import codex_logging' (the floor: interpreter start) | {python_start:.3f} |",
        *table, "",
        "Plans (no step scans the table; `SCAN ... USING ... INDEX` walks an index; `sessions` scans its summary):", "",
        *(f"- {name}: `{plan}`" for name, plan in found.items()),
        "",
        summary_table(),
    ])  # fmt: skip


if __name__ == "__main__":
    print(main())
