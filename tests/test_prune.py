"""codex-logs prune: real files, a real database, and a real sync running at the same time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._cli.main import main
from codex_logging._mirror import prune as _prune
from codex_logging._sqlite.prune import SqliteMirror
from codex_logging.query_logs import sessions
from tests.conftest import db_connection

BIN = Path(sys.executable).parent
DAY = 86400.0
#: Holds the sync's lock on a session file until stdin closes.
HOLD_LOCK = """
import sys, portalocker
with portalocker.Lock(sys.argv[1], mode="rb", flags=portalocker.LockFlags.EXCLUSIVE):
    print("locked", flush=True)
    sys.stdin.read()
"""


def prune(
    db: str | os.PathLike[str], folder: str | os.PathLike[str], **options: Any
) -> _prune.PruneReport:
    """Prune ``folder`` against the SQLite mirror ``db``, as ``codex-logs prune`` does."""
    mirror = SqliteMirror(os.fspath(db), read_only=options.get("dry_run", False))
    with contextlib.closing(mirror):
        return _prune.prune(mirror, os.fspath(folder), **options)


def old_session(folder: Path, sid: str, *, days: float = 10, lines: int = 2) -> Path:
    """Write a session that ended ``days`` ago, its file last modified then too."""
    folder.mkdir(parents=True, exist_ok=True)
    ts = time.time() - days * DAY
    records = [{"ts": ts, "kind": "start", "message": "session start"}]
    records += [{"ts": ts + 0.001 * i, "message": f"m{i}"} for i in range(lines)]
    records += [{"ts": ts + 1, "kind": "end", "status": "ok", "message": "session end"}]
    path = folder / f"{sid}.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.utime(path, (ts + 1, ts + 1))
    return path


def count(db: Path, table: str = "session_events") -> int:
    with db_connection(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / ".codex" / "sessions"
    old_session(folder, "old")
    return tmp_path / ".codex" / "session_logs.db", folder


class TestPrune:
    def test_deletes_synced_files_and_keeps_rows(self, setup: tuple[Path, Path]) -> None:
        """A fully synced session that ended 10 days ago loses its file; its rows stay."""
        db, folder = setup
        sync_to_sqlite(db, folder)
        report = prune(db, folder, older_than=7 * DAY)
        assert (report.retired, report.kept, report.files_deleted, report.rows_deleted) == (
            ["old"], [], 1, 0,
        )  # fmt: skip
        assert not (folder / "old.ndjson").exists()
        assert count(db) == 4
        assert prune(db, folder, older_than=7 * DAY).retired == []  # nothing left to do

    def test_keeps_what_is_not_safe_to_delete(self, setup: tuple[Path, Path]) -> None:
        """Unsynced, partly synced, replaced, recently written and recent sessions all stay."""
        db, folder = setup
        old_session(folder, "partial")
        old_session(folder, "replaced")
        old_session(folder, "touched")
        old_session(folder, "recent", days=1)
        sync_to_sqlite(db, folder)
        old_session(folder, "unsynced")
        with (folder / "partial.ndjson").open("a") as f:
            f.write('{"message": "late"}')  # no newline yet: never synced
        replaced = folder / "replaced.ndjson"
        data = replaced.read_bytes()
        replaced.write_bytes(data.replace(b"m0", b"X0"))  # same size, other first bytes
        os.utime(replaced, (0, 0))
        os.utime(folder / "partial.ndjson", (0, 0))
        (folder / "touched.ndjson").touch()
        report = prune(db, folder, older_than=7 * DAY)
        size = (folder / "partial.ndjson").stat().st_size
        assert report.retired == ["old"]
        assert report.kept == [
            ("partial", f"not fully synced ({size - 19} of {size} bytes in the mirror)"),
            ("replaced", "its file was replaced since its last sync"),
            ("touched", "its file was written to after the cutoff"),
        ]
        assert sorted(p.name for p in folder.glob("*.ndjson")) == [
            "partial.ndjson", "recent.ndjson", "replaced.ndjson", "touched.ndjson",
            "unsynced.ndjson",
        ]  # fmt: skip

    def test_never_synced_and_still_running(self, tmp_path: Path) -> None:
        """A session with no watermark, or with events after the cutoff, stays."""
        folder = tmp_path / "s"
        old_session(folder, "late")
        with (folder / "late.ndjson").open("a") as f:
            f.write(json.dumps({"ts": time.time(), "message": "still here"}) + "\n")
        sync_to_sqlite(tmp_path / "x.db", folder)
        old_session(folder, "fresh")
        with db_connection(tmp_path / "x.db") as conn:
            conn.execute(
                "INSERT INTO session_events VALUES ('fresh', 1, 1.0, 'end', NULL, NULL, NULL, '', '{}')"
            )
        report = prune(tmp_path / "x.db", folder, older_than=DAY)
        assert report.kept == [
            ("fresh", "its file was never synced"),
            ("late", "it has events after the cutoff"),
        ]

    def test_rows_deletes_rows_errors_watermark_and_vacuums(self, setup: tuple[Path, Path]) -> None:
        """--rows also deletes the session's rows, quarantined lines and watermark, then VACUUMs."""
        db, folder = setup
        with (folder / "old.ndjson").open("a") as f:
            f.write("not json\n")
        os.utime(folder / "old.ndjson", (0, 0))
        keep = old_session(folder, "keep", days=1)
        sync_to_sqlite(db, folder)
        report = prune(db, folder, older_than=7 * DAY, rows=True)
        assert (report.retired, report.files_deleted, report.rows_deleted) == (["old"], 1, 4)
        assert (count(db), count(db, "session_ingest_errors")) == (4, 0)
        assert count(db, "session_ingest_watermark") == 1
        with db_connection(db) as conn:
            assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
            # The summary goes with the rows: only the kept session is left.
            assert conn.execute("SELECT session_id, events FROM session_summary").fetchall() == [
                ("keep", 4)
            ]
        assert [s["session_id"] for s in sessions(str(db))] == ["keep"]
        assert keep.exists()

    def test_rows_of_a_session_whose_file_went_earlier(self, setup: tuple[Path, Path]) -> None:
        """After a files-only prune, --rows retires the rows that were kept."""
        db, folder = setup
        sync_to_sqlite(db, folder)
        prune(db, folder, older_than=DAY)
        report = prune(db, folder, older_than=DAY, rows=True)
        assert (report.retired, report.files_deleted, report.rows_deleted) == (["old"], 0, 4)
        assert count(db) == 0

    def test_dry_run_deletes_nothing(self, setup: tuple[Path, Path]) -> None:
        """--dry-run lists what would go and leaves files and rows alone."""
        db, folder = setup
        sync_to_sqlite(db, folder)
        before = db.read_bytes()
        report = prune(db, folder, older_than=DAY, rows=True, dry_run=True)
        assert (report.retired, report.files_deleted, report.rows_deleted) == (["old"], 0, 0)
        assert (folder / "old.ndjson").exists()
        assert db.read_bytes() == before

    def test_waits_for_a_sync_holding_the_lock(self, setup: tuple[Path, Path]) -> None:
        """While another process holds the session file's lock, prune keeps the file."""
        db, folder = setup
        sync_to_sqlite(db, folder)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(folder / "old.ndjson")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        report = prune(db, folder, older_than=DAY, busy_timeout=0.2)
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
        holder.stdout.close()
        assert report.kept == [("old", "a sync held its lock for 0.2 s")]
        assert (folder / "old.ndjson").exists()
        assert prune(db, folder, older_than=DAY).retired == ["old"]

    def test_one_session(self, setup: tuple[Path, Path]) -> None:
        """session_id limits prune to one session."""
        db, folder = setup
        other = old_session(folder, "other")
        sync_to_sqlite(db, folder)
        assert prune(db, folder, older_than=DAY, session_id="other").retired == ["other"]
        assert (folder / "old.ndjson").exists()
        assert not other.exists()

    def test_hostile_rows_and_bad_ages(self, tmp_path: Path) -> None:
        """A row whose session id is a path is never turned into one; an end without ts is skipped."""
        folder = tmp_path / "s"
        folder.mkdir()
        victim = tmp_path / "victim.ndjson"
        victim.write_text("keep me\n")
        os.utime(victim, (0, 0))
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            conn.executemany(
                "INSERT INTO session_events VALUES (?, 1, ?, 'end', NULL, NULL, NULL, '', '{}')",
                [("../victim", 1.0), ("no-ts", None)],
            )
            conn.execute("INSERT INTO session_ingest_watermark (session_id, seq, byte_offset)"
                         " VALUES ('../victim', 1, 8)")  # fmt: skip
        report = prune(db, folder, older_than=DAY)
        assert (report.retired, report.kept) == ([], [("../victim", "not a valid session id")])
        assert victim.read_text() == "keep me\n"
        for age in (-DAY, -0.001, float("nan"), float("inf"), 36526 * DAY):
            with pytest.raises(ValueError, match="older_than must be 0 to 3155760000 seconds"):
                prune(db, folder, older_than=age)

    def test_older_than_zero_retires_everything_that_ended(self, tmp_path: Path) -> None:
        """older_than=0 (`--older-than 0s`) retires every ended session; one still running stays."""
        folder = tmp_path / ".codex" / "sessions"
        old_session(folder, "ended", days=0.001)  # ended 86 s ago
        running = folder / "running.ndjson"
        running.write_text(json.dumps({"ts": time.time() - 100, "kind": "start"}) + "\n")
        os.utime(running, (time.time() - 100, time.time() - 100))
        db = tmp_path / ".codex" / "session_logs.db"
        sync_to_sqlite(db, folder)
        assert prune(db, folder, older_than=DAY).retired == []
        report = prune(db, folder, older_than=0)
        assert (report.retired, report.files_deleted) == (["ended"], 1)
        assert sorted(p.name for p in folder.glob("*.ndjson")) == ["running.ndjson"]


class TestConcurrentSync:
    def test_prune_beside_a_running_sync_loses_nothing(self, tmp_path: Path) -> None:
        """A sync --watch process and repeated prunes: every file goes only once fully mirrored."""
        folder = tmp_path / "s"
        sessions = [f"s{i:02d}" for i in range(12)]
        for sid in sessions:
            old_session(folder, sid, lines=3000)
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        for sid in sessions:  # more lines land, the file's time stays old (a restored copy)
            path = folder / f"{sid}.ndjson"
            stamp = path.stat().st_mtime
            with path.open("a") as f:
                f.writelines(
                    json.dumps({"ts": 1.0, "message": f"late {i}"}) + "\n" for i in range(3000)
                )
            os.utime(path, (stamp, stamp))
        first = prune(db, folder, older_than=DAY)
        assert [(sid, why.split(" (")[0]) for sid, why in first.kept] == [
            (sid, "not fully synced") for sid in sessions
        ]
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--watch", "0.05", "--db", str(db), "--sessions-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        rounds = 0
        try:
            deadline = time.monotonic() + 90
            while any((folder / f"{sid}.ndjson").exists() for sid in sessions):
                assert time.monotonic() < deadline, "prune never retired every session"
                prune(db, folder, older_than=DAY, busy_timeout=0.05)
                rounds += 1
        finally:
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert rounds >= 1
        with db_connection(db) as conn:
            rows = conn.execute(
                "SELECT session_id, count(*), count(DISTINCT seq), max(seq) FROM session_events"
                " GROUP BY session_id ORDER BY session_id"
            ).fetchall()
        assert rows == [(sid, 6002, 6002, 6002) for sid in sessions]


class TestCli:
    def test_prune_command(
        self, setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """codex-logs prune finds .codex/ upward, prints what went, and --json says the same."""
        db, folder = setup
        sync_to_sqlite(db, folder)
        sub = db.parent.parent / "deep" / "er"
        sub.mkdir(parents=True)
        with contextlib.chdir(sub) if hasattr(contextlib, "chdir") else _chdir(sub):
            assert main(["prune", "--older-than", "7d", "--dry-run", "--json"]) == 0
            assert json.loads(capsys.readouterr().out) == {
                "dry_run": True, "retired": ["old"], "kept": [], "files_deleted": 0, "rows_deleted": 0,
            }  # fmt: skip
            assert main(["prune", "--older-than", "7d"]) == 0
        assert (
            capsys.readouterr().out
            == "retired old\nretired 1 session: 1 files and 0 rows deleted\n"
        )
        assert not (folder / "old.ndjson").exists()

    def test_dry_run_text_names_what_stays(
        self, setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The text report lists each session that would go and each kept one with its reason."""
        db, folder = setup
        old_session(folder, "late")
        sync_to_sqlite(db, folder)
        with (folder / "late.ndjson").open("a") as f:
            f.write("{}\n")
        os.utime(folder / "late.ndjson", (0, 0))
        size = (folder / "late.ndjson").stat().st_size
        args = [
            "prune",
            "--older-than",
            "2d",
            "--dry-run",
            "--db",
            str(db),
            "--sessions-dir",
            str(folder),
        ]
        assert main(args) == 0
        assert capsys.readouterr().out == (
            "would retire old\n"
            f"kept late: not fully synced ({size - 3} of {size} bytes in the mirror)\n"
            "would retire 1 session: nothing deleted (--dry-run)\n"
        )

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--older-than", "soon"], "invalid age 'soon'"),
            (["--older-than=-1s"], "invalid age '-1s'"),
            (["--older-than", "36526d"], "invalid age '36526d': at most 36525d (100 years)"),
            (["--older-than", "9" * 400 + "w"], "at most 36525d (100 years)"),
            (["--older-than", "1d", "--session-id", "nope"], "unknown session nope"),
            (["--older-than", "1d", "--db", "{missing}"], "no database at"),
            (["--older-than", "1d", "--sessions-dir", "{missing}"], "no sessions folder at"),
            (
                ["--older-than", "1d", "--db", "postgresql:///db?host=/nonexistent-dir"],
                "cannot use database",
            ),
        ],
    )
    def test_errors_are_one_line_exit_2(
        self, setup: tuple[Path, Path], args: list[str], needle: str
    ) -> None:
        """Bad input to prune is one line on stderr and exit 2, no traceback."""
        db, folder = setup
        sync_to_sqlite(db, folder)
        missing = str(db.parent / "none")
        full = [a.format(missing=missing) for a in args]
        if "--db" not in full:
            full += ["--db", str(db)]
        if "--sessions-dir" not in full:
            full += ["--sessions-dir", str(folder)]
        out = subprocess.run(
            [str(BIN / "codex-logs"), "prune", *full],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (out.returncode, len(out.stderr.splitlines())) == (2, 1), out.stderr
        assert needle in out.stderr
        assert (folder / "old.ndjson").exists()


@contextlib.contextmanager
def _chdir(path: Path):  # contextlib.chdir is 3.11+
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
