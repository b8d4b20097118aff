"""Build tests/data/mirror_v7: session files, the mirror the schema-7 sync made of them, its answers.

Run once with codex_logging at schema 7 (before the compact layout; commit
abceb7e), from the repository root: ``python tests/data/make_mirror_v7.py``.
tests/test_compact.py migrates a copy of that mirror with today's code and
compares every read with the answers recorded here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "mirror_v7"

CLI = "import sys; from codex_logging._cli.main import main; sys.exit(main(sys.argv[1:]))"

#: The reads compared: (name, argv of codex-logs).
READS = [
    ("query all json", ["query", "--all", "--json"]),
    ("query tail", ["query", "--tail", "7"]),
    ("query grep", ["query", "--all", "--grep", "needle"]),
    ("query grep field", ["query", "--all", "--grep", "bob", "--json"]),
    ("query level", ["query", "--all", "--level", "warning", "--json"]),
    ("query level success", ["query", "--all", "--level", "success"]),
    ("query kind", ["query", "--all", "--kind", "end", "--json"]),
    ("query where", ["query", "--all", "--where", "user=bob", "--json"]),
    ("query where number", ["query", "--all", "--where", "n>2", "--json"]),
    ("query session", ["query", "--all", "--session-id", "agent-run", "--json"]),
    (
        "query since",
        ["query", "--all", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T00:00:30Z"],
    ),
    ("sessions", ["sessions", "--json"]),
    ("sessions text", ["sessions"]),
    ("show agent-run", ["show", "agent-run", "--all", "--color", "never"]),
    ("show foreign", ["show", "foreign", "--all", "--color", "never"]),
    ("show latest", ["show", "--color", "never"]),
]


def write_sessions(folder: Path) -> None:
    import structlog

    from codex_logging import CodexHandler, CodexProcessor, session_scope

    handler = CodexHandler(folder, "agent-run")
    log = logging.getLogger("agent")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    logging.addLevelName(25, "SUCCESS")
    with session_scope("agent-run"):
        log.info("hello %s", "world", extra={"user": "bob", "n": 3, "role": "assistant"})
        log.debug("a needle in the message")
        log.log(25, "custom level")
        log.warning("careful", extra={"nested": {"a": [1, 2, {"b": None}]}, "n": 1})
        log.info("unicode é € \u2028 and a tab\t", extra={"path": "/tmp/x y"})
        log.info("secret", extra={"password": "hunter2", "api_key": "sk-abcdefghijklmnopqrstuvwx"})
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("boom", extra={"n": 5})
    processor = CodexProcessor(folder, "structlog-run")
    structlog.configure(processors=[processor, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())  # fmt: skip
    slog = structlog.get_logger("tool")
    slog.info("tool call", tool="git", args=["status", "-s"], ok=True, ms=12.5)
    slog.error("tool failed", tool="git", code=128, detail="needle in a field")
    # Lines an older hook or another tool wrote.
    (folder / "foreign.ndjson").write_text(
        "\n".join([
            json.dumps({"ts": "2026-01-01T00:00:10Z", "type": "session_start", "session_id": "foreign", "pid": "77"}),
            json.dumps({"ts": 1767225611, "message": {"not": "text"}, "level": "INFO", "pid": 77}),
            json.dumps({"ts": 1767225612.5, "session_id": "someone-else", "kind": "message", "message": "mislabelled", "logger": None}),
            '{"ts": 1767225613.25, "message": "NaN here", "value": NaN}',
            json.dumps({"ts": 1767225614.125, "message": "big", "big": 123456789012345678901234567890}),
            "not json at all",
            json.dumps({"ts": 1767225615.0, "kind": "message", "level": "WARN", "message": "old warn", "role": "tool", "pid": 77, "levelno": 30}),
            json.dumps({"ts": 1767225620.0, "type": "session_end", "status": "error", "pid": 77, "error": "x"}),
        ]) + "\n"
    )  # fmt: skip


def viewer_answers(db: Path) -> str:
    """What the viewer's pages read: the sessions page, each session's events and timeline."""
    from codex_logging._mirror.filters import Filters
    from codex_logging._viewer.backend import SqliteBackend

    backend = SqliteBackend(str(db))
    count, page = backend.sessions(None, None, 0, 100)
    found: dict[str, object] = {"count": count, "sessions": page}
    for row in page:
        sid = row["session_id"]
        found[f"events {sid}"] = backend.events(Filters(session_id=sid), None, 1000)
        found[f"grep {sid}"] = backend.events(Filters(session_id=sid, grep="needle"), None, 1000)
        found[f"timeline {sid}"] = backend.timeline(sid)
    return json.dumps(found, sort_keys=True, default=repr)


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    sessions = HERE / "sessions"
    sessions.mkdir(parents=True)
    write_sessions(sessions)
    from codex_logging import sync_to_sqlite

    db = HERE / "mirror.db"
    sync_to_sqlite(db, sessions)
    answers = {}
    env = {**os.environ, "CODEX_LOG_DB_PATH": str(db), "NO_COLOR": "1", "TZ": "UTC"}
    for name, argv in READS:
        done = subprocess.run(
            [sys.executable, "-c", CLI, *argv],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        answers[name] = done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "codex_logging.query_logs", "--db", str(db), "--tail", "100", "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    answers["query_logs"] = done.stdout
    answers["viewer"] = viewer_answers(db)
    import sqlite3

    conn = sqlite3.connect(db)
    answers["events view"] = json.dumps(
        [list(row) for row in conn.execute("SELECT * FROM events ORDER BY session_id, seq")]
    )
    answers["session_events"] = json.dumps(
        [list(row) for row in conn.execute("SELECT * FROM session_events ORDER BY session_id, seq")]
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    (HERE / "answers.json").write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
    for name in ("mirror.db-wal", "mirror.db-shm", "mirror.db.codex-state"):
        (HERE / name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
