"""codex-logs off its main path, run in-process: --json output, refused options, a taken port."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._cli.main import main
from tests.test_prune import old_session


@pytest.fixture
def db(tmp_path: Path) -> Path:
    folder = tmp_path / "sessions"
    old_session(folder, "run-1")
    found = tmp_path / "m.db"
    sync_to_sqlite(found, folder)
    return found


def test_show_json_prints_the_events_as_json_lines(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "run-1", "--db", str(db), "--json", "--all"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in rows] == ["session start", "m0", "m1", "session end"]
    assert err == ""


def test_grep_index_on_a_postgres_mirror_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://u:secret@/nothing?host=/nonexistent"
    assert main(["migrate", "--db", url, "--grep-index", "on"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line == (
        'codex-logs migrate: error: --grep-index is for a SQLite mirror (docs/mirror.md, "The grep index")'
    )
    assert out == ""


def test_serve_on_a_taken_port_is_one_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        status = main(["serve", "--db", str(db), "--port", str(port)])
    assert status == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line
        == f"codex-logs serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["sync", "--sessions-dir"],
        ["prune", "--older-than", "1d", "--sessions-dir"],
        ["migrate"],
        ["migrate", "--dry-run"],
    ],
    ids=lambda command: command[0] + ("" if command[-1] != "--dry-run" else " --dry-run"),
)
@pytest.mark.parametrize(
    ("table", "version"),
    [("orders", 0), ("orders", 3), ("logs", 0)],
    ids=["plain", "versioned", "logs"],
)
def test_another_programs_database_is_left_as_it_was(
    tmp_path: Path, command: list[str], table: str, version: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db naming another program's SQLite file (its schema version set, or a logs table of its
    own): one line, exit 2, the file untouched."""
    folder = tmp_path / "sessions"
    old_session(folder, "run-1")
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 9.5)")
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    before = other.read_bytes()
    folders = [str(folder)] if command[-1] == "--sessions-dir" else []
    status = main([*command, *folders, "--db", str(other)])
    assert status == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"codex-logs {command[0]}: error: {other} is not a codex_logging mirror: it holds other"
        f" tables ({table}); give a new file or an existing mirror"
    )
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "sessions"]


def test_a_mirror_of_the_older_tools_is_still_taken(tmp_path: Path) -> None:
    """A database with the older tools' logs table is a mirror: the sync adds its tables."""
    folder = tmp_path / "sessions"
    old_session(folder, "run-1")
    legacy = tmp_path / "old.db"
    with sqlite3.connect(legacy) as conn:
        conn.execute("CREATE TABLE logs (ts REAL, session TEXT, kind TEXT, message TEXT)")
    conn.close()
    assert sync_to_sqlite(legacy, folder).rows_inserted == 4
