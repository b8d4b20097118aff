"""Query: query_logs --tail 20 on 1,000,000 events across 1,000 sessions, process start included."""

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

from codex_logging._db import atomic, connect

EVENTS = int(os.environ.get("BENCH_QUERY_EVENTS", "1000000"))
SESSIONS = 1000


def build(db: Path) -> None:
    per = EVENTS // SESSIONS
    with contextlib.closing(connect(str(db))) as conn, atomic(conn, str(db)):
        for s in range(SESSIONS):
            rows = [(f"s{s:04d}", i + 1, 1_700_000_000.0 + i * SESSIONS + s, "message", "INFO", "agent", None,
                     f"event {i}", f'{{"message": "event {i}"}}') for i in range(per)]  # fmt: skip
            conn.executemany("INSERT INTO session_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def run(args: list[str], repeats: int = 5) -> tuple[float, str]:
    times = []
    out = ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "codex_logging.query_logs", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "q.db"
        build(db)
        python_start, _ = 0.0, None
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import codex_logging"], check=True)
        python_start = time.perf_counter() - start
        all_s, out_all = run(["--db", str(db), "--tail", "20"])
        one_s, out_one = run(["--db", str(db), "--session-id", "s0500", "--tail", "20"])
        assert len(out_all.splitlines()) == 20
        assert len(out_one.splitlines()) == 20
        with contextlib.closing(sqlite3.connect(db)) as conn:
            plans = [" / ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()) for sql in (
                "SELECT * FROM session_events ORDER BY ts DESC, session_id DESC, seq DESC LIMIT 20",
                "SELECT * FROM session_events WHERE session_id = 's0500' ORDER BY seq DESC LIMIT 20")]  # fmt: skip
    return "\n".join([
        f"Query: {EVENTS:,} events across {SESSIONS:,} sessions, median of 5 runs, wall time with process start", "",
        "| command | seconds |", "| --- | ---: |",
        f"| python -c 'import codex_logging' (the floor: interpreter start) | {python_start:.3f} |",
        f"| query_logs --tail 20 (all sessions, by ts) | {all_s:.3f} |",
        f"| query_logs --session-id ID --tail 20 (by seq) | {one_s:.3f} |", "",
        f"Plans: all sessions: `{plans[0]}`; one session: `{plans[1]}`",
    ])  # fmt: skip


if __name__ == "__main__":
    print(main())
