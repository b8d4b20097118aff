"""Session identity: the current scope's session and the environment's.

A session id ties records from many processes together. A record's session
comes, first match wins, from the record, the current :func:`session_scope`,
the handler's own setting, ``CODEX_SESSION_ID``, or a fresh uuid4 (docs/configuration.md,
"Which session a record goes to"); the sink does that routing, with these two as its last steps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from contextvars import ContextVar
from typing import Any, Final

from codex_logging._settings import ENV_SESSION_ID, validate_session_id

#: The session of the innermost active session_scope in this thread / task.
current_session: ContextVar[str | None] = ContextVar("codex_session_id", default=None)
_stamping: list[bool] = []
#: Records made inside a scope -> ``(record.created, session)``, keyed by the
#: identity of the record's ``created`` float: a copy of the record
#: (``QueueHandler.prepare``) shares that float, and nothing is added to the
#: record itself, where formatters that show every attribute (structlog's
#: ``ExtraAdder``, JSON formatters) would print it. See :func:`stamp_records`.
STAMPS: dict[int, tuple[object, str]] = {}
#: Stamps kept at most: a record still queued behind this many newer ones is
#: written where the writing thread's scope says.
STAMPS_KEPT: Final = 16384
#: Per thread: the own session of a CodexProcessor that left its event to a
#: CodexHandler, with the event's ``event`` value it was left for.
deferred = threading.local()


def stamped_session(record: logging.LogRecord) -> str | None:
    """Return the session_scope that was current where ``record`` was made, if stamped."""
    if not STAMPS:
        return None
    created = record.__dict__.get("created")
    entry = STAMPS.get(id(created))
    if entry is not None and entry[0] is created:
        return entry[1]
    return None


def stamp_records() -> None:
    """Make every LogRecord carry the session_scope current where it is made.

    A record handed to another thread (``QueueHandler`` -> ``QueueListener``)
    is written where that thread's scope, not the caller's, would say. The
    first :func:`session_scope` wraps logging's record factory once, so the
    record keeps its session in :data:`SCOPE_ATTRIBUTE`; a program that never
    opens a scope pays nothing.
    """
    if _stamping:
        return
    _stamping.append(True)
    previous = logging.getLogRecordFactory()
    scoped = current_session.get
    stamps = STAMPS

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        session = scoped()
        if session is not None:
            created = record.__dict__.get("created")
            if len(stamps) >= STAMPS_KEPT:
                # The oldest goes; another thread may be adding one meanwhile.
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del stamps[next(iter(stamps))]
            stamps[id(created)] = (created, session)
        return record

    logging.setLogRecordFactory(make_record)


def get_session_id() -> str:
    """Return the current session, creating one for the process if there is none.

    Inside a :func:`session_scope` it is that scope's session. Outside, it reads
    ``CODEX_SESSION_ID``; when that is unset or empty, it generates a uuid4 and
    writes it back to ``os.environ`` so the rest of the process and its child
    processes share it.

    Returns:
        The session id.

    Raises:
        InvalidSessionId: If ``CODEX_SESSION_ID`` holds an invalid id.

    """
    scoped = current_session.get()
    if scoped is not None:
        return scoped
    value = os.environ.get(ENV_SESSION_ID)
    if value:
        return validate_session_id(value)
    value = str(uuid.uuid4())
    os.environ[ENV_SESSION_ID] = value
    return value
