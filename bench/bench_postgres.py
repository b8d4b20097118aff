"""Sync into PostgreSQL beside sync into SQLite, on the same file in one run (target: >= 0.8x).

Then the mirror's size beside the NDJSON it holds (target: <= 1.2x), UUID
session ids: the old one-table schema, the compact tables, and an old mirror
compacted in place (``compact_mirror``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_sync import make_file

from codex_logging import sync_to_postgres, sync_to_sqlite
from codex_logging._postgres.migrate import compact_mirror
from tests.pg import SERVER_USER, find_bin_dir
from tests.test_postgres_compact import old_sync

LINES = int(os.environ.get("BENCH_PG_LINES", "200000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


class Cluster:
    """A throwaway cluster on a unix socket, as the tests start it (tests/pg.py)."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self.base = tempfile.mkdtemp(prefix="codex-pg-bench-")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.data = os.path.join(self.base, "data")
        self.run("initdb", "-D", self.data, "-U", SERVER_USER, "-A", "trust", "-E", "UTF8",
                 "--locale", "C", "--no-sync", "--no-instructions")  # fmt: skip
        # A server as a team would run it: fsync and synchronous_commit stay on.
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.base}'"
        self.run(
            "pg_ctl",
            "-D",
            self.data,
            "-w",
            "-o",
            options,
            "-l",
            os.path.join(self.base, "log"),
            "start",
        )

    def run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [os.path.join(self.bin_dir, tool), *args],
            user=self.user,
            check=True,
            capture_output=True,
        )

    def url(self, db: str) -> str:
        return f"postgresql://{SERVER_USER}@/{db}?host={quote(self.base, safe='')}"

    def create(self, db: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        return self.url(db)

    def size(self, url: str) -> int:
        import psycopg

        with psycopg.connect(url) as conn:
            (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone() or (0,)
        return int(size)

    def stop(self) -> None:
        self.run("pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def main() -> str:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return "## Sync into PostgreSQL\n\nskipped: no PostgreSQL server binaries (make test installs them)"
    cluster = Cluster(bin_dir)
    folder = Path(tempfile.mkdtemp(prefix="codex-bench-pg-"))
    try:
        sessions = folder / "sessions"
        sessions.mkdir()
        make_file(sessions / "bench.ndjson", LINES)
        lite, pg = [], []
        for r in range(REPEATS):
            # Each timed sync starts with the page cache written back
            # (os.sync): none pays for an earlier one's writes, which a
            # server with fsync on would wait for.
            os.sync()
            start = time.perf_counter()
            report = sync_to_sqlite(folder / f"x{r}.db", sessions)
            lite.append(LINES / (time.perf_counter() - start))
            assert report.rows_inserted == LINES
            url = cluster.create(f"bench{r}")
            os.sync()
            start = time.perf_counter()
            report = sync_to_postgres(url, sessions)
            pg.append(LINES / (time.perf_counter() - start))
            assert report.rows_inserted == LINES
        sizes = mirror_sizes(cluster, folder)
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    lite_rate, pg_rate = statistics.median(lite), statistics.median(pg)
    return "\n".join(
        [
            f"## Sync into PostgreSQL beside SQLite ({LINES:,} lines, median of {REPEATS}, one fresh database each)",
            "",
            "| target | lines/s | vs SQLite |",
            "| --- | ---: | ---: |",
            f"| sync_to_sqlite | {lite_rate:,.0f} | 1.00x |",
            f"| sync_to_postgres (local server, unix socket, fsync on) | {pg_rate:,.0f} | {pg_rate / lite_rate:.2f}x |",
            "",
            sizes,
        ]
    )


def mirror_sizes(cluster: Cluster, folder: Path) -> str:
    """The database's bytes past an empty one's, per NDJSON byte it holds: old schema, compact, compacted."""
    sessions = folder / "uuid"
    sessions.mkdir()
    make_file(sessions / f"{uuid.uuid4()}.ndjson", LINES)
    ndjson = sum(path.stat().st_size for path in sessions.glob("*.ndjson"))
    empty = cluster.size(cluster.create("empty"))
    old = cluster.create("old")
    old_sync(old, sessions)
    old_bytes = cluster.size(old) - empty
    new = cluster.create("new")
    sync_to_postgres(new, sessions)
    new_bytes = cluster.size(new) - empty
    start = time.perf_counter()
    compact_mirror(old)
    took = time.perf_counter() - start
    moved_bytes = cluster.size(old) - empty
    return "\n".join(
        [
            f"## PostgreSQL mirror size ({LINES:,} events, UUID session ids, {ndjson / LINES:.0f} NDJSON bytes a line; target <= 1.2x)",
            "",
            "| mirror | MB | vs NDJSON |",
            "| --- | ---: | ---: |",
            f"| NDJSON files | {ndjson / 1e6:.1f} | 1.00x |",
            f"| one table, the line in data (before the compact tables) | {old_bytes / 1e6:.1f} | {old_bytes / ndjson:.2f}x |",
            f"| compact tables (a fresh sync) | {new_bytes / 1e6:.1f} | {new_bytes / ndjson:.2f}x |",
            f"| the old mirror compacted in place ({took:.1f} s) | {moved_bytes / 1e6:.1f} | {moved_bytes / ndjson:.2f}x |",
        ]
    )


if __name__ == "__main__":
    print(main())
