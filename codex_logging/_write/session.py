"""Session identity: the current scope's session and the environment's.

A session id ties records from many processes together. A record's session
comes, first match wins, from the record, the current :func:`session_scope`,
the handler's own setting, ``CODEX_SESSION_ID``, or a fresh uuid4 (SPEC "Which
session"); the sink does that routing, with these two as its last steps.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextvars import ContextVar
from typing import Any, Final

from codex_logging._settings import ENV_SESSION_ID, validate_session_id

#: The session of the innermost active session_scope in this thread / task.
current_session: ContextVar[str | None] = ContextVar("codex_session_id", default=None)
#: The LogRecord attribute that carries the scope's session from the thread
#: that logged to the thread that writes (a QueueListener's): see
#: :func:`stamp_records`.
SCOPE_ATTRIBUTE: Final = "_codex_session"
_stamping: list[bool] = []


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

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        session = scoped()
        if session is not None:
            setattr(record, SCOPE_ATTRIBUTE, session)
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
