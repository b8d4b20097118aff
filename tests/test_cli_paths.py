"""codex-logs off its main path, run in-process: --json output, refused options, a taken port."""

from __future__ import annotations

import json
import socket
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
