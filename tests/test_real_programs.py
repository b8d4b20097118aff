"""Real programs: each test runs real subprocesses and reads both the NDJSON files and the synced mirror."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import db_connection, read_lines

BIN = Path(sys.executable).parent
TIMEOUT = 120


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any CODEX_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    env.update(extra)
    return env


def run_python(
    code: str, cwd: Path, env: dict[str, str] | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script file in ``cwd``; the completed process (not checked)."""
    script = cwd / f"prog_{abs(hash(code))}.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def codex_logs(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``codex-logs`` command (not checked)."""
    return subprocess.run(
        [str(BIN / "codex-logs"), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def mirror(db: Path, session_id: str) -> list[dict[str, Any]]:
    """The mirrored records of one session, in file order."""
    with db_connection(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT data FROM session_events WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()
    return [json.loads(row["data"]) for row in rows]


# ---------------------------------------------------------------------------
# Hosts: which folder, folders of ours, children, termination, torn files
# ---------------------------------------------------------------------------

HOOK = """
    import logging, sys
    from codex_logging import CodexHandler
    logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
    logging.getLogger("hook").info("hook ran in %s", sys.argv[1])
"""


class TestOneRuleFindsTheProject:
    def test_hook_from_a_subfolder_writes_into_the_projects_session(self, tmp_path: Path) -> None:
        """``cd src && python ../hook.py``: one session file at the root; sync and query from anywhere see it."""
        root = tmp_path / "proj"
        (root / ".git").mkdir(parents=True)
        (root / "src" / "deep").mkdir(parents=True)
        (root / "hook.py").write_text(textwrap.dedent(HOOK))
        env = clean_env(CODEX_SESSION_ID="ci-7", HOME=str(tmp_path))
        for where, arg in ((root, "root"), (root / "src", "src")):
            done = subprocess.run(
                [sys.executable, str(root / "hook.py"), arg],
                cwd=where, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True,
            )  # fmt: skip
            assert done.stderr == ""
        assert not (root / "src" / ".codex").exists()
        lines = read_lines(root / ".codex" / "sessions" / "ci-7.ndjson")
        assert [r["message"] for r in lines] == ["hook ran in root", "hook ran in src"]
        env.pop("CODEX_SESSION_ID")
        done = codex_logs("sync", cwd=root / "src" / "deep", env=env)
        assert (done.returncode, done.stdout) == (
            0,
            "synced 1 file: 2 rows inserted, 0 lines quarantined\n",
        )
        assert [r["message"] for r in mirror(root / ".codex" / "session_logs.db", "ci-7")] == [
            "hook ran in root",
            "hook ran in src",
        ]
        out = codex_logs("query", "--session-id", "ci-7", "--json", cwd=root / "src", env=env)
        assert [json.loads(x)["message"] for x in out.stdout.splitlines()] == [
            "hook ran in root",
            "hook ran in src",
        ]
        assert not (root / "src" / ".codex").exists()

    def test_the_search_stops_at_git_and_never_takes_the_homes_codex(self, tmp_path: Path) -> None:
        """Above a ``.git`` nothing is looked at; ``~/.codex`` (Codex CLI's) is never found; else ``./.codex``."""
        home = tmp_path / "home"
        (home / ".codex" / "sessions").mkdir(parents=True)  # OpenAI's Codex CLI keeps its own here
        (home / ".codex" / "session_logs.db").write_bytes(b"")
        (home / "outer" / ".codex" / "sessions").mkdir(parents=True)
        (home / "outer" / "repo" / ".git").mkdir(parents=True)
        (home / "outer" / "repo" / "pkg").mkdir()
        (home / "notes").mkdir()
        env = clean_env(CODEX_SESSION_ID="s", HOME=str(home))
        for where in (home / "outer" / "repo" / "pkg", home / "notes"):
            run_python(HOOK, where, env, where.name).check_returncode()
        assert [p.name for p in (home / ".codex" / "sessions").iterdir()] == []
        assert list((home / "outer" / ".codex" / "sessions").iterdir()) == []
        for where in (home / "outer" / "repo" / "pkg", home / "notes"):
            (record,) = read_lines(where / ".codex" / "sessions" / "s.ndjson")
            assert record["message"] == f"hook ran in {where.name}"
        # The commands take the same folder as the writer did.
        for where in (home / "outer" / "repo" / "pkg", home / "notes"):
            assert codex_logs("sync", cwd=where, env=env).returncode == 0
            assert [r["message"] for r in mirror(where / ".codex" / "session_logs.db", "s")] == [
                f"hook ran in {where.name}"
            ]

    def test_the_environment_still_wins(self, tmp_path: Path) -> None:
        """``CODEX_SESSIONS_DIR`` and ``CODEX_LOG_DB_PATH`` are used as given, by the writer and the commands."""
        (tmp_path / ".codex" / "sessions").mkdir(parents=True)
        named = tmp_path / "named"
        env = clean_env(
            CODEX_SESSION_ID="s",
            HOME=str(tmp_path),
            CODEX_SESSIONS_DIR=str(named / "sessions"),
            CODEX_LOG_DB_PATH=str(named / "m.db"),
        )
        (tmp_path / "sub").mkdir()
        run_python(HOOK, tmp_path / "sub", env, "sub").check_returncode()
        assert list((tmp_path / ".codex" / "sessions").iterdir()) == []
        assert codex_logs("sync", cwd=tmp_path / "sub", env=env).returncode == 0
        assert [r["message"] for r in mirror(named / "m.db", "s")] == ["hook ran in sub"]


class TestFoldersOfOursAreRepaired:
    def test_codex_made_under_umask_002_is_tightened_and_used(self, tmp_path: Path) -> None:
        """``mkdir .codex`` under umask 002: one stderr line, mode 0700, every record kept and mirrored."""
        old = os.umask(0o002)
        try:
            (tmp_path / ".codex").mkdir()
        finally:
            os.umask(old)
        assert (tmp_path / ".codex").stat().st_mode & 0o777 == 0o775
        code = """
            import logging
            from codex_logging import CodexHandler
            handler = CodexHandler()
            logging.basicConfig(level=logging.INFO, handlers=[handler])
            for n in range(3):
                logging.getLogger("app").info("record %d", n)
            print("dropped:", handler.dropped)
        """
        done = run_python(code, tmp_path, clean_env(CODEX_SESSION_ID="u", HOME=str(tmp_path / "h")))
        assert (done.returncode, done.stdout) == (0, "dropped: 0\n")
        assert done.stderr == (
            f"codex_logging: {tmp_path / '.codex'} was writable by group or other (mode 0775);"
            " tightened it to 0700\n"
        )
        assert (tmp_path / ".codex").stat().st_mode & 0o777 == 0o700
        assert len(read_lines(tmp_path / ".codex" / "sessions" / "u.ndjson")) == 3
        synced = codex_logs("sync", cwd=tmp_path, env=clean_env(HOME=str(tmp_path / "h")))
        assert synced.returncode == 0, synced.stderr
        assert [r["message"] for r in mirror(tmp_path / ".codex" / "session_logs.db", "u")] == [
            "record 0",
            "record 1",
            "record 2",
        ]

    @pytest.mark.parametrize("how", ["another user's", "a symlink"])
    def test_refused_codex_is_one_line_and_sync_fails(self, tmp_path: Path, how: str) -> None:
        """A ``.codex`` of another user, or a symlink: the writer says why once; sync exits 2 naming it."""
        codex = tmp_path / ".codex"
        if how == "a symlink":
            (tmp_path / "real").mkdir(mode=0o700)
            codex.symlink_to(tmp_path / "real")
        else:
            if os.geteuid() != 0:
                pytest.skip("only root can give a folder to another user")
            codex.mkdir(mode=0o755)
            os.chown(codex, 65534, 65534)
        env = clean_env(CODEX_SESSION_ID="r", HOME=str(tmp_path / "h"))
        done = run_python(HOOK, tmp_path, env, "x")
        assert done.returncode == 0
        (line,) = done.stderr.splitlines()
        assert f"refusing {codex}: " in line
        synced = codex_logs("sync", cwd=tmp_path, env=env)
        assert synced.returncode == 2
        (line,) = synced.stderr.splitlines()
        assert line.startswith(f"codex-logs sync: error: refusing {codex}: ")
        assert "no sessions folder" not in synced.stderr
