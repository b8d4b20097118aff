"""``session_scope``: the start and end records around a block, and the environment.

A scope writes through the sinks the program configured, so its records land
with the messages, redacted the same way, and falls back to the environment's
folder when there is none. While any scope is open, ``CODEX_SESSION_ID`` and
``CODEX_SESSIONS_DIR`` (absolute) are exported for child processes; once every
overlapping scope has exited, in any order, both are exactly as they were
before the first (docs/configuration.md, "session_scope").
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Final, NamedTuple, ParamSpec, TypeVar

from codex_logging._errors import InvalidSessionId
from codex_logging._record import safe_str
from codex_logging._settings import (
    ENV_SESSION_ID,
    ENV_SESSIONS_DIR,
    sessions_dir_path,
    validate_session_id,
)
from codex_logging._write.session import current_session, stamp_records
from codex_logging._write.sink import Sink
from codex_logging._write.writer import PROCESS

P = ParamSpec("P")
R = TypeVar("R")

_EXPORTED: Final = (ENV_SESSION_ID, ENV_SESSIONS_DIR)
#: The ``start`` record's field holding an inherited ``CODEX_SESSION_ID`` that
#: was invalid, when the scope ran under a fresh id instead.
REJECTED_FIELD: Final = "rejected_session_id"
#: At most this much of a rejected id is written.
REJECTED_LENGTH: Final = 256
#: Rejected values reported on stderr, once each; bounded.
_rejected: set[str] = set()
_MAX_REJECTED: Final = 16


class _Entry(NamedTuple):
    """One entry of a scope: what its exit needs."""

    session_id: str
    folder: str
    token: Token[str | None]
    started: float
    sinks: list[Sink]


class _Environment:
    """The process-wide record of open scopes and the environment before the first.

    ``os.environ`` is one per process while scopes are per thread or task, so
    the variables are saved when the first scope opens, follow the newest open
    scope, and are restored exactly when the last one closes.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.open: list[_Entry] = []
        self.before: dict[str, str | None] = {}

    def user_session(self) -> str | None:
        # The program's own CODEX_SESSION_ID: the one saved before the first
        # open scope, so an anonymous scope in one thread never joins another
        # thread's scope through the environment.
        with self.lock:
            value = self.before[ENV_SESSION_ID] if self.open else os.environ.get(ENV_SESSION_ID)
        return value or None

    def enter(self, entry: _Entry) -> None:
        with self.lock:
            stamp_records()
            if not self.open:
                self.before = {name: os.environ.get(name) for name in _EXPORTED}
            self.open.append(entry)
            self._export(entry)

    def exit(self, entry: _Entry) -> None:
        with self.lock:
            for index in range(len(self.open) - 1, -1, -1):
                if self.open[index] is entry:
                    del self.open[index]
                    break
            if self.open:
                self._export(self.open[-1])
                return
            for name, value in self.before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    @staticmethod
    def _export(entry: _Entry) -> None:
        os.environ[ENV_SESSION_ID] = entry.session_id
        os.environ[ENV_SESSIONS_DIR] = entry.folder

    def after_fork_in_child(self) -> None:
        self.lock = threading.RLock()


_ENVIRONMENT: Final = _Environment()
os.register_at_fork(after_in_child=_ENVIRONMENT.after_fork_in_child)

# A scope with no configured sink writes to the environment's folder; one sink
# per folder, so its redactor is compiled once.
_fallbacks: dict[str, Sink] = {}


def _sinks() -> list[Sink]:
    sinks = configured_sinks()
    if sinks:
        return sinks
    folder = sessions_dir_path()
    fallback = _fallbacks.get(folder)
    if fallback is None:  # compiled once per folder, not per scope
        fallback = _fallbacks.setdefault(folder, Sink(folder, fsync="end"))
    return [fallback]


class session_scope:  # noqa: N801 - a context manager named like contextlib's
    """Write one ``start`` and one ``end`` record around a block or a function.

    On entry the session is resolved and validated, made current for this thread
    or asyncio task, exported as ``CODEX_SESSION_ID`` (and the folder as
    ``CODEX_SESSIONS_DIR``) for child processes, and a ``start`` record is
    written through every configured :class:`CodexHandler` /
    :class:`CodexProcessor` folder (or the environment's folder). On exit an
    ``end`` record is written with ``status`` (``"ok"`` or ``"error"``),
    ``duration_s`` and, on error, ``error_type``, ``error`` and ``exc``; the
    exception propagates. ``SystemExit`` with code 0 or ``None`` is ``"ok"``.
    A failure to write is reported once on stderr, never raised.

    One instance may be entered from several threads or tasks at once, and
    works as a decorator (one session per call) on functions and coroutine
    functions.

    Example::

        with session_scope(meta={"job": "nightly"}) as session_id:
            logging.getLogger("app").info("working in %s", session_id)

    Args:
        session_id: The session; by default the enclosing scope's, then
            ``CODEX_SESSION_ID`` as the program set it, then a new uuid4.
        meta: Fields added to the ``start`` record (redacted like any record).

    An invalid inherited ``CODEX_SESSION_ID`` never stops the program: the
    scope says so once on stderr and runs under a fresh id, and its ``start``
    record keeps the rejected value in ``rejected_session_id``.

    Raises:
        InvalidSessionId: If ``session_id`` is invalid.

    """

    def __init__(
        self, session_id: str | None = None, *, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Check the id now, so a bad one fails where it is written."""
        self._requested = None if session_id is None else validate_session_id(session_id)
        self._meta = dict(meta) if meta else {}
        # Per thread / task: one instance entered from several at once keeps
        # each entry's state apart (docs/guarantees.md).
        self._entries: ContextVar[tuple[_Entry, ...]] = ContextVar(
            "codex_scope_entries", default=()
        )

    def _resolve(self) -> tuple[str, str | None]:
        # The session, and the inherited CODEX_SESSION_ID it stands in for
        # when that one is invalid (the program's work must still run).
        if self._requested is not None:
            return self._requested, None
        enclosing = current_session.get()
        if enclosing is not None:
            return enclosing, None
        joined = _ENVIRONMENT.user_session()
        if joined is not None:
            try:
                return validate_session_id(joined), None
            except InvalidSessionId as error:
                fresh = str(uuid.uuid4())
                _say_rejected(joined, fresh, error)
                return fresh, joined
        return str(uuid.uuid4()), None

    def __enter__(self) -> str:
        """Start the session and return its id."""
        sid, rejected = self._resolve()
        sinks = _sinks()
        token = current_session.set(sid)
        entry = _Entry(sid, sinks[0].sessions_dir, token, time.monotonic(), sinks)
        self._entries.set((*self._entries.get(), entry))
        _ENVIRONMENT.enter(entry)
        fields: Iterable[tuple[str, Any]] = self._meta.items()
        if rejected is not None:
            fields = [*fields, (REJECTED_FIELD, rejected[:REJECTED_LENGTH])]
        _write(sinks, sid, "start", "INFO", fields)
        return sid

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the session; the exception, if any, propagates."""
        entries = self._entries.get()
        entry = entries[-1]
        self._entries.set(entries[:-1])
        try:
            fields: dict[str, Any] = {
                "status": "ok" if _succeeded(exc) else "error",
                "duration_s": round(time.monotonic() - entry.started, 6),
            }
            if exc_type is None or exc is None or fields["status"] == "ok":
                _write(entry.sinks, entry.session_id, "end", "INFO", fields.items())
            else:
                fields["error_type"] = exc_type.__qualname__
                fields["error"] = safe_str(exc)
                trace = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
                _write(entry.sinks, entry.session_id, "end", "ERROR", fields.items(), exc=trace)
        finally:
            _ENVIRONMENT.exit(entry)
            try:
                current_session.reset(entry.token)
            except ValueError:  # exited in another context than entered: restore by value
                current_session.set(entries[-2].session_id if len(entries) > 1 else None)

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


def _say_rejected(value: str, fresh: str, error: InvalidSessionId) -> None:
    # Once per process and rejected value, on stderr (never a warning, which
    # -W error would raise into the program).
    if value in _rejected or len(_rejected) >= _MAX_REJECTED:
        return
    _rejected.add(value)
    line = (
        f"codex_logging: {ENV_SESSION_ID} is not used: {error}; session_scope() runs as"
        f" session {fresh} instead (its start record keeps the rejected id in"
        f" {REJECTED_FIELD}); set {ENV_SESSION_ID} to a valid id\n"
    )
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except Exception:  # noqa: S110 - a closed stderr must not raise into the application
        pass


def _succeeded(exc: BaseException | None) -> bool:
    # sys.exit(0) and sys.exit() end a program successfully (docs/configuration.md).
    return exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None))


def _write(
    sinks: list[Sink],
    sid: str,
    kind: str,
    level: str,
    fields: Iterable[tuple[str, Any]],
    *,
    exc: str | None = None,
) -> None:
    fields = list(fields)
    for sink in sinks:
        try:
            sink.write(
                f"session {kind}",
                ts=time.time(),
                level=level,
                pid=PROCESS.pid,
                session=sid,
                kind=kind,
                logger="codex_logging",
                exc=exc,
                extra=fields,
            )
        except Exception as error:
            # A failure to write never raises into the application (docs/guarantees.md).
            sink.report(error)


def configured_sinks() -> list[Sink]:
    """Return the sinks the program's logging and structlog set-up write through.

    The handlers reachable from the loggers (including those of a
    ``QueueHandler``'s listener, when dictConfig made one), then the
    processors in structlog's configured chain (looked at only if structlog is
    imported); the first sink of each folder, so a scope writes its start and
    end records once per folder (docs/configuration.md, "session_scope").

    Returns:
        At most one sink per folder; empty when nothing is configured.

    """
    found: list[Sink] = []
    manager = logging.Logger.manager
    loggers: list[Any] = [logging.getLogger(), *list(manager.loggerDict.values())]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            _collect(handler, found)
            listener = getattr(handler, "listener", None)
            for behind in getattr(listener, "handlers", ()):
                _collect(behind, found)
    structlog = sys.modules.get("structlog")
    if structlog is not None:
        try:
            processors = structlog.get_config().get("processors", ())
        except Exception:  # a structlog without get_config: nothing configured there
            processors = ()
        for processor in processors:
            _collect(processor, found)
    seen: set[str] = set()
    out = []
    for sink in found:
        if sink.sessions_dir not in seen:
            seen.add(sink.sessions_dir)
            out.append(sink)
    return out


def _collect(owner: object, found: list[Sink]) -> None:
    sink = getattr(owner, "sink", None)
    if isinstance(sink, Sink):
        found.append(sink)
