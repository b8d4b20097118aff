"""Read commands trust only what the user owns or names, and a query never hangs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_logging import DatabaseError, UnsafePathError, sync_to_sqlite
from codex_logging._mirror.filters import build
from codex_logging._mirror.schema import EVENT_COLUMNS, SESSION_COLUMNS
from codex_logging._settings import QUERY_TIMEOUT, query_timeout
from codex_logging._sqlite import read as _sqlite_read
from codex_logging.query_logs import query, sessions
from tests.conftest import db_connection

#: Only catches a hang.
HANG: float = 60
CODEX_LOGS = str(Path(sys.executable).parent / "codex-logs")
#: An account that is not the one running the tests (nobody).
OTHER_UID = 65534


def forged_database(path: Path) -> None:
    """A real mirror holding one forged record."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = path.parent / "sessions"
    folder.mkdir(mode=0o700)
    (folder / "forged.ndjson").write_text(
        '{"ts": 1.0, "session_id": "forged", "kind": "message", "message": "FORGED record"}\n'
    )
    sync_to_sqlite(path, folder)


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CODEX_LOGS, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )


def give_away(path: Path) -> None:
    """Hand a folder and all it holds to another account (root only)."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), OTHER_UID, OTHER_UID)
    os.chown(path, OTHER_UID, OTHER_UID)


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A ``.codex/`` another account made above the working directory, and that directory."""
    if os.geteuid() != 0:
        pytest.skip("only root can make a folder another account owns")
    shared = tmp_path / "shared"
    shared.mkdir()
    forged_database(shared / ".codex" / "session_logs.db")
    give_away(shared / ".codex")
    work = shared / "x" / "src"
    work.mkdir(parents=True)
    return shared / ".codex", work


class TestOwnership:
    @pytest.mark.parametrize("command", ["query", "sessions"])
    def test_another_users_codex_folder_is_refused(
        self, planted: tuple[Path, Path], command: str
    ) -> None:
        """Found by the upward search, another account's .codex/ is one line and exit 2, nothing printed."""
        codex, work = planted
        done = cli(command, cwd=work)
        assert (done.returncode, done.stdout) == (2, "")
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"codex-logs {command}: error: refusing {codex}: owned by uid")
        assert f"found by searching up from {work}" in line
        assert "--db" in line

    def test_named_explicitly_it_is_read(self, planted: tuple[Path, Path]) -> None:
        """--db or CODEX_LOG_DB_PATH naming the same database reads it: the user asked for it."""
        codex, work = planted
        by_flag = cli("query", "--db", str(codex / "session_logs.db"), cwd=work)
        by_env = cli("query", cwd=work, env={"CODEX_LOG_DB_PATH": str(codex / "session_logs.db")})
        for done in (by_flag, by_env):
            assert done.returncode == 0, done.stderr
            assert "FORGED record" in done.stdout

    def test_the_api_refuses_it_too(
        self, planted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """query() and sessions() with no database refuse what the search found; named, they read."""
        codex, work = planted
        monkeypatch.chdir(work)
        with pytest.raises(UnsafePathError, match="owned by uid"):
            query()
        with pytest.raises(UnsafePathError, match="owned by uid"):
            sessions()
        assert [e["message"] for e in query(str(codex / "session_logs.db"))] == ["FORGED record"]

    def test_world_writable_database_found_is_refused(self, tmp_path: Path) -> None:
        """Our own .codex/ holding a database others may write: refused by the search, read when named."""
        db = tmp_path / ".codex" / "session_logs.db"
        forged_database(db)
        db.chmod(0o666)
        work = tmp_path / "src"
        work.mkdir()
        done = cli("query", cwd=work)
        assert done.returncode == 2
        (line,) = done.stderr.splitlines()
        assert f"refusing {db}: writable by group or other (mode 0666)" in line
        assert cli("query", "--db", str(db), cwd=work).returncode == 0

    def test_symlinked_database_found_is_refused(self, tmp_path: Path) -> None:
        """A session_logs.db that is a symlink to some other database is refused by the search."""
        elsewhere = tmp_path / "elsewhere" / "m.db"
        forged_database(elsewhere)
        (tmp_path / ".codex").mkdir(mode=0o700)
        (tmp_path / ".codex" / "session_logs.db").symlink_to(elsewhere)
        done = cli("sessions", cwd=tmp_path)
        assert done.returncode == 2
        assert "is a symlink" in done.stderr
        assert done.stdout == ""

    def test_own_private_project_is_read(self, tmp_path: Path) -> None:
        """The usual case: our own 0700 .codex/ with a 0600 database found from a subfolder is read."""
        forged_database(tmp_path / ".codex" / "session_logs.db")
        (tmp_path / "src").mkdir()
        done = cli("query", cwd=tmp_path / "src")
        assert (done.returncode, done.stderr) == (0, "")
        assert "FORGED record" in done.stdout


def endless_database(path: Path) -> None:
    """A mirror whose events table and sessions view were replaced by views that never end."""
    forged_database(path)
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r)"
    events = ", ".join(
        [
            "n AS rowid",
            *(f"'forged' AS {c}" if c == "session_id" else f"n AS {c}" for c in EVENT_COLUMNS),
        ]
    )
    summary = ", ".join(f"n AS {c}" for c in SESSION_COLUMNS)
    with db_connection(path) as conn:
        # Made to look like an older mirror (session_events a table there) whose
        # table was replaced: the compact tables go, the view is replaced.
        conn.execute("DROP VIEW session_events")
        conn.execute("DROP TABLE session_rows")
        conn.execute("DROP TABLE session_keys")
        conn.execute(f"CREATE VIEW session_events AS {endless} SELECT {events} FROM r")
        conn.execute("DROP VIEW sessions")
        conn.execute(f"CREATE VIEW sessions AS {endless} SELECT {summary} FROM r")


class TestStatementTimeout:
    @pytest.mark.parametrize(
        "args",
        [
            ["query"],
            ["query", "--session-id", "forged", "--tail", "5"],
            ["query", "--level", "success"],
            ["query", "--grep", "zzz", "--follow"],
            ["sessions"],
        ],
        ids=["query", "one-session", "level", "follow", "sessions"],
    )
    def test_a_view_that_never_ends_is_stopped(self, tmp_path: Path, args: list[str]) -> None:
        """Reads of a recursive view that never ends stop at CODEX_QUERY_TIMEOUT: one line, exit 2."""
        db = tmp_path / "m" / "endless.db"
        endless_database(db)
        done = cli(*args, "--db", str(db), cwd=tmp_path, env={"CODEX_QUERY_TIMEOUT": "1"})
        assert (done.returncode, done.stdout) == (2, "")
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"codex-logs {args[0]}: error: reading {db} took longer than 1 s")
        assert "CODEX_QUERY_TIMEOUT" in line

    def test_the_api_raises_database_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """query() and sessions() raise DatabaseError, the same message."""
        db = tmp_path / "m" / "endless.db"
        endless_database(db)
        monkeypatch.setenv("CODEX_QUERY_TIMEOUT", "0.5")
        with pytest.raises(DatabaseError, match=r"took longer than 0\.5 s and was stopped"):
            query(str(db))
        with pytest.raises(DatabaseError, match=r"took longer than 0\.5 s and was stopped"):
            sessions(str(db))

    def test_the_viewers_reads_raise_database_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The web viewer's pages of such a database raise DatabaseError too, which it shows."""
        db = str(tmp_path / "m" / "endless.db")
        endless_database(Path(db))
        monkeypatch.setenv("CODEX_QUERY_TIMEOUT", "0.5")
        reads = [
            lambda: _sqlite_read.sessions_page(db),
            lambda: _sqlite_read.events_page(
                db,
                build(
                    session_id="forged",
                    kind=None,
                    since=None,
                    until=None,
                    level=None,
                    grep=None,
                    role=None,
                ),
            ),
            lambda: _sqlite_read.timeline(db, "forged"),
            lambda: _sqlite_read.seq_at(db, "forged", 1e12),
        ]
        for read in reads:
            with pytest.raises(DatabaseError, match=r"took longer than 0\.5 s"):
                read()

    @pytest.mark.parametrize("value", ["", "0", "0.5", "3600"])
    def test_an_ordinary_database_reads_under_any_limit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        """A usual database reads the same with the default, no limit (0) or a short one."""
        db = tmp_path / "m" / "ok.db"
        forged_database(db)
        monkeypatch.setenv("CODEX_QUERY_TIMEOUT", value)
        assert [e["message"] for e in query(str(db))] == ["FORGED record"]
        assert [s["session_id"] for s in sessions(str(db))] == ["forged"]

    @pytest.mark.parametrize("value", ["soon", "-1", "nan", "1e9"])
    def test_a_bad_limit_is_one_line(self, tmp_path: Path, value: str) -> None:
        """CODEX_QUERY_TIMEOUT that is not 0 to 86400 seconds: one line naming it, exit 2."""
        db = tmp_path / "m" / "ok.db"
        forged_database(db)
        done = cli("query", "--db", str(db), cwd=tmp_path, env={"CODEX_QUERY_TIMEOUT": value})
        assert done.returncode == 2
        (line,) = done.stderr.splitlines()
        assert "CODEX_QUERY_TIMEOUT must be seconds from 0 (no limit) to 86400" in line

    def test_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Unset or empty, the limit is the documented default."""
        monkeypatch.delenv("CODEX_QUERY_TIMEOUT", raising=False)
        assert query_timeout() == QUERY_TIMEOUT == 60
