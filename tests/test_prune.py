"""codex-logs prune: real files, a real database, and a real sync running at the same time."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from codex_logging import DatabaseDamagedError, sync_to_sqlite
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

    def test_one_session_without_an_end_says_why_it_stays(self, setup: tuple[Path, Path]) -> None:
        """A session named to prune that never ended (a hook chain, a killed scope) is said kept."""
        db, folder = setup
        chain = folder / "ci-17.ndjson"
        chain.write_text(json.dumps({"ts": time.time() - 9 * DAY, "message": "hook ran"}) + "\n")
        sync_to_sqlite(db, folder)
        report = prune(db, folder, older_than=0, session_id="ci-17")
        assert (report.retired, report.kept) == ([], [("ci-17", _prune.NO_END)])
        assert chain.exists()
        assert prune(db, folder, older_than=0).kept == []  # not named: not said

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


#: A process that joins an old session: one record per line read from stdin,
#: through the real handler, answering "ok" once each is written.
JOINER = """
import logging, sys
from codex_logging import CodexHandler
folder, sid = sys.argv[1:3]
handler = CodexHandler(sessions_dir=folder, session_id=sid)
log = logging.getLogger("joiner")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
for line in sys.stdin:
    log.info(line.strip())
    print("ok", flush=True)
print("dropped", handler.dropped, flush=True)
"""


class _Joiner:
    """A real writer process on session ``sid``, driven line by line."""

    def __init__(self, folder: Path, sid: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", JOINER, str(folder), sid],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def write(self, message: str) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(message + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> str:
        """End the process; return its last line (``dropped N``) and its stderr."""
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return out.strip() + err


def messages(db: Path, sid: str) -> list[str]:
    with db_connection(db) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT message FROM session_events WHERE session_id = ? ORDER BY seq", (sid,)
            )
        ]


def damage(db: Path, pieces: int, size: int, *, seed: int) -> None:
    """Write ``pieces`` runs of ``size`` random bytes into the database, past its first page."""
    rng = random.Random(seed)
    length = db.stat().st_size
    with db.open("r+b") as f:
        for _ in range(pieces):
            f.seek(rng.randrange(4096, length - size))
            f.write(rng.randbytes(size))


class TestReadBack:
    def test_damaged_database_keeps_every_file(self, tmp_path: Path) -> None:
        """8 KiB of random bytes in the middle of the database: prune stops, every file stays."""
        folder = tmp_path / ".codex" / "sessions"
        for sid in ("a", "b", "c"):
            old_session(folder, sid, lines=1000)
        db = tmp_path / ".codex" / "session_logs.db"
        sync_to_sqlite(db, folder)
        with db.open("r+b") as f:
            f.seek(db.stat().st_size // 2)
            f.write(random.Random(7).randbytes(8192))
        with pytest.raises(DatabaseDamagedError, match="is damaged"):
            prune(db, folder, older_than=DAY)
        out = subprocess.run(
            [str(BIN / "codex-logs"), "prune", "--older-than", "1s", "--db", str(db),
             "--sessions-dir", str(folder)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (out.returncode, out.stdout, len(out.stderr.splitlines())) == (2, "", 1), out.stderr
        assert f"database {db} is damaged" in out.stderr
        assert "the NDJSON session files are intact" in out.stderr
        assert "codex-logs sync --rebuild" in out.stderr
        assert sorted(p.name for p in folder.iterdir()) == [
            ".codex-source-id", "a.ndjson", "b.ndjson", "c.ndjson",
        ]  # fmt: skip

    def test_rows_that_do_not_read_back_keep_the_file(self, tmp_path: Path) -> None:
        """A row changed or missing (the database itself passes its check): the file stays."""
        folder = tmp_path / "s"
        for sid in ("changed", "missing", "fine", "quarantined"):
            old_session(folder, sid, lines=50)
        with (folder / "quarantined.ndjson").open("a") as f:
            f.write("not json\n")
        os.utime(folder / "quarantined.ndjson", (0, 0))
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            conn.execute(
                "UPDATE session_rows SET ts = ts + 1 WHERE seq = 7"
                " AND sid = (SELECT id FROM session_keys WHERE session_id = 'changed')"
            )
            conn.execute("DELETE FROM session_events WHERE session_id = 'missing' AND seq = 9")
        report = prune(db, folder, older_than=DAY)
        assert report.retired == ["fine", "quarantined"]
        reason = f"its rows in {db} do not match its file: read back {{}} events and 0 quarantined lines of 52 and 0"
        assert report.kept == [("changed", reason.format(52)), ("missing", reason.format(51))]
        assert sorted(p.name for p in folder.glob("*.ndjson")) == [
            "changed.ndjson",
            "missing.ndjson",
        ]

    def test_a_file_the_sync_found_replaced_reads_back_its_own_lines(self, tmp_path: Path) -> None:
        """After a replaced file the seqs go on: the current file is matched with the last rows."""
        folder = tmp_path / "s"
        path = old_session(folder, "r", lines=5)
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        old_session(folder, "r", lines=3).unlink()
        path = old_session(folder, "r", lines=3)  # a new inode, other first bytes
        report = sync_to_sqlite(db, folder)
        assert report.rows_inserted == 5
        os.utime(path, (0, 0))
        assert prune(db, folder, older_than=DAY).retired == ["r"]
        assert len(messages(db, "r")) == 12


class TestWriters:
    def test_aside_outlasts_the_writers_recheck(self) -> None:
        """A file set aside is unlinked only after every writer has looked at its path again."""
        from codex_logging._write.writer import RECHECK_SECONDS

        assert _prune.ASIDE_SECONDS >= 2 * RECHECK_SECONDS

    def test_lines_appended_inside_the_window_are_put_back(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real writer appends after the check, to the file set aside, and to a new one: nothing is lost."""
        folder = tmp_path / "s"
        path = old_session(folder, "old", lines=20)
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        joiner = _Joiner(folder, "old")
        set_aside = _prune._Retire._set_aside

        def inside_the_window(retire: Any, entry: Any) -> None:
            joiner.write("after the check")  # a new process: opens the file being retired
            set_aside(retire, entry)
            assert not path.exists()
            joiner.write("into the file set aside")  # its cached descriptor, within 0.5 s
            assert not path.exists()
            time.sleep(0.7)
            joiner.write("into a new file")  # it looked again: the path is gone, a new file
            assert path.exists()

        monkeypatch.setattr(_prune._Retire, "_set_aside", inside_the_window)
        try:
            report = prune(db, folder, older_than=DAY)
        finally:
            joiner.close()
        assert report.retired == []
        ((sid, why),) = report.kept
        assert sid == "old"
        assert why.endswith(
            f"were appended while it was retired: put back at {path} for the next sync"
        )
        assert [p.name for p in folder.iterdir() if p.name.startswith(".old")] == []
        sync_to_sqlite(db, folder)
        got = messages(db, "old")
        assert got[:22] == ["session start", *[f"m{i}" for i in range(20)], "session end"]
        assert sorted(got[22:]) == sorted(
            ["after the check", "into the file set aside", "into a new file"]
        )
        assert len(got) == 25

    def test_a_file_that_grew_aside_goes_back_under_its_name(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Lines appended after the check, none at the path since: the file itself comes back.

        Same inode: the writer that still holds it counts nothing lost, and
        the sync goes on from its watermark without calling it replaced.
        """
        folder = tmp_path / "s"
        path = old_session(folder, "old", lines=20)
        inode = path.stat().st_ino
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        joiner = _Joiner(folder, "old")
        set_aside = _prune._Retire._set_aside

        def inside_the_window(retire: Any, entry: Any) -> None:
            joiner.write("after the check")
            set_aside(retire, entry)
            joiner.write("into the file set aside")
            assert not path.exists()

        monkeypatch.setattr(_prune._Retire, "_set_aside", inside_the_window)
        try:
            report = prune(db, folder, older_than=DAY)
            assert path.stat().st_ino == inode
            time.sleep(0.6)  # the writer looks at the path again: its file is there
            joiner.write("later")
        finally:
            said = joiner.close()
        assert said == "dropped 0"  # nothing counted lost, nothing on stderr
        ((sid, why),) = report.kept
        assert (sid, why.split(" bytes")[1]) == (
            "old",
            f" were appended while it was retired: put back at {path} for the next sync",
        )
        assert sorted(p.name for p in folder.iterdir()) == [".codex-source-id", "old.ndjson"]
        sync = sync_to_sqlite(db, folder)
        assert sync.warnings == []
        assert messages(db, "old")[22:] == ["after the check", "into the file set aside", "later"]

    def test_a_prune_killed_in_the_window_is_finished_by_the_next(self, tmp_path: Path) -> None:
        """kill -9 while files are set aside: the next prune unlinks them, or puts back what grew."""
        folder = tmp_path / "s"
        old_session(folder, "quiet")
        old_session(folder, "joined")
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_IN_THE_WINDOW, str(db), str(folder)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        aside = {p.name.split(".")[1]: p for p in folder.glob(".*.ndjson.retiring-*")}
        assert sorted(aside) == ["joined", "quiet"]
        assert not list(folder.glob("*.ndjson"))
        for sid, p in aside.items():
            assert p.name == f".{sid}.ndjson.retiring-{p.stat().st_size}"
        with aside["joined"].open("a") as f:
            f.write(json.dumps({"ts": time.time(), "message": "late"}) + "\n")
        time.sleep(_prune.ASIDE_SECONDS)
        prune(db, folder, older_than=DAY)
        assert sorted(p.name for p in folder.iterdir()) == [".codex-source-id", "joined.ndjson"]
        sync_to_sqlite(db, folder)
        assert messages(db, "joined")[-1] == "late"


#: Runs prune and dies by SIGKILL in its wait, the files set aside.
KILLED_IN_THE_WINDOW = """
import os, signal, sys, time
from codex_logging._mirror import prune
from codex_logging._sqlite.prune import SqliteMirror
prune.time.sleep = lambda _s: os.kill(os.getpid(), signal.SIGKILL)
db, folder = sys.argv[1:3]
prune.prune(SqliteMirror(db, read_only=False), folder, older_than=86400)
"""


#: A process that joins a session and writes numbered records in bursts, with
#: pauses shorter and longer than the writer's recheck and prune's quiet time.
JOIN_IN_BURSTS = """
import logging, random, sys, time
from codex_logging import CodexHandler
folder, sid, tag, count, seed = sys.argv[1:6]
rng = random.Random(int(seed))
log = logging.getLogger("joiner")
log.addHandler(CodexHandler(sessions_dir=folder, session_id=sid))
log.setLevel(logging.INFO)
log.propagate = False
for i in range(int(count)):
    log.info("%s:%d", tag, i)
    time.sleep(rng.choice((0.001, 0.01, 0.3, 0.6, 1.5, 2.2, 2.6)))
"""

#: Seconds the race below runs; CODEX_PRUNE_RACE_SECONDS=90 for a longer run.
RACE_SECONDS = float(os.environ.get("CODEX_PRUNE_RACE_SECONDS", "20"))


class TestRace:
    def test_processes_joining_old_sessions_while_prune_loops_lose_nothing(
        self, tmp_path: Path
    ) -> None:
        """Writers join ended sessions in bursts while a sync --watch runs and prune loops.

        With a cutoff of one second, a session is retired again as soon as it
        has been quiet for two: its file goes, a writer's next record makes a
        new one, which is synced and retired in turn. Every record must be in
        the mirror exactly once at the end.
        """
        folder = tmp_path / "s"
        db = tmp_path / "x.db"
        sids = [f"o{i}" for i in range(6)]
        for sid in sids:
            old_session(folder, sid, lines=20)
        sync_to_sqlite(db, folder)
        expected: list[str] = []
        joiners: list[subprocess.Popen[bytes]] = []
        sync = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--watch", "0.05", "--db", str(db), "--sessions-dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        rng = random.Random(23)
        rounds = files = put_back = 0
        try:
            deadline = time.monotonic() + RACE_SECONDS
            while time.monotonic() < deadline:
                joiners = [j for j in joiners if j.poll() is None]
                while len(joiners) < 4:
                    target = rng.choice(sids)
                    tag = f"j{len(expected)}-{target}"
                    count = rng.randrange(3, 9)
                    expected += [f"{tag}:{i}" for i in range(count)]
                    args = [str(folder), target, tag, str(count), str(rng.randrange(1 << 30))]
                    joiners.append(subprocess.Popen([sys.executable, "-c", JOIN_IN_BURSTS, *args]))
                report = prune(db, folder, older_than=1.0, busy_timeout=0.05)
                files += report.files_deleted
                put_back += sum(
                    "were appended while it was retired" in why for _s, why in report.kept
                )
                rounds += 1
                time.sleep(0.05)
        finally:
            for joiner in joiners:
                joiner.wait(timeout=60)
            sync.send_signal(signal.SIGINT)
            _out, err = sync.communicate(timeout=60)
        assert sync.returncode == 0, err
        assert not list(folder.glob(".*.retiring-*"))
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            got = Counter(
                message
                for (message,) in conn.execute(
                    "SELECT message FROM session_events WHERE logger = 'joiner'"
                )
            )
            seeded = conn.execute(
                "SELECT count(*) FROM session_events WHERE logger IS NULL"
            ).fetchone()[0]
        lost = [m for m in expected if got[m] != 1]
        assert lost == [], f"{len(lost)} of {len(expected)} records lost or doubled"
        assert seeded == 22 * len(sids)  # every old session's rows, once
        assert files >= 10, files  # the race ran: files were retired again and again
        print(
            f"{rounds} prunes, {files} files deleted, {len(expected)} records, {put_back} put back"
        )
