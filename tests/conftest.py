"""Shared fixtures: every test runs in its own folder with clean global state."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from codex_logging import sync_to_sqlite
from codex_logging._write.sink import _REPORTED as REPORTED
from codex_logging._write.writer import WRITER


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore root handlers, structlog, the environment and the cwd after each test."""
    monkeypatch.chdir(tmp_path)
    for name in ("CODEX_SESSION_ID", "CODEX_LOG_DB_PATH", "CODEX_SESSIONS_DIR"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    level = root.level
    # Every logger's handlers: session_scope writes through any CodexHandler
    # the logging tree reaches, so one left on a named logger by an earlier
    # test would receive this test's scope records.
    saved = {logger: logger.handlers[:] for logger in _all_loggers()}
    # dictConfig disables the loggers it does not name (disable_existing_loggers).
    enabled = {logger: logger.disabled for logger in _all_loggers()}
    saved_env = dict(os.environ)
    structlog.reset_defaults()
    yield
    for logger in _all_loggers():
        before = saved.get(logger, [])
        for handler in logger.handlers:
            if handler not in before:
                handler.close()
        logger.handlers[:] = before
        logger.disabled = enabled.get(logger, False)
    root.setLevel(level)
    structlog.reset_defaults()
    os.environ.clear()
    os.environ.update(saved_env)
    WRITER.close_all()
    REPORTED.clear()  # each test's failures are said afresh, whatever ran before


def _all_loggers() -> list[logging.Logger]:
    loggers = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(lg for lg in loggers if isinstance(lg, logging.Logger))]


def synced_text(tmp_path: Path, text: str, sid: str = "s") -> Path:
    """Return a new mirror of one session file holding ``text``, lines as written.

    For lines no JSON writer makes (``NaN``, ``1e400``, escaped lone
    surrogates), written by hand as another tool would.
    """
    folder = tmp_path / "sessions"
    folder.mkdir()
    (folder / f"{sid}.ndjson").write_text(text)
    db = tmp_path / "m.db"
    sync_to_sqlite(db, folder)
    return db


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Parse every line of an NDJSON file, failing on a torn or raw-newline line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def session_file(session_id: str, sessions_dir: Path | None = None) -> Path:
    """Return the file of a session under the default folder."""
    return (sessions_dir or Path(".codex/sessions").resolve()) / f"{session_id}.ndjson"


@contextlib.contextmanager
def db_connection(path: Path | str, **kwargs: Any) -> Iterator[sqlite3.Connection]:
    """Open a database, commit on success and always close it.

    ``with sqlite3.connect(...)`` only commits; an unclosed connection is a
    ResourceWarning from Python 3.13 on, an error under ``-W error``.
    """
    conn = sqlite3.connect(path, **kwargs)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


pytest_plugins = ["tests.pg"]


@pytest.fixture
def traced_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL statements the read module runs from now on, as SQLite traces them."""
    import codex_logging._sqlite.read as read_module

    traced: list[str] = []
    real = read_module.connect_readonly

    def tracing(path: str) -> sqlite3.Connection:
        conn = real(path)
        conn.set_trace_callback(traced.append)
        return conn

    monkeypatch.setattr(read_module, "connect_readonly", tracing)
    return traced
