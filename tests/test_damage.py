"""A damaged SQLite mirror: found, said in one line with the way out, and rebuilt from the files."""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from codex_logging import DatabaseDamagedError, DatabaseError, sync_to_sqlite
from codex_logging._sqlite import sync as sqlite_sync
from codex_logging._sqlite.db import STATE_SUFFIX
from codex_logging.query_logs import query
from tests.conftest import db_connection

BIN = Path(sys.executable).parent
SESSIONS = ("a", "b", "c")


def write_sessions(folder: Path, lines: int = 1000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sid in SESSIONS:
        ts = time.time() - 3600
        records = [{"ts": ts, "kind": "start", "message": "session start"}]
        records += [{"ts": ts + i / 1000, "message": f"m{i} " + "x" * 200} for i in range(lines)]
        records += [{"ts": ts + 100, "kind": "end", "status": "ok", "message": "session end"}]
        (folder / f"{sid}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in records))


def damage(db: Path, pieces: int = 20, size: int = 512, seed: int = 5) -> None:
    """Write ``pieces`` runs of ``size`` random bytes into the database, past its header page."""
    rng = random.Random(seed)
    length = db.stat().st_size
    with db.open("r+b") as f:
        for _ in range(pieces):
            f.seek(rng.randrange(4096, length - size))
            f.write(rng.randbytes(size))


def quick_check(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "codex-logs"), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, Path]:
    """Three sessions of 1,002 rows synced, then 20 x 512 random bytes written into the database."""
    folder = tmp_path / "sessions"
    write_sessions(folder)
    db = tmp_path / "mirror.db"
    assert sync_to_sqlite(db, folder).rows_inserted == 3006
    damage(db)
    assert quick_check(db) != ["ok"]  # SQLite itself says so
    return db, folder


def assert_damage_line(out: subprocess.CompletedProcess[str], db: Path) -> None:
    assert (out.returncode, len(out.stderr.splitlines())) == (2, 1), out.stderr
    assert "Traceback" not in out.stderr
    assert f"database {db} is damaged (" in out.stderr
    assert "the NDJSON session files are intact" in out.stderr
    assert f"codex-logs sync --rebuild --db {db}" in out.stderr


class TestFound:
    def test_sync_says_so_in_one_line(self, damaged: tuple[Path, Path]) -> None:
        """sync on a damaged database: one line naming it and the way out, exit 2, nothing appended."""
        db, folder = damaged
        with (folder / "a.ndjson").open("a") as f:
            f.write(json.dumps({"message": "late"}) + "\n")
        out = cli("sync", "--db", str(db), "--sessions-dir", str(folder))
        assert out.stdout == ""
        assert_damage_line(out, db)
        with pytest.raises(DatabaseDamagedError, match="is damaged") as caught:
            sync_to_sqlite(db, folder)
        assert isinstance(caught.value, DatabaseError)

    def test_query_says_so_in_one_line(self, damaged: tuple[Path, Path]) -> None:
        """query --grep over every row of a damaged database: one line, exit 2, no traceback."""
        db, _folder = damaged
        assert_damage_line(cli("query", "--grep", "zzz", "--tail", "100000", "--db", str(db)), db)
        with pytest.raises(DatabaseDamagedError):
            query(str(db), grep="zzz", tail=100000)

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is no SQLite database at all is said the same way."""
        folder = tmp_path / "sessions"
        write_sessions(folder, lines=2)
        db = tmp_path / "mirror.db"
        db.write_bytes(random.Random(1).randbytes(8192))
        out = cli("sync", "--db", str(db), "--sessions-dir", str(folder))
        assert_damage_line(out, db)
        assert "file is not a database" in out.stderr
        assert_damage_line(cli("sessions", "--db", str(db)), db)

    def test_watch_stops_on_damage(self, tmp_path: Path) -> None:
        """sync --watch: a database damaged between two rounds ends the loop with that line."""
        folder = tmp_path / "sessions"
        write_sessions(folder)
        db = tmp_path / "mirror.db"
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--watch", "0.1", "--db", str(db),
             "--sessions-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().startswith("synced 3 files: 3,006 rows inserted")
            time.sleep(0.3)
            damage(db)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()  # a watch that missed the damage is not left behind
            proc.wait()
        assert_damage_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), db)


class TestChecked:
    def test_damage_during_a_round_that_wrote_nothing_is_found_next(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A round with nothing to write does not take the file as it finds it at the end for its own."""
        folder = tmp_path / "sessions"
        write_sessions(folder)
        # Settled files: a round looks at them again only if they change.
        hour_ago = time.time() - 3600
        for path in folder.iterdir():
            os.utime(path, (hour_ago, hour_ago))
        db = tmp_path / "mirror.db"
        sync_to_sqlite(db, folder)
        real = sqlite_sync.SqliteTarget.settled_files

        def damaged_meanwhile(self: Any, source_id: str) -> Any:
            found = real(self, source_id)
            damage(db)  # after this round's check, while it runs
            return found

        monkeypatch.setattr(sqlite_sync.SqliteTarget, "settled_files", damaged_meanwhile)
        sync_to_sqlite(db, folder)  # nothing to write
        monkeypatch.setattr(sqlite_sync.SqliteTarget, "settled_files", real)
        with pytest.raises(DatabaseDamagedError):
            sync_to_sqlite(db, folder)

    def test_quick_check_only_when_the_file_changed_outside_the_sync(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The sync's own writes are remembered; a change by anything else brings a quick_check."""
        checks: list[str] = []
        check = sqlite_sync.quick_check

        def counted(conn: Any, path: str) -> None:
            checks.append(path)
            check(conn, path)

        monkeypatch.setattr(sqlite_sync, "quick_check", counted)
        folder = tmp_path / "sessions"
        write_sessions(folder, lines=3)
        db = tmp_path / "mirror.db"
        sync_to_sqlite(db, folder)  # created by this sync
        with (folder / "a.ndjson").open("a") as f:
            f.write(json.dumps({"message": "more"}) + "\n")
        sync_to_sqlite(db, folder)  # its own writes
        sync_to_sqlite(db, folder)  # nothing to do
        assert checks == []
        stamp = db.stat().st_mtime + 5
        os.utime(db, (stamp, stamp))  # something else wrote it
        sync_to_sqlite(db, folder)
        assert len(checks) == 1
        sync_to_sqlite(db, folder)
        assert len(checks) == 1
        Path(str(db) + STATE_SUFFIX).unlink()  # no record: checked once, then recorded again
        sync_to_sqlite(db, folder)
        sync_to_sqlite(db, folder)
        assert len(checks) == 2

    def test_a_reader_open_during_a_write_costs_no_check_later(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The WAL a reader kept from a checkpoint goes into the file at an idle round's close: not a change."""
        checks: list[str] = []
        check = sqlite_sync.quick_check
        monkeypatch.setattr(
            sqlite_sync, "quick_check", lambda conn, path: (checks.append(path), check(conn, path))
        )
        folder = tmp_path / "sessions"
        write_sessions(folder, lines=3)
        db = tmp_path / "mirror.db"
        sync_to_sqlite(db, folder)

        def settled() -> None:  # files a round has no reason to look at again
            hour_ago = time.time() - 3600
            for path in folder.iterdir():
                os.utime(path, (hour_ago, hour_ago))

        with (folder / "a.ndjson").open("a") as f:
            f.write(json.dumps({"message": "more"}) + "\n")
        settled()
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        reader.execute("SELECT count(*) FROM session_events").fetchone()
        sync_to_sqlite(db, folder)  # writes; the reader keeps the WAL from the close's checkpoint
        reader.close()  # a reader does not checkpoint
        sync_to_sqlite(db, folder)  # idle: its close checkpoints the WAL
        sync_to_sqlite(db, folder)
        assert checks == []

    def test_a_state_that_cannot_be_written_leaves_no_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A full disk as the sync records the database's state: no empty .tmp left behind."""
        folder = tmp_path / "sessions"
        write_sessions(folder, lines=10)
        db = tmp_path / "mirror.db"

        def full(*_args: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", full)
        assert sync_to_sqlite(db, folder).rows_inserted == 36
        assert sorted(p.name for p in tmp_path.iterdir() if ".codex-state" in p.name) == []
        monkeypatch.undo()
        assert sync_to_sqlite(db, folder).rows_inserted == 0  # checked again, and sound
        assert (tmp_path / f"mirror.db{STATE_SUFFIX}").is_file()


class TestRebuild:
    def test_rebuild_moves_the_damaged_database_aside_and_mirrors_afresh(
        self, damaged: tuple[Path, Path]
    ) -> None:
        """sync --rebuild: the damaged file kept as <name>.damaged-<time>, every row back, once."""
        db, folder = damaged
        before = db.read_bytes()
        out = cli("sync", "--rebuild", "--db", str(db), "--sessions-dir", str(folder))
        assert out.returncode == 0, out.stderr
        assert out.stdout == "synced 3 files: 3,006 rows inserted, 0 lines quarantined\n"
        (aside,) = db.parent.glob("mirror.db.damaged-*Z")
        assert out.stderr == (
            f"warning: moved the damaged database aside to {aside};"
            " mirrored the session files afresh\n"
        )
        assert aside.read_bytes() == before
        assert quick_check(db) == ["ok"]
        with db_connection(db) as conn:
            assert conn.execute(
                "SELECT session_id, count(*), count(DISTINCT seq) FROM session_events"
                " GROUP BY 1 ORDER BY 1"
            ).fetchall() == [(sid, 1002, 1002) for sid in SESSIONS]
        assert cli("sync", "--db", str(db), "--sessions-dir", str(folder)).stdout == (
            "synced 3 files: 0 rows inserted, 0 lines quarantined\n"
        )
        assert cli("query", "--grep", "zzz", "--tail", "100000", "--db", str(db)).returncode == 0

    def test_rebuild_from_the_api(self, damaged: tuple[Path, Path]) -> None:
        """sync_to_sqlite(rebuild=True) does the same, and says where the old file went."""
        db, folder = damaged
        report = sync_to_sqlite(db, folder, rebuild=True)
        (aside,) = db.parent.glob("mirror.db.damaged-*Z")
        assert report.rows_inserted == 3006
        assert report.warnings[0].startswith(f"moved the damaged database aside to {aside}")

    def test_a_rebuild_that_fails_leaves_the_database_as_it_was(
        self, damaged: tuple[Path, Path]
    ) -> None:
        """A file-size limit (as a full disk) stops the rebuild: one line, the old file back."""
        db, folder = damaged
        before = db.read_bytes()

        def small_files() -> None:  # the new database cannot grow past 200 KiB
            resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, 200 << 10))

        out = subprocess.run(
            [str(BIN / "codex-logs"), "sync", "--rebuild", "--db", str(db), "--sessions-dir",
             str(folder)],
            capture_output=True, text=True, timeout=120, check=False, preexec_fn=small_files,
        )  # fmt: skip
        assert (out.returncode, len(out.stderr.splitlines())) == (2, 1), out.stderr
        assert "Traceback" not in out.stderr
        assert db.read_bytes() == before
        assert list(db.parent.glob("mirror.db.damaged-*")) == []

    def test_a_rebuild_cut_short_from_the_api_puts_it_back(
        self, damaged: tuple[Path, Path]
    ) -> None:
        """Anything that ends the rebuild early (here Ctrl-C in a progress callback) undoes it."""
        db, folder = damaged

        def files() -> dict[str, bytes]:  # the state file goes: the next sync checks the file
            return {
                p.name: p.read_bytes()
                for p in db.parent.glob("mirror.db*")
                if p.is_file() and not p.name.endswith(".codex-state")
            }

        before = files()

        def interrupt(*_args: object) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sync_to_sqlite(db, folder, rebuild=True, progress=interrupt)
        assert files() == before

    def test_rebuild_is_for_sqlite(self, tmp_path: Path) -> None:
        """--rebuild with a PostgreSQL URL is refused in one line."""
        out = cli(
            "sync", "--rebuild", "--db", "postgresql:///nowhere", "--sessions-dir", str(tmp_path)
        )
        assert (out.returncode, len(out.stderr.splitlines())) == (2, 1), out.stderr
        assert "--rebuild is for a SQLite mirror" in out.stderr
