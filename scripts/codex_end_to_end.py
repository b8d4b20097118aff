"""Record a short conversation, sync it into SQLite, and query the transcript back.

This is what ``make demo`` runs, on the embedded default: ``.codex/`` under the
working directory. Run it from anywhere: ``python scripts/codex_end_to_end.py``.
"""

from __future__ import annotations

import logging
import logging.config
import subprocess
import sys

import structlog

from codex_logging import configure_structlog, session_scope, sync_to_sqlite
from codex_logging.query_logs import main as query_logs

CHILD = """
import logging
from codex_logging import CodexHandler
logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
logging.getLogger("tool.search").info("found 3 files", extra={"role": "tool", "hits": 3})
"""


def main() -> int:
    """Run the demo and return the query's exit status."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"codex": {"class": "codex_logging.CodexHandler"}},
            "root": {"handlers": ["codex"], "level": "INFO"},
        }
    )
    # structlog writes to the session file too; keep the console quiet here.
    configure_structlog(logger_factory=structlog.ReturnLoggerFactory())
    chat = logging.getLogger("agent")
    with session_scope(meta={"task": "fix the failing test"}) as session_id:
        chat.info("Why does test_sync fail?", extra={"role": "user"})
        chat.info("Let me search the code.", extra={"role": "assistant"})
        # A child process inherits the session through CODEX_SESSION_ID.
        subprocess.run([sys.executable, "-c", CHILD], check=True)
        structlog.get_logger().bind(logger="agent").info(
            "The watermark was read outside the lock.",
            role="assistant",
            api_key="sk-demo0000000000000000000000",  # redacted before it is written
        )
        chat.info("Thanks!", extra={"role": "user"})
    report = sync_to_sqlite()
    print(f"session {session_id}: {report.rows_inserted} rows synced into .codex/session_logs.db\n")
    return query_logs(["--session-id", session_id, "--tail", "20"])


if __name__ == "__main__":
    sys.exit(main())
