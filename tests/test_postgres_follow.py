"""query --follow against a real PostgreSQL mirror: every row shown once while machines sync."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codex_logging import sync_to_postgres
from codex_logging._mirror.filters import Filters
from codex_logging._postgres.read import follow_postgres
from tests.checks import assert_exactly_once

psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")

BIN = Path(sys.executable).parent
ALL = Filters()

#: A syncing "machine": syncs its folder into the database until told to stop.
SYNCER = """
import os, sys, time
from codex_logging import sync_to_postgres
url, folder, stop = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(stop):
    sync_to_postgres(url, folder)
    time.sleep(0.01)
sync_to_postgres(url, folder)
"""


def append(path: Path, messages: list[str], ts: float = 1000.0) -> None:
    with path.open("a") as f:
        for i, message in enumerate(messages):
            f.write(json.dumps({"ts": ts + i, "message": message}) + "\n")


def mirrored(url: str) -> int:
    with psycopg.connect(url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM session_events").fetchone()
    return int(count)


class TestFollowPostgres:
    def test_every_row_once_while_two_machines_sync(self, pg_url: str, tmp_path: Path) -> None:
        """Two folders synced by two processes while lines land: the follower shows each row once."""
        folders = [tmp_path / name / "sessions" for name in ("a", "b")]
        for folder in folders:
            folder.mkdir(parents=True, mode=0o700)
            append(folder / "both.ndjson", [f"{folder.parent.name}-seed"])
            sync_to_postgres(pg_url, folder)
        stream = follow_postgres(pg_url, ALL, tail=100, interval=0.02)
        seen = [e["message"] for e in next(stream)]
        assert sorted(seen) == ["a-seed", "b-seed"]
        stop = tmp_path / "stop"
        syncers = [
            subprocess.Popen([sys.executable, "-c", SYNCER, pg_url, str(folder), str(stop)])
            for folder in folders
        ]
        expected = ["a-seed", "b-seed"]
        lock = threading.Lock()
        overlapped = threading.Event()  # the follower has shown rows of 3 polls
        rounds = [0]

        def write() -> None:
            # At least 40 rounds, and on until the follower has shown rows
            # while lines still land (a busy machine may schedule it late).
            for round_ in range(4000):
                if round_ >= 40 and overlapped.is_set():
                    break
                rounds[0] += 1
                for folder in folders:
                    name = folder.parent.name
                    batch = [f"{name}-{round_}-{i}" for i in range(10)]
                    session = "both" if round_ % 2 else f"only-{name}"
                    append(folder / f"{session}.ndjson", batch, ts=2000.0 + round_)
                    with lock:
                        expected.extend(batch)
                time.sleep(0.01)
            stop.touch()

        writer = threading.Thread(target=write)
        writer.start()
        batches_with_rows = 0
        deadline = time.monotonic() + 60
        try:
            for batch in stream:
                seen += [e["message"] for e in batch]
                batches_with_rows += bool(batch)
                if batches_with_rows >= 3:
                    overlapped.set()
                done = stop.exists() and all(p.poll() is not None for p in syncers)
                if done and len(seen) >= mirrored(pg_url):
                    break
                assert time.monotonic() < deadline, f"follower saw {len(seen)} rows"
        finally:
            stream.close()
            writer.join()
            for proc in syncers:
                proc.wait(timeout=60)
        assert [p.returncode for p in syncers] == [0, 0]
        assert len(expected) == 2 + 20 * rounds[0]
        assert rounds[0] >= 40
        assert_exactly_once(seen, expected)
        # The follower really ran beside the syncs, not after them.
        assert batches_with_rows >= 3, batches_with_rows

    def test_filters_and_new_sessions(self, pg_url: str, tmp_path: Path) -> None:
        """The tail and every later batch keep the filters; a session synced later shows up."""
        folder = tmp_path / "sessions"
        folder.mkdir(mode=0o700)
        append(folder / "s1.ndjson", ["keep one", "drop one", "keep two"])
        sync_to_postgres(pg_url, folder)
        keep = Filters(grep="KEEP")
        stream = follow_postgres(pg_url, keep, tail=1, interval=0.01)
        assert [e["message"] for e in next(stream)] == ["keep two"]
        assert next(stream) == []
        append(folder / "s1.ndjson", ["drop two", "keep three"], ts=3000.0)
        append(folder / "s2.ndjson", ["keep four"], ts=4000.0)
        sync_to_postgres(pg_url, folder)
        new = next(stream)
        stream.close()
        assert [(e["session_id"], e["message"]) for e in new] == [
            ("s1", "keep three"),
            ("s2", "keep four"),
        ]

    def test_command_line_follow_and_ctrl_c(self, pg_url: str, tmp_path: Path) -> None:
        """codex-logs query --follow --db postgresql://... prints new rows; SIGINT exits 0."""
        folder = tmp_path / "sessions"
        folder.mkdir(mode=0o700)
        append(folder / "a.ndjson", ["first"])
        sync_to_postgres(pg_url, folder)
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "query", "--db", pg_url, "--session-id", "a", "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().endswith("  a  message            -  first\n")
            append(folder / "a.ndjson", ["landed"], ts=5000.0)
            append(folder / "b.ndjson", ["other session"], ts=5001.0)
            sync_to_postgres(pg_url, folder)
            assert proc.stdout.readline().endswith("  a  message            -  landed\n")
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out, err) == (0, "", "")
