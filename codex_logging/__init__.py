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

from typing import TYPE_CHECKING, Any

from codex_logging._errors import (
    CodexLoggingError,
    DatabaseDamagedError,
    DatabaseError,
    DatabaseLockedError,
    DatabaseNotFoundError,
    InvalidFilterError,
    InvalidSessionId,
    OtlpConfigError,
    OtlpExportError,
    OtlpNotInstalledError,
    PostgresNotInstalledError,
    ScopeNotEnteredError,
    SessionsDirError,
    SourceIdError,
    UnknownSessionError,
    UnsafePathError,
    WriteError,
)
from codex_logging._write.handler import CodexHandler
from codex_logging._write.processor import CodexProcessor
from codex_logging._write.scope import child_env, session_scope
from codex_logging._write.session import get_session_id
from codex_logging._write.structlog_setup import configure_structlog

if TYPE_CHECKING:
    from codex_logging._mirror.target import SyncReport
    from codex_logging._otlp.sync import sync_to_otlp
    from codex_logging._postgres.sync import sync_to_postgres
    from codex_logging._sqlite.sync import sync_to_sqlite
    from codex_logging._write.loguru_sink import LoguruSink, loguru_sink

__version__ = "0.1.0"

__all__ = [
    "CodexHandler",
    "CodexLoggingError",
    "CodexProcessor",
    "DatabaseDamagedError",
    "DatabaseError",
    "DatabaseLockedError",
    "DatabaseNotFoundError",
    "InvalidFilterError",
    "InvalidSessionId",
    "LoguruSink",
    "OtlpConfigError",
    "OtlpExportError",
    "OtlpNotInstalledError",
    "PostgresNotInstalledError",
    "ScopeNotEnteredError",
    "SessionsDirError",
    "SourceIdError",
    "SyncReport",
    "UnknownSessionError",
    "UnsafePathError",
    "WriteError",
    "child_env",
    "configure_structlog",
    "get_session_id",
    "loguru_sink",
    "session_scope",
    "sync_to_otlp",
    "sync_to_postgres",
    "sync_to_sqlite",
]

# The mirror side loads on first use: a hook script that only logs does not
# pay for the sync, SQLite and PostgreSQL code on every start (PEP 562).
_LAZY = {
    "LoguruSink": "codex_logging._write.loguru_sink",
    "loguru_sink": "codex_logging._write.loguru_sink",
    "SyncReport": "codex_logging._mirror.target",
    "sync_to_sqlite": "codex_logging._sqlite.sync",
    "sync_to_postgres": "codex_logging._postgres.sync",
    "sync_to_otlp": "codex_logging._otlp.sync",
}


def __getattr__(name: str) -> Any:
    """Import the mirror side's public names when they are first used."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'codex_logging' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415 - only on first use

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
