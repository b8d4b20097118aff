"""Sync: sync_to_sqlite against the floor (read + json.loads + one executemany), and peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codex_logging import sync_to_sqlite
from codex_logging._db import atomic, connect
from codex_logging._record import encode

LINES = int(os.environ.get("BENCH_SYNC_LINES", "500000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BIG_MB = int(os.environ.get("BENCH_BIG_MB", "1024"))


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
    with contextlib.closing(connect(str(db))) as conn, atomic(conn, str(db)):
        rows = []
        with path.open("rb") as f:
            for seq, raw in enumerate(f, 1):
                obj = json.loads(raw)
                rows.append(
                    (
                        path.stem,
                        seq,
                        obj["ts"],
                        obj["kind"],
                        obj["level"],
                        obj["logger"],
                        obj["role"],
                        obj["message"],
                        raw.decode(),
                    )
                )
        conn.executemany("INSERT INTO session_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def timed(fn: object, repeats: int, folder: Path, name: str) -> float:
    rates = []
    for r in range(repeats):
        db = folder / f"{name}-{r}.db"
        start = time.perf_counter()
        fn(db)  # type: ignore[operator]
        rates.append(LINES / (time.perf_counter() - start))
        with contextlib.closing(__import__("sqlite3").connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM session_events").fetchone() == (LINES,)
    return statistics.median(rates)


# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
PEAK = """
import sys
from codex_logging import sync_to_sqlite
report = sync_to_sqlite(sys.argv[1], sys.argv[2])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(report.rows_inserted, hwm)
"""


def peak_memory(folder: Path) -> tuple[int, int, float]:
    big = folder / "big"
    big.mkdir()
    line_size = len(
        encode({"ts": 1.0, "pad": "x" * 900, "message": "processing step 1", "session_id": "big"})
    )
    lines = BIG_MB * 1024 * 1024 // (line_size + 120)
    make_file(big / "big.ndjson", lines, pad=900)
    size = (big / "big.ndjson").stat().st_size
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(folder / "big.db"), str(big)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    rows, rss_kb = map(int, out.stdout.split())
    assert rows == lines, (rows, lines)
    return size, rss_kb, elapsed


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
            size, rss_kb, elapsed = peak_memory(folder)
            peak = f"Peak RSS of a process syncing a {size / 2**30:.2f} GiB file: {rss_kb / 1024:.0f} MiB"
            out += ["", f"{peak} ({elapsed:.0f} s including interpreter start)"]
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.append(
            f"(the floor holds every row in memory: this process peaked at {self_rss / 1024:.0f} MiB)"
        )
    return "\n".join(out)


if __name__ == "__main__":
    print(main())
