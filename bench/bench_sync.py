"""Sync: sync_to_sqlite against the floor (read + json.loads + one executemany), and peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codex_logging import sync_to_sqlite
from codex_logging._mirror.compact import split
from codex_logging._record import encode
from codex_logging._sqlite.db import INSERT_ROW, atomic, connect, session_key

LINES = int(os.environ.get("BENCH_SYNC_LINES", "500000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BIG_MB = int(os.environ.get("BENCH_BIG_MB", "1024"))
#: Target: one idle round over this many unchanged files (target < 50 ms).
IDLE_FILES = int(os.environ.get("BENCH_IDLE_FILES", "10000"))
#: Peak memory syncing this many records of 1 MiB (0 skips it).
LARGE_RECORDS = int(os.environ.get("BENCH_LARGE_RECORDS", "2000"))
#: One line of this many MiB, and one a quarter as long (0 skips them).
LONG_LINE_MB = int(os.environ.get("BENCH_LONG_LINE_MB", "200"))


def make_file(path: Path, lines: int, pad: int = 0) -> None:
    with path.open("wb") as f:
        batch = []
        for i in range(lines):
            record = {"ts": 1_700_000_000.0 + i / 1000, "session_id": path.stem, "kind": "message", "level": "INFO",
                      "logger": "agent", "message": f"processing step {i}", "pid": 4242, "role": "assistant", "step": i}  # fmt: skip
            if pad:
                record["pad"] = "x" * pad
            batch.append(encode(record))
            if len(batch) == 10_000:
                f.write(b"".join(batch))
                batch.clear()
        f.write(b"".join(batch))


def floor(db: Path, path: Path) -> None:
    # The least a sync into the compact mirror does (docs/mirror.md, "Each value
    # stored once"): parse, split into the columns and the other fields, insert.
    with contextlib.closing(connect(str(db))) as conn, atomic(conn, str(db)):
        sid = session_key(conn, {}, path.stem)
        rows = []
        with path.open("rb") as f:
            for seq, raw in enumerate(f, 1):
                obj = json.loads(raw)
                columns = (
                    obj["ts"],
                    obj["kind"],
                    obj["level"],
                    obj["logger"],
                    obj["role"],
                    obj["message"],
                )
                rows.append((sid, seq, *columns, *split(obj, path.stem, columns)))
        conn.executemany(INSERT_ROW, rows)


def timed(fn: object, repeats: int, folder: Path, name: str) -> float:
    rates = []
    for r in range(repeats):
        db = folder / f"{name}-{r}.db"
        os.sync()  # no timed run pays for an earlier one's writes
        start = time.perf_counter()
        fn(db)  # type: ignore[operator]
        rates.append(LINES / (time.perf_counter() - start))
        with contextlib.closing(__import__("sqlite3").connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM session_events").fetchone() == (LINES,)
    return statistics.median(rates)


# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
# The parse worker's peak (a child the sync waited for): ru_maxrss of the children.
PEAK = """
import resource, sys, time
from codex_logging import sync_to_sqlite
start = time.perf_counter()
report = sync_to_sqlite(sys.argv[1], sys.argv[2])
elapsed = time.perf_counter() - start
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(report.rows_inserted, hwm, elapsed, worker)
"""


def run_peak(db: Path, sessions: Path) -> tuple[int, int, float, int]:
    """Sync in a fresh process: rows, its peak RSS (KiB), seconds, its parse worker's peak (KiB, 0: none)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(db), str(sessions)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows, rss_kb, elapsed, worker_kb = out.stdout.split()
    return int(rows), int(rss_kb), float(elapsed), int(worker_kb)


def idle_rounds(folder: Path) -> tuple[float, float]:
    """Min and median ms of a sync round over IDLE_FILES files of which none changed."""
    sessions = folder / "idle"
    sessions.mkdir()
    past = time.time() - 86400  # a project's history: files last written a day ago
    for i in range(IDLE_FILES):
        path = sessions / f"s{i:05d}.ndjson"
        path.write_bytes(encode({"ts": 1.0, "message": f"m{i}"}))
        os.utime(path, (past, past))
    db = folder / "idle.db"
    assert sync_to_sqlite(db, sessions).rows_inserted == IDLE_FILES
    times = []
    for _ in range(max(REPEATS, 5) * 3):
        start = time.perf_counter()
        report = sync_to_sqlite(db, sessions)
        times.append(time.perf_counter() - start)
        assert (report.files_skipped, report.rows_inserted) == (IDLE_FILES, 0)
    return min(times) * 1000, statistics.median(times) * 1000


def large_records(folder: Path) -> tuple[int, int, float]:
    """Peak RSS syncing LARGE_RECORDS records of 1 MiB: file size, KiB, seconds."""
    sessions = folder / "large"
    sessions.mkdir()
    pad = "x" * (1 << 20)
    with (sessions / "large.ndjson").open("wb") as f:
        for i in range(LARGE_RECORDS):
            f.write(encode({"ts": 1.0 + i, "message": f"record {i}", "pad": pad}))
    size = (sessions / "large.ndjson").stat().st_size
    rows, rss_kb, elapsed, _worker_kb = run_peak(folder / "large.db", sessions)
    assert rows == LARGE_RECORDS, rows
    return size, rss_kb, elapsed


def long_line(folder: Path, mib: int, field: str) -> tuple[int, int, float]:
    """One line of ``mib`` MiB held in ``field``: line size, peak KiB, seconds."""
    sessions = folder / f"long-{field}-{mib}"
    sessions.mkdir()
    with (sessions / "long.ndjson").open("wb") as f:
        f.write(b'{"ts": 1.0, "message": "m", "' + field.encode() + b'": "')
        for _ in range(mib):
            f.write(b"y" * (1 << 20))
        f.write(b'"}\n')
    size = (sessions / "long.ndjson").stat().st_size
    rows, rss_kb, elapsed, _worker_kb = run_peak(folder / f"long-{field}-{mib}.db", sessions)
    assert rows == 1, rows
    shutil.rmtree(sessions)
    return size, rss_kb, elapsed


def sqlite_alone(folder: Path, mib: int, field: str) -> float:
    """Seconds SQLite alone takes to insert the texts a long line's row holds, in WAL mode.

    The compact row holds the value once, in ``message`` or in ``fields``
    (docs/mirror.md, "Each value stored once").
    """
    db = folder / f"alone-{field}-{mib}.db"
    value = "y" * (mib << 20)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (message TEXT, fields TEXT)")
        texts = (value, '{"ts":1.0}') if field == "message" else ("m", '{"pad":"' + value + '"}')
        start = time.perf_counter()
        with conn:
            conn.execute("INSERT INTO t VALUES (?, ?)", texts)
        elapsed = time.perf_counter() - start
    db.unlink()
    return elapsed


def baseline_rss() -> int:
    """Peak RSS (KiB) of a process that only imports the package and sqlite3."""
    probe = (
        "import sqlite3, codex_logging\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(out.stdout)


def peak_memory(folder: Path) -> tuple[int, int, float, int]:
    """Sync a file of BIG_MB MiB in a fresh process: its size, then :func:`run_peak`'s but the rows."""
    big = folder / "big"
    big.mkdir()
    line_size = len(
        encode({"ts": 1.0, "pad": "x" * 900, "message": "processing step 1", "session_id": "big"})
    )
    lines = BIG_MB * 1024 * 1024 // (line_size + 120)
    make_file(big / "big.ndjson", lines, pad=900)
    size = (big / "big.ndjson").stat().st_size
    rows, rss_kb, elapsed, worker_kb = run_peak(folder / "big.db", big)
    assert rows == lines, (rows, lines)
    shutil.rmtree(big)
    return size, rss_kb, elapsed, worker_kb


def main() -> str:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        sessions = folder / "sessions"
        sessions.mkdir()
        make_file(sessions / "bench.ndjson", LINES)
        ours = timed(lambda db: sync_to_sqlite(db, sessions), REPEATS, folder, "ours")
        base = timed(lambda db: floor(db, sessions / "bench.ndjson"), REPEATS, folder, "floor")
        fast = "orjson" if "orjson" in sys.modules else "json"
        out = [f"Sync: {LINES:,} lines in one session file, {REPEATS} repeats, median; sync parses with {fast}", "",
               "| path | rows/s | vs floor |", "| --- | ---: | ---: |",
               f"| floor: read + json.loads + one executemany, one transaction | {base:,.0f} | 1.00x |",
               f"| sync_to_sqlite (batches of 5,000, watermark per batch) | {ours:,.0f} | {ours / base:.2f}x |"]  # fmt: skip
        if BIG_MB:
            size, rss_kb, elapsed, worker_kb = peak_memory(folder)
            peak = f"Peak RSS of a process syncing a {size / 2**30:.2f} GiB file: {rss_kb / 1024:.0f} MiB"
            worker = f", its parse worker's {worker_kb / 1024:.0f} MiB" if worker_kb else ""
            out += ["", f"{peak} ({elapsed:.0f} s{worker})"]
        out += extra_rows(folder)
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.append(
            f"(the floor holds every row in memory: this process peaked at {self_rss / 1024:.0f} MiB)"
        )
    return "\n".join(out)


def extra_rows(folder: Path) -> list[str]:
    """The idle, large-record and long-line figures (docs/performance.md)."""
    out = ["", "| sync case | figure | target |", "| --- | ---: | --- |"]
    if IDLE_FILES:
        low, mid = idle_rounds(folder)
        out.append(
            f"| idle round, {IDLE_FILES:,} unchanged files (min / median) | {low:.0f} / {mid:.0f} ms | < 50 ms |"
        )
    base = baseline_rss() / 1024
    out.append(f"| peak RSS of a process that only imports codex_logging | {base:.0f} MiB | |")
    if LARGE_RECORDS:
        size, rss_kb, elapsed = large_records(folder)
        out.append(
            f"| peak RSS syncing {LARGE_RECORDS:,} records of 1 MiB ({size / 2**30:.2f} GiB) | {rss_kb / 1024:.0f} MiB ({elapsed:.0f} s) | near the 1 GiB-file figure |"
        )
    if LONG_LINE_MB:
        for field in ("pad", "message"):
            per_mib = []
            for mib in (LONG_LINE_MB // 4, LONG_LINE_MB):
                size, rss_kb, elapsed = long_line(folder, mib, field)
                per_mib.append(elapsed / mib)
                out.append(
                    f"| one {size / 2**20:.0f} MiB line, in `{field}` | {elapsed:.1f} s, peak {rss_kb / 1024:.0f} MiB = {(rss_kb / 1024 - base) / (size / 2**20):.1f}x the line above the import | linear time |"
                )
            out.append(
                f"| time per MiB, {LONG_LINE_MB} MiB line / {LONG_LINE_MB // 4} MiB line, `{field}` | {per_mib[1] / per_mib[0]:.2f} | ~1.0 (linear) |"
            )
            alone = [
                sqlite_alone(folder, mib, field) / mib for mib in (LONG_LINE_MB // 4, LONG_LINE_MB)
            ]
            out.append(
                f"| the same, SQLite alone inserting the row's texts (one INSERT, WAL) | {alone[1] / alone[0]:.2f} | what SQLite itself does |"
            )
    return out


if __name__ == "__main__":
    print(main())
