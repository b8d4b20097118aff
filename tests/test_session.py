"""Session ids: validation, the environment, and path resolution."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from codex_logging import InvalidSessionId, get_session_id
from codex_logging._settings import db_path, sessions_dir_path, validate_session_id

HOSTILE_IDS = [
    "",
    "../x",
    "a/b",
    "a\\b",
    "a\x00b",
    "x" * 129,
    "x" * 10_000,
    ".hidden",
    "-flag",
    "a\nb",
    "tab\there",
    "sp ace",
    "caf\u00e9",
    "\u0430bc",  # Cyrillic a, a look-alike of "abc"
    "abc\u200b",
    "abc\n",
    "..",
    ".",
]


class TestValidate:
    @pytest.mark.parametrize("value", HOSTILE_IDS)
    def test_hostile_ids_are_refused(self, value: str) -> None:
        """Every id outside the documented alphabet or length raises InvalidSessionId."""
        with pytest.raises(InvalidSessionId):
            validate_session_id(value)

    @pytest.mark.parametrize("value", ["a", "A-1_b.c", "x" * 128, "0", str(uuid.uuid4())])
    def test_valid_ids_pass(self, value: str) -> None:
        """Ids of 1 to 128 allowed characters are returned unchanged."""
        assert validate_session_id(value) == value

    @pytest.mark.parametrize("value", [12, None, ["a"], {"a": 1}, b"abc"])
    def test_non_string_is_refused(self, value: object) -> None:
        """An id that is not a string (even an unhashable one) is refused as a ValueError."""
        with pytest.raises(InvalidSessionId, match="invalid session id"):
            validate_session_id(value)
        assert issubclass(InvalidSessionId, ValueError)


class TestGetSessionId:
    def test_generates_and_exports(self) -> None:
        """Without CODEX_SESSION_ID a uuid4 is made and written back to the environment."""
        sid = get_session_id()
        assert uuid.UUID(sid).version == 4
        assert os.environ["CODEX_SESSION_ID"] == sid
        assert get_session_id() == sid

    def test_empty_counts_as_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A set but empty variable is treated as unset."""
        monkeypatch.setenv("CODEX_SESSION_ID", "")
        assert uuid.UUID(get_session_id())

    def test_reads_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A set variable is the session."""
        monkeypatch.setenv("CODEX_SESSION_ID", "run-42")
        assert get_session_id() == "run-42"

    def test_invalid_environment_raises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An invalid id in the environment raises InvalidSessionId."""
        monkeypatch.setenv("CODEX_SESSION_ID", "../etc")
        with pytest.raises(InvalidSessionId):
            get_session_id()


class TestPaths:
    def test_defaults_are_absolute_under_cwd(self, tmp_path: Path) -> None:
        """Defaults resolve against the working directory at the time of the call."""
        assert sessions_dir_path() == str(tmp_path / ".codex" / "sessions")
        assert db_path() == str(tmp_path / ".codex" / "session_logs.db")

    def test_environment_wins_over_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CODEX_SESSIONS_DIR and CODEX_LOG_DB_PATH are used and made absolute."""
        monkeypatch.setenv("CODEX_SESSIONS_DIR", "logs/s")
        monkeypatch.setenv("CODEX_LOG_DB_PATH", "logs/x.db")
        assert sessions_dir_path() == str(tmp_path / "logs" / "s")
        assert db_path() == str(tmp_path / "logs" / "x.db")
        assert sessions_dir_path("other") == str(tmp_path / "other")


class TestImport:
    def test_logging_alone_does_not_load_the_sync_lock(self) -> None:
        """A process that only logs (a hook script) never loads the mirror side or structlog."""
        code = (
            "import logging, sys\n"
            "from codex_logging import CodexHandler, session_scope\n"
            "logging.getLogger().addHandler(CodexHandler())\n"
            "with session_scope('imports'):\n"
            "    logging.getLogger('hook').warning('ran')\n"
            "heavy = ('portalocker', 'structlog', 'psycopg', 'logging.handlers',\n"
            "         'codex_logging._sqlite.sync', 'codex_logging._mirror.engine', 'codex_logging._postgres.sync')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "from codex_logging import sync_to_sqlite, sync_to_postgres, SyncReport\n"
            "print(sync_to_sqlite.__module__, sync_to_postgres.__module__, SyncReport.__name__)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert (
            out.stdout == "[]\ncodex_logging._sqlite.sync codex_logging._postgres.sync SyncReport\n"
        )
