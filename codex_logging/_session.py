"""Session identity: the id check, the environment, the current scope.

A session id ties records from many processes together. It comes, first match
wins, from the record, the current :func:`session_scope`, the handler's own
setting, ``CODEX_SESSION_ID``, or a fresh uuid4 (SPEC "Which session").
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from codex_logging._record import build_record, safe_str
from codex_logging._redact import Redactor
from codex_logging._settings import ENV_SESSION_ID, sessions_dir_path, validate_session_id
from codex_logging._writer import PROCESS, SessionFiles

P = ParamSpec("P")
R = TypeVar("R")

#: The session of the innermost active session_scope in this thread / task.
current_session: ContextVar[str | None] = ContextVar("codex_session_id", default=None)

_valid_ids: set[str] = set()


def get_session_id() -> str:
    """Return the session of this process, creating one if there is none.

    Reads ``CODEX_SESSION_ID``; when it is unset or empty, generates a uuid4 and
    writes it back to ``os.environ`` so the rest of the process and its child
    processes share it.

    Returns:
        The session id.

    Raises:
        InvalidSessionId: If ``CODEX_SESSION_ID`` holds an invalid id.

    """
    value = os.environ.get(ENV_SESSION_ID)
    if value:
        return validate_session_id(value)
    value = str(uuid.uuid4())
    os.environ[ENV_SESSION_ID] = value
    return value


def route_session(explicit: object, own: str | None = None) -> str:
    """Return the session a record goes to (SPEC "Which session", first match wins).

    Args:
        explicit: The id named on the record itself, or ``None``.
        own: The handler's or processor's own ``session_id``, or ``None``.

    Returns:
        A validated id: the record's, the current scope's, ``own``, the
        environment's, or a new exported uuid4.

    Raises:
        InvalidSessionId: If the chosen id is invalid.
    """
    if explicit is not None:
        return validate_session_id(explicit)
    scoped = current_session.get()
    if scoped is not None:
        return scoped
    if own is not None:
        return validate_session_id(own)
    return get_session_id()


class session_scope:  # noqa: N801 - a context manager named like contextlib's, fixed by the SPEC
    """Write one ``start`` and one ``end`` record around a block or a function.

    On entry the session is resolved and validated, made current for this thread
    or asyncio task, exported as ``CODEX_SESSION_ID`` for child processes, and a
    ``start`` record is written. On exit an ``end`` record is written with
    ``status`` (``"ok"`` or ``"error"``), ``duration_s`` and, on error,
    ``error_type``, ``error`` and ``exc``; the exception propagates. Both records
    are written directly, whatever the logging configuration.

    Example::

        with session_scope(meta={"job": "nightly"}) as session_id:
            logging.getLogger("app").info("working in %s", session_id)

    Args:
        session_id: The session; by default the enclosing scope's, then
            ``CODEX_SESSION_ID``, then a new uuid4.
        meta: Fields added to the ``start`` record (redacted like any record).

    Raises:
        InvalidSessionId: If ``session_id`` (or the environment's) is invalid.

    """

    def __init__(
        self, session_id: str | None = None, *, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Check the id now, so a bad one fails where it is written."""
        self._requested = None if session_id is None else validate_session_id(session_id)
        self._meta = dict(meta) if meta else {}
        self._stack: list[tuple[str, Token[str | None], str | None, float, SessionFiles]] = []

    def __enter__(self) -> str:
        """Start the session and return its id."""
        sid = route_session(self._requested)
        files = SessionFiles(sessions_dir_path(), "end")
        token = current_session.set(sid)
        previous = os.environ.get(ENV_SESSION_ID)
        os.environ[ENV_SESSION_ID] = sid
        self._stack.append((sid, token, previous, time.monotonic(), files))
        _write_scope_record(files, sid, "start", "INFO", "session start", self._meta)
        return sid

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the session; the exception, if any, propagates."""
        sid, token, previous, started, files = self._stack.pop()
        try:
            fields: dict[str, Any] = {
                "status": "ok" if exc is None else "error",
                "duration_s": round(time.monotonic() - started, 6),
            }
            if exc is None or exc_type is None:
                _write_scope_record(files, sid, "end", "INFO", "session end", fields)
            else:
                fields["error_type"] = exc_type.__qualname__
                fields["error"] = safe_str(exc)
                trace = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
                _write_scope_record(files, sid, "end", "ERROR", "session end", fields, trace)
        finally:
            if previous is None:
                os.environ.pop(ENV_SESSION_ID, None)
            else:
                os.environ[ENV_SESSION_ID] = previous
            current_session.reset(token)

    async def __aenter__(self) -> str:
        """Start the session (``async with``)."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the session (``async with``)."""
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Use the scope as a decorator: one session per call.

        On a coroutine function the scope wraps the awaited body, not just the
        creation of the coroutine.
        """
        requested, meta = self._requested, self._meta
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with session_scope(requested, meta=meta):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]  # same signature, awaited

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with session_scope(requested, meta=meta):
                return func(*args, **kwargs)

        return run


_scope_redactor = Redactor()


def _write_scope_record(  # noqa: PLR0917 - private, called three times
    files: SessionFiles,
    sid: str,
    kind: str,
    level: str,
    message: str,
    fields: Mapping[str, Any],
    exc: str | None = None,
) -> None:
    try:
        record = build_record(
            ts=time.time(),
            session_id=sid,
            kind=kind,
            level=level,
            logger="codex_logging",
            message=message,
            pid=PROCESS.pid,
            exc=exc,
            extra=fields.items(),
            redactor=_scope_redactor,
        )
        files.write(record)
    except Exception as error:
        # SPEC: a failure to write never raises into the application.
        warnings.warn(
            f"codex_logging: could not write the {kind} record of session {sid}: {error}",
            RuntimeWarning,
            stacklevel=3,
        )
