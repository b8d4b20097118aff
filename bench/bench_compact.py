"""The compact mirror beside the schema it replaced: bytes, sync rows/s, and reads across sessions.

The same NDJSON files (1,000,000 events by default, UUID session ids of 10,000
events each, a warning every 100 events and an error every 1,000, a start and an
end per session) are synced three ways, each in its own process:

- schema 7, the layout before the compact one, by the code of the last commit
  that had it (``OLD_COMMIT``, taken out of this repository's git history),
  with today's ``_redaction`` package in it, so only the layouts differ;
- the compact mirror, by this code;
- the compact mirror with the grep index on.

The first two take turns BENCH_COMPACT_ROUNDS times (5 by default), each into
a new database: the median rate is shown with each turn's, and the ratio is
the median of the turns' ratios (the two syncs of a turn run back to back, so
a slow spell of the machine weighs on both); the third is synced once (it
takes about four times as long) and is set beside the median rate. Before
each timed sync the page cache is written back (``os.sync``): no sync pays
for the writes of the one before it (or of an earlier benchmark of ``make
bench``).

Then the reads the issue names, across all sessions, timed in process with
today's read code (median of 5): ``--level warning --tail 20``, ``--kind end
--tail 20``, ``--grep`` of a word in 10 lines. A second table is the growth
curve of the compact mirror (sizes from BENCH_COMPACT_CURVE).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codex_logging._sqlite.db import connect, set_grep_index  # noqa: E402
from codex_logging.query_logs import query  # noqa: E402

EVENTS = int(os.environ.get("BENCH_COMPACT_EVENTS", "1000000"))
PER_SESSION = 10_000
CURVE = [
    int(n) for n in os.environ.get("BENCH_COMPACT_CURVE", "100000,1000000,10000000").split(",") if n
]
INDEX_SYNC_MAX = int(os.environ.get("BENCH_COMPACT_INDEX_SYNC_MAX", "1000000"))
#: How many times the syncs without the grep index take turns (the median is shown).
ROUNDS = int(os.environ.get("BENCH_COMPACT_ROUNDS", "5"))
#: The last commit whose mirror had the schema-7 layout.
OLD_COMMIT = "abceb7e"
SYNC = "import sys; from codex_logging import sync_to_sqlite; r = sync_to_sqlite(sys.argv[1], sys.argv[2]); print(r.rows_inserted)"


def make_files(folder: Path, events: int) -> int:
    """Write the session files; return their bytes."""
    import orjson

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    rng_words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    for s in range(max(1, events // PER_SESSION)):
        sid = str(uuid.UUID(int=s + 1))
        base = 1_780_000_000.0 + s * 50.0
        lines = []
        count = min(PER_SESSION, events)
        for i in range(count):
            kind = "start" if i == 0 else "end" if i == count - 1 else "message"
            level = "ERROR" if i % 1000 == 999 else "WARNING" if i % 100 == 50 else "INFO"
            record = {
                "ts": round(base + i * 0.0123456, 6), "session_id": sid, "kind": kind,
                "level": level, "logger": "agent.tools", "message": f"ran {rng_words[i % 6]} on file_{i % 97}.py (step {i})",
                "pid": 40000 + s % 7, "role": "tool", "tool": rng_words[(i * 7) % 6], "step": i, "ms": round(i % 113 * 0.37, 2),
            }  # fmt: skip
            if kind == "end":
                record["status"] = "ok"
            if (s * count + i) % (events // 10 or 1) == 7:
                record["note"] = "a zebra crossed"  # the --grep needle: 10 lines in all
            lines.append(orjson.dumps(record) + b"\n")
        data = b"".join(lines)
        (folder / f"{sid}.ndjson").write_bytes(data)
        total += len(data)
    return total


def old_code(scratch: Path) -> Path | None:
    """The package as it was at OLD_COMMIT, extracted from git; None when there is no history."""
    target = scratch / "old"
    target.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", OLD_COMMIT, "codex_logging"],
            capture_output=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    # Today's redaction in both: the comparison is of the layouts, not of the
    # credential check (which got faster since; docs/performance.md).
    shutil.rmtree(target / "codex_logging" / "_redaction")
    shutil.copytree(ROOT / "codex_logging" / "_redaction", target / "codex_logging" / "_redaction")
    return target


def timed_sync(db: Path, folder: Path, pythonpath: Path | None) -> tuple[float, int]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # The last sync's database is written back to disk before this one is
    # timed: each pays for its own writes only, not its predecessor's.
    os.sync()
    start = time.perf_counter()
    # Run from the scratch folder: with -c the working directory comes first
    # on sys.path, before PYTHONPATH.
    done = subprocess.run(
        [sys.executable, "-c", SYNC, str(db), str(folder)],
        capture_output=True, text=True, env=env, check=True, cwd=db.parent,
    )  # fmt: skip
    return time.perf_counter() - start, int(done.stdout)


def size(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db.stat().st_size


def read_ms(db: Path, **filters: object) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        query(str(db), **filters)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


READS = (
    ("--level warning --tail 20", {"level": "warning", "tail": 20}),
    ("--kind end --tail 20", {"kind": "end", "tail": 20}),
    ("--grep zebra --tail 20", {"grep": "zebra", "tail": 20}),
)


def by_table(db: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(
            conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        )


def main() -> str:
    out: list[str] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        scratch = Path(tmp)
        folder = scratch / "sessions"
        ndjson = make_files(folder, EVENTS)
        old = old_code(scratch)
        variants: list[tuple[str, Path | None, bool]] = []
        if old is not None:
            variants.append((f"schema 7 (the layout before, code of {OLD_COMMIT})", old, False))
        variants += [("compact", None, False), ("compact + grep index", None, True)]
        out += [
            (
                f"Compact mirror: {EVENTS:,} events in {max(1, EVENTS // PER_SESSION):,} sessions"
                f" (UUID ids), {ndjson / 2**20:.1f} MiB of NDJSON; reads across all sessions, median of 5"
            ),
            "",
            "| mirror | bytes / NDJSON bytes | bytes / event | sync rows/s | vs schema 7 |"
            + "".join(f" `{name}` ms |" for name, _ in READS),
            "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(READS),
        ]
        sizes: dict[str, Path] = {}
        rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        # The syncs without the index take turns, ROUNDS times each, each into
        # a new database: on a shared machine the median of alternate runs is
        # steadier than one run of each.
        for turn in range(ROUNDS):
            for number, (name, path, index) in enumerate(variants):
                if index and turn:
                    continue  # about four times as long: synced once
                db = scratch / f"{number}.db"
                for old_file in scratch.glob(f"{number}.db*"):
                    old_file.unlink()
                if index:
                    with contextlib.closing(connect(str(db))) as conn:
                        set_grep_index(conn, str(db), on=True)
                seconds, rows = timed_sync(db, folder, path)
                assert rows == EVENTS, (name, rows)
                rates[name].append(rows / seconds)
                sizes[name] = db
        base = rates[variants[0][0]]
        for name, _path, _index in variants:
            db = sizes[name]
            found = rates[name]
            rate = statistics.median(found)
            vs_base = (
                statistics.median(mine / theirs for mine, theirs in zip(found, base, strict=True))
                if len(found) == len(base)
                else rate / statistics.median(base)
            )
            total = size(db)
            reads = [read_ms(db, **filters) for _, filters in READS]
            out.append(
                f"| {name} | {total / ndjson:.2f}x | {total / EVENTS:.0f} | {rate:,.0f}"
                f" | {vs_base:.2f}x |" + "".join(f" {ms:.1f} |" for ms in reads)
            )
        out += ["", "Sync rows/s of each turn: " + "; ".join(
            f"{name}: " + ", ".join(f"{rate:,.0f}" for rate in found) for name, found in rates.items()
        )]  # fmt: skip
        if old is not None:
            paired = [rates[name] for name, _, index in variants if not index]
            out.append("Each turn's ratio, compact / schema 7: " + ", ".join(
                f"{mine / theirs:.2f}" for mine, theirs in zip(paired[-1], paired[0], strict=True)
            ))  # fmt: skip
        compact = sizes["compact"]
        out += ["", "Bytes per event by table and index (compact):", "",
                "| table or index | bytes / event |", "| --- | ---: |"]  # fmt: skip
        out += [f"| {name} | {pages / EVENTS:.1f} |" for name, pages in by_table(compact) if pages > 4096 * 4]  # fmt: skip
        if old is not None:
            legacy = next(iter(sizes.values()))
            before = size(legacy)
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", "import sys; from codex_logging._cli.main import main; sys.exit(main(sys.argv[1:]))",
                 "migrate", "--db", str(legacy)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            moved = time.perf_counter() - start
            ratio = done.stdout.strip().rsplit("(", 1)[-1]
            out += ["", (f"Migrating the schema-7 mirror in place (`codex-logs migrate`, VACUUM included):"
                         f" {moved:.1f} s, {before / 2**20:.0f} MiB to {size(legacy) / 2**20:.0f} MiB ({ratio}")]  # fmt: skip
    out += ["", curve()]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out.append(f"(largest child process: {peak / 1024:.0f} MiB peak RSS)")
    return "\n".join(out)


def curve() -> str:
    """The compact mirror's growth: size, sync time, reads; then the same with the grep index.

    Up to INDEX_SYNC_MAX events the indexed mirror is synced with its index
    on (the sync's cost with it); above, the index is built once over the
    synced rows (``codex-logs migrate --grep-index on``), to time its reads.
    """
    lines = [
        "Growth of the compact mirror (reads across all sessions, `--tail 20`, median of 5)",
        "",
        (
            "| events | NDJSON MiB | mirror MiB | sync s | `--level warning` ms | `--kind end` ms"
            " | `--grep zebra` ms | with grep index: MiB | sync s (or build) | `--grep zebra` ms |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for events in CURVE:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            scratch = Path(tmp)
            ndjson = make_files(scratch / "sessions", events)
            db = scratch / "plain.db"
            seconds, _rows = timed_sync(db, scratch / "sessions", None)
            row = [
                f"{events:,}",
                f"{ndjson / 2**20:.0f}",
                f"{size(db) / 2**20:.0f}",
                f"{seconds:.1f}",
            ]
            row += [f"{read_ms(db, **filters):.1f}" for _, filters in READS]
            indexed = scratch / "indexed.db"
            if events <= INDEX_SYNC_MAX:
                with contextlib.closing(connect(str(indexed))) as conn:
                    set_grep_index(conn, str(indexed), on=True)
                seconds, _rows = timed_sync(indexed, scratch / "sessions", None)
                took = f"{seconds:.1f}"
            else:
                indexed = db
                start = time.perf_counter()
                with contextlib.closing(connect(str(indexed))) as conn:
                    set_grep_index(conn, str(indexed), on=True)
                took = f"({time.perf_counter() - start:.1f} build)"
            row += [
                f"{size(indexed) / 2**20:.0f}",
                took,
                f"{read_ms(indexed, grep='zebra', tail=20):.1f}",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
