"""Sync into PostgreSQL beside sync into SQLite, on the same file in one run (target: >= 0.8x)."""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_sync import make_file

from codex_logging import sync_to_postgres, sync_to_sqlite
from tests.pg import SERVER_USER, find_bin_dir

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
            start = time.perf_counter()
            report = sync_to_sqlite(folder / f"x{r}.db", sessions)
            lite.append(LINES / (time.perf_counter() - start))
            assert report.rows_inserted == LINES
            url = cluster.create(f"bench{r}")
            start = time.perf_counter()
            report = sync_to_postgres(url, sessions)
            pg.append(LINES / (time.perf_counter() - start))
            assert report.rows_inserted == LINES
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
        ]
    )


if __name__ == "__main__":
    print(main())
