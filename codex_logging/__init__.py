"""codex_logging: one durable, queryable record of a session that spans many processes.

Example::

    import logging.config
    from codex_logging import session_scope, sync_to_sqlite

    logging.config.dictConfig({
        "version": 1,
        "handlers": {"codex": {"class": "codex_logging.CodexHandler"}},
        "root": {"handlers": ["codex"], "level": "INFO"},
    })
    with session_scope():
        logging.getLogger("app").info("processing step A")
    sync_to_sqlite()
"""

from __future__ import annotations

from codex_logging._errors import (
    CodexLoggingError,
    DatabaseError,
    DatabaseLockedError,
    DatabaseNotFoundError,
    InvalidSessionId,
    UnknownSessionError,
    UnsafePathError,
    WriteError,
)
from codex_logging._handler import CodexHandler
from codex_logging._postgres import sync_to_postgres
from codex_logging._processor import CodexProcessor, configure_structlog
from codex_logging._scope import session_scope
from codex_logging._session import get_session_id
from codex_logging._sync import SyncReport, sync_to_sqlite

__version__ = "0.1.0"

__all__ = [
    "CodexHandler",
    "CodexLoggingError",
    "CodexProcessor",
    "DatabaseError",
    "DatabaseLockedError",
    "DatabaseNotFoundError",
    "InvalidSessionId",
    "SyncReport",
    "UnknownSessionError",
    "UnsafePathError",
    "WriteError",
    "configure_structlog",
    "get_session_id",
    "session_scope",
    "sync_to_postgres",
    "sync_to_sqlite",
]
