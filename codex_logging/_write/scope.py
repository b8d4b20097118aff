"""``session_scope``: the start and end records around a block, and the environment.

A scope writes through the sinks the program configured, so its records land
with the messages, redacted the same way, and falls back to the environment's
folder when there is none. :func:`child_env` (and ``scope.env()``) give the
environment a child process needs to join the scope current in this thread or
asyncio task. ``os.environ`` itself is one per process: while scopes are open
it names the innermost scope enclosing all of them (none when scopes in
different threads or tasks overlap with no common enclosing scope), and once
every scope has exited it is exactly as it was before the first
(docs/configuration.md, "Subprocesses").
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from codex_logging._errors import InvalidSessionId, ScopeNotEnteredError
from codex_logging._record import safe_str
from codex_logging._redaction.redactor import Redactor
from codex_logging._settings import (
    ENV_PARENT_SCOPE,
    ENV_SCOPE_SIGNALS,
    ENV_SESSION_ID,
    ENV_SESSIONS_DIR,
    invalid_id_message,
    sessions_dir_path,
    validate_session_id,
)
from codex_logging._write.session import current_session, stamp_records
from codex_logging._write.sink import Sink
from codex_logging._write.writer import PROCESS

P = ParamSpec("P")
R = TypeVar("R")

_EXPORTED: Final = (ENV_SESSION_ID, ENV_SESSIONS_DIR, ENV_PARENT_SCOPE)
#: Numbers the scopes this process enters (``<pid>.<n>`` names one for children).
_numbers = itertools.count(1)
#: The ``start`` record's field holding an inherited ``CODEX_SESSION_ID`` that
#: was invalid, when the scope ran under a fresh id instead.
REJECTED_FIELD: Final = "rejected_session_id"
#: This machine's name, written on start records.
_HOST: Final = socket.gethostname()
#: At most this much of a rejected id is written.
REJECTED_LENGTH: Final = 256
#: Rejected values reported on stderr, once each; bounded.
_rejected: set[str] = set()
_MAX_REJECTED: Final = 16


class _Entry:
    """One entry of a scope: what its exit needs, and where it sits among the others."""

    __slots__ = (
        "closed",
        "ended",
        "folder",
        "parent",
        "pid",
        "queues",
        "scope_id",
        "session_id",
        "signals",
        "sinks",
        "started",
        "token",
    )

    def __init__(  # noqa: PLR0917 - one argument per field
        self,
        session_id: str,
        folder: str,
        token: Token[str | None],
        started: float,
        sinks: list[Sink],
        parent: _Entry | None,
    ) -> None:
        self.session_id = session_id
        self.folder = folder
        self.token = token
        self.started = started
        self.sinks = sinks
        #: The entry current in this thread or task when this one began.
        self.parent = parent
        #: The process that entered it: a forked child never ends it on a signal.
        self.pid = PROCESS.pid
        self.scope_id = f"{self.pid}.{next(_numbers)}"
        self.closed = False
        #: Its end record is written or being written (by the exit or a signal).
        self.ended = False
        #: It holds the SIGTERM / SIGHUP handler (entered in the main thread).
        self.signals = False
        #: The running QueueListeners that feed its sinks: drained before its end.
        self.queues: list[Any] = []

    def env(self) -> dict[str, str]:
        """Return the variables a child process needs to join this entry."""
        return {
            ENV_SESSION_ID: self.session_id,
            ENV_SESSIONS_DIR: self.folder,
            ENV_PARENT_SCOPE: self.scope_id,
        }


#: The innermost open scope entry of this thread or asyncio task.
_current_entry: ContextVar[_Entry | None] = ContextVar("codex_scope_entry", default=None)


def _open_ancestors(entry: _Entry) -> list[_Entry]:
    # The entry and the open entries enclosing it, innermost first.
    chain = []
    current: _Entry | None = entry
    while current is not None:
        if not current.closed:
            chain.append(current)
        current = current.parent
    return chain


def _common(a: _Entry, b: _Entry) -> tuple[_Entry | None, bool]:
    # The deeper of two entries on one chain (and False), else their
    # innermost common open ancestor, None when they share none (and True).
    above_b = _open_ancestors(b)
    if a in above_b:
        return b, False
    above_a = _open_ancestors(a)
    if b in above_a:
        return a, False
    ids = {id(e) for e in above_b}
    for candidate in above_a:
        if id(candidate) in ids:
            return candidate, True
    return None, True


def _enclosing(entries: list[_Entry]) -> tuple[_Entry | None, bool]:
    # The innermost open entry enclosing all of ``entries``: the deepest while
    # they form one chain, their common ancestor once they branch (and True).
    target: _Entry | None = entries[0] if entries else None
    branched = False
    for other in entries[1:]:
        if target is None:
            return None, True
        if branched:
            above = {id(e) for e in _open_ancestors(other)}
            target = next((e for e in _open_ancestors(target) if id(e) in above), None)
        else:
            target, branched = _common(target, other)
    return target, branched


class _Environment:
    """The process-wide record of open scopes and the environment before the first.

    ``os.environ`` is one per process while scopes are per thread or task, so
    the variables are saved when the first scope opens and restored exactly
    when the last one closes. In between they name the innermost open scope
    that encloses every open scope: the current one while scopes nest in one
    thread or task, their common enclosing scope when tasks started inside it
    open scopes of their own, and none of them (the values from before the
    first) when scopes in unrelated threads or tasks overlap, unless they all
    name one session and folder. Which scope started last never decides.

    That target is kept up to date step by step (a server with a thousand
    requests open in scopes pays little per entry and exit); it is worked out
    from every open entry only when the shape changes (``_recompute``).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: Open entries by id, in the order they were entered.
        self.open: dict[int, _Entry] = {}
        self.before: dict[str, str | None] = {}
        #: The entry os.environ names (None: the values from before).
        self.target: _Entry | None = None
        #: Whether the open entries branch below the target (target is their
        #: common ancestor, not the deepest of one chain).
        self.branched = False
        #: How many open entries lie under each child of a branched target
        #: (open entries above it are not counted), or under each top-most
        #: entry when there is no target.
        self.parts: dict[int, int] = {}
        #: How many open entries name each (session, folder).
        self.sessions: dict[tuple[str, str], int] = {}

    def user_session(self) -> str | None:
        # The program's own CODEX_SESSION_ID: the one saved before the first
        # open scope, so an anonymous scope in one thread never joins another
        # thread's scope through the environment.
        return self.user_value(ENV_SESSION_ID)

    def user_value(self, name: str) -> str | None:
        # A variable as the program had it before any scope of ours.
        with self.lock:
            value = self.before.get(name) if self.open else os.environ.get(name)
        return value or None

    def enter(self, entry: _Entry) -> None:
        with self.lock:
            stamp_records()
            if not self.open:
                self.before = {name: os.environ.get(name) for name in _EXPORTED}
            self.open[id(entry)] = entry
            key = (entry.session_id, entry.folder)
            self.sessions[key] = self.sessions.get(key, 0) + 1
            target = self.target
            if len(self.open) == 1:
                self.target, self.branched = entry, False
            elif target is None:
                _count(self.parts, _part(entry, None), 1)
            elif self.branched:
                part = _part(entry, target)
                if part is None:
                    self._recompute()  # outside the target: it moves up
                else:
                    _count(self.parts, part, 1)
            else:
                deeper, branched = _common(target, entry)
                if branched:
                    self._recompute()
                else:
                    self.target = deeper
            self._export()

    def exit(self, entry: _Entry) -> None:
        with self.lock:
            entry.closed = True
            if self.open.pop(id(entry), None) is None:
                return
            key = (entry.session_id, entry.folder)
            _count(self.sessions, key, -1)
            if not self.open:
                self.target, self.branched = None, False
                self.parts.clear()
            elif entry is self.target:
                self._recompute()
            elif self.target is None or self.branched:
                part = _part(entry, self.target)
                # An entry above a branched target changes nothing; one part
                # left below it, the shape may have changed.
                if part is not None and _count(self.parts, part, -1) < 2:
                    self._recompute()
            # On one chain, leaving any entry but the deepest changes nothing.
            self._export()

    def _recompute(self) -> None:
        # From every open entry: the target, whether it branches, the parts.
        entries = list(self.open.values())
        self.target, self.branched = _enclosing(entries)
        self.parts.clear()
        if self.target is None or self.branched:
            for entry in entries:
                part = _part(entry, self.target)
                if part is not None:  # not the target, nor above it
                    _count(self.parts, part, 1)

    def _export(self) -> None:
        # Called with the lock held, after every enter and exit.
        target = self.target
        if target is None and len(self.sessions) == 1 and self.open:
            # Unrelated scopes of one session and folder still agree.
            target = next(iter(self.open.values()))
        values = target.env() if target is not None else self.before
        for name in _EXPORTED:
            value = values.get(name)
            if value is None:
                os.environ.pop(name, None)
            elif os.environ.get(name) != value:
                os.environ[name] = value

    def after_fork_in_child(self) -> None:
        self.lock = threading.RLock()


def _part(entry: _Entry, top: _Entry | None) -> int | None:
    # The id of the entry just below ``top`` on ``entry``'s chain (the
    # top-most one when ``top`` is None); None when ``top`` is not above it.
    current = entry
    while current.parent is not top:
        if current.parent is None:
            return None
        current = current.parent
    return id(current)


def _count(counts: dict[Any, int], key: Any, step: int) -> int:
    # Add ``step`` to a count, dropping it at zero; the number of keys left.
    left = counts.get(key, 0) + step
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
    return len(counts)


#: The signals that end a program by default and that a scope records.
_TERMINATING: Final = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Signals:
    """SIGTERM and SIGHUP: end every open scope ``terminated``, then go on as before.

    Installed by the first scope entered in the main thread (where Python runs
    signal handlers) over a handler that is the default action or the
    program's own Python function, and put back by the last one to exit if
    nobody replaced it meanwhile. On the signal, each open scope gets its
    ``end`` record, then the program's handler runs, or the default action
    ends the process as the signal would have (exit status 128 + 15 for
    SIGTERM). A handler the program installs later wins: scopes then end as
    its code decides (docs/configuration.md, "session_scope").
    """

    def __init__(self) -> None:
        self.users = 0
        self.previous: dict[int, Any] = {}

    def acquire(self) -> bool:
        # Called on entry, in the main thread only.
        if self.users == 0:
            for signum in _TERMINATING:
                current = signal.getsignal(signum)
                if current is signal.SIG_DFL or (callable(current) and current != self.handle):
                    self.previous[signum] = current
                    signal.signal(signum, self.handle)
        self.users += 1
        return True

    def release(self) -> None:
        # Not below 0: a forked child exits its parent's scope without it.
        self.users = max(self.users - 1, 0)
        if self.users > 0 or threading.current_thread() is not threading.main_thread():
            return
        self._put_back()

    def _put_back(self) -> None:
        # What the first scope found, where nobody replaced the handler since.
        for signum, previous in self.previous.items():
            if signal.getsignal(signum) == self.handle:
                with contextlib.suppress(ValueError):  # a fork's thread that is not Python's main
                    signal.signal(signum, previous)
        self.previous.clear()

    def handle(self, signum: int, frame: Any) -> None:
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            # The program's own handler first: one that lets the program go
            # on (a SIGHUP that reloads its settings) ends no scope; one
            # that ends it (raises, exits) ends them as terminated.
            try:
                previous(signum, frame)
            except BaseException:
                self.terminate(signum)
                raise
            return
        self.terminate(signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def after_fork_in_child(self) -> None:
        # A forked child (a pool's worker) ends no scope of its parent's, so
        # the handler has nothing to do there; and a Python handler cannot
        # interrupt a blocking call when the signal lands just before it: a
        # worker that Pool.terminate() sent SIGTERM as it went to wait for
        # the task queue's lock waited for good, and the pool with it. The
        # child gets back what the first scope found.
        self._put_back()
        self.users = 0

    def terminate(self, signum: int) -> None:
        """End every open scope of this process with ``status: "terminated"``."""
        name = signal.Signals(signum).name
        with _ENVIRONMENT.lock:
            entries = list(_ENVIRONMENT.open.values())
        pid = os.getpid()
        for entry in reversed(entries):  # innermost first
            if entry.ended or entry.pid != pid:  # a fork's copy of its parent's scope
                continue
            entry.ended = True
            fields = {
                "status": "terminated",
                "signal": name,
                "duration_s": round(time.monotonic() - entry.started, 6),
            }
            # No _drain here: the interrupted thread may hold the queue's
            # own lock (inside QueueHandler's put), and waiting for it would
            # never end.
            _write(entry.sinks, entry.session_id, "end", "WARNING", fields.items())


_SIGNALS: Final = _Signals()
os.register_at_fork(after_in_child=_SIGNALS.after_fork_in_child)


def _wants_signals(requested: bool) -> bool:
    return (
        requested
        and bool(_TERMINATING)
        and os.environ.get(ENV_SCOPE_SIGNALS, "") != "0"
        and threading.current_thread() is threading.main_thread()
    )


_ENVIRONMENT: Final = _Environment()
os.register_at_fork(after_in_child=_ENVIRONMENT.after_fork_in_child)

# A scope with no configured sink writes to the environment's folder; one sink
# per folder, so its redactor is compiled once.
_fallbacks: dict[str, Sink] = {}


def _sinks(queues: list[Any] | None = None) -> list[Sink]:
    sinks = configured_sinks(queues)
    if sinks:
        return sinks
    folder = sessions_dir_path()
    fallback = _fallbacks.get(folder)
    if fallback is None:  # compiled once per folder, not per scope
        fallback = _fallbacks.setdefault(folder, Sink(folder, None, "end", Redactor()))
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
        record_signals: Entered in the main thread, end the scope with
            ``status: "terminated"`` and the ``signal`` on SIGTERM or SIGHUP,
            then let the program's handler or the default action go on.
            ``False`` (or ``CODEX_SCOPE_SIGNALS=0``) leaves signals alone.

    An invalid inherited ``CODEX_SESSION_ID`` never stops the program: the
    scope says so once on stderr and runs under a fresh id, and its ``start``
    record keeps the rejected value in ``rejected_session_id``.

    Raises:
        InvalidSessionId: If ``session_id`` is invalid.

    """

    def __init__(
        self,
        session_id: str | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        record_signals: bool = True,
    ) -> None:
        """Check the id now, so a bad one fails where it is written."""
        self._requested = None if session_id is None else validate_session_id(session_id)
        self._meta = dict(meta) if meta else {}
        self._record_signals = record_signals
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
            except InvalidSessionId:
                return str(uuid.uuid4()), joined
        return str(uuid.uuid4()), None

    def __enter__(self) -> str:
        """Start the session and return its id."""
        sid, rejected = self._resolve()
        queues: list[Any] = []
        sinks = _sinks(queues)
        if rejected is not None:
            _say_rejected(rejected, sid, sinks)
        token = current_session.set(sid)
        parent = _current_entry.get()
        entry = _Entry(sid, sinks[0].sessions_dir, token, time.monotonic(), sinks, parent)
        entry.queues = queues
        # The machine, so a reader on it can tell a session whose processes
        # are all gone (docs/cli.md, "abandoned").
        own: dict[str, Any] = {"host": _HOST}
        if parent is None and sid == _ENVIRONMENT.user_session():
            # A child joining the scope it was started in (child_env) says which.
            parent_scope = _ENVIRONMENT.user_value(ENV_PARENT_SCOPE)
            if parent_scope is not None:
                own["parent_scope"] = parent_scope[:64]
        if rejected is not None:
            own[REJECTED_FIELD] = rejected[:REJECTED_LENGTH]
        self._entries.set((*self._entries.get(), entry))
        _current_entry.set(entry)
        _ENVIRONMENT.enter(entry)
        if _wants_signals(self._record_signals):
            entry.signals = _SIGNALS.acquire()
        # A meta key the scope writes itself is kept beside it, as extra.<key>.
        fields = [(f"extra.{k}" if k in own else k, v) for k, v in self._meta.items()]
        _write(sinks, sid, "start", "INFO", [*fields, *own.items()])
        return sid

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the environment a child process needs to join this scope.

        For the innermost entry of this scope in the calling thread or asyncio
        task: ``base`` (``os.environ`` by default) with ``CODEX_SESSION_ID``,
        ``CODEX_SESSIONS_DIR`` and ``CODEX_PARENT_SCOPE`` set to this entry's.

        Example::

            scope = session_scope("job-7")
            with scope:
                subprocess.run(["python", "step.py"], env=scope.env(), check=True)

        Args:
            base: The environment to start from.

        Returns:
            A new dict, ready for ``subprocess.run(env=...)``.

        Raises:
            ScopeNotEnteredError: This scope is not entered in this thread or task.

        """
        entries = self._entries.get()
        if not entries:
            msg = (
                "session_scope.env() outside that scope: call it inside its with block,"
                " or use codex_logging.child_env() for the current scope"
            )
            raise ScopeNotEnteredError(msg)
        return {**(os.environ if base is None else base), **entries[-1].env()}

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
            if entry.ended:  # a signal ended it already
                return
            entry.ended = True
            fields: dict[str, Any] = {
                "status": "ok" if _succeeded(exc) else "error",
                "duration_s": round(time.monotonic() - entry.started, 6),
            }
            _drain(entry.queues)
            if exc_type is None or exc is None or fields["status"] == "ok":
                _write(entry.sinks, entry.session_id, "end", "INFO", fields.items())
            else:
                fields["error_type"] = exc_type.__qualname__
                fields["error"] = safe_str(exc)
                trace = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
                _write(entry.sinks, entry.session_id, "end", "ERROR", fields.items(), exc=trace)
        finally:
            if entry.signals:
                _SIGNALS.release()
            _ENVIRONMENT.exit(entry)
            _current_entry.set(entry.parent)
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
        requested, meta, signals = self._requested, self._meta, self._record_signals
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with session_scope(requested, meta=meta, record_signals=signals):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]  # same signature, awaited

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with session_scope(requested, meta=meta, record_signals=signals):
                return func(*args, **kwargs)

        return run


def _say_rejected(value: str, fresh: str, sinks: list[Sink]) -> None:
    # Once per process and rejected value, on stderr (never a warning, which
    # -W error would raise into the program). The value may be a secret set
    # by mistake: it is redacted as the start record that keeps it is.
    if value in _rejected or len(_rejected) >= _MAX_REJECTED:
        return
    _rejected.add(value)

    def show(text: str) -> str:
        for sink in sinks:
            if sink.redactor is not None:
                text = sink.redactor.text(text, [0])
        return text

    try:
        shown = invalid_id_message(value, show)
    except Exception:  # a redactor that fails: no value at all
        shown = "invalid session id"
    line = (
        f"codex_logging: {ENV_SESSION_ID} is not used: {shown}; session_scope() runs as"
        f" session {fresh} instead (its start record keeps the rejected id in"
        f" {REJECTED_FIELD}); set {ENV_SESSION_ID} to a valid id\n"
    )
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except Exception:  # noqa: S110 - a closed stderr must not raise into the application
        pass


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment a child process needs to join the current scope.

    The current scope is the innermost :class:`session_scope` open in the
    calling thread or asyncio task; pass the result as ``env=`` to
    ``subprocess.run``, ``asyncio.create_subprocess_exec`` and the like. A
    child started without it inherits ``os.environ``, which names only a scope
    that encloses every open one (docs/configuration.md, "Subprocesses").

    Example::

        async def job(n):
            with session_scope(f"job-{n}"):
                await asyncio.create_subprocess_exec("python", "step.py", env=child_env())

    Args:
        base: The environment to start from (``os.environ`` by default).

    Returns:
        A new dict: ``base`` with ``CODEX_SESSION_ID``, ``CODEX_SESSIONS_DIR``
        and ``CODEX_PARENT_SCOPE`` set to the current scope's; with no scope
        open here, ``base`` as it is.

    """
    out = dict(os.environ if base is None else base)
    entry = _current_entry.get()
    while entry is not None and entry.closed:  # a task that outlived its scope
        entry = entry.parent
    if entry is not None:
        out.update(entry.env())
    return out


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


def configured_sinks(queues: list[Any] | None = None) -> list[Sink]:
    """Return the sinks the program's logging and structlog set-up write through.

    The handlers reachable from the loggers (including those behind a
    ``QueueHandler``: its listener's, see :func:`_listener`), then the
    processors in structlog's configured chain (looked at only if structlog is
    imported); the first sink of each folder, so a scope writes its start and
    end records once per folder (docs/configuration.md, "session_scope").

    Args:
        queues: Receives each running ``QueueListener`` that feeds one of
            the sinks (a scope drains them before its end, :func:`_drain`).

    Returns:
        At most one sink per folder; empty when nothing is configured.

    """
    found: list[Sink] = []
    manager = logging.Logger.manager
    loggers: list[Any] = [logging.getLogger(), *list(manager.loggerDict.values())]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", ())):
            _collect(handler, found)
            listener = _listener(handler)
            before = len(found)
            for behind in getattr(listener, "handlers", ()):
                _collect(behind, found)
            if queues is not None and len(found) > before and listener not in queues:
                queues.append(listener)
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


def _listener(handler: object) -> Any:
    """Return the ``QueueListener`` a ``QueueHandler`` feeds, or None.

    The one dictConfig set on it (Python 3.12+), else the running listener
    that reads its queue: a listener made by hand is known only by the
    thread ``QueueListener.start`` runs its ``_monitor`` in.
    """
    listener = getattr(handler, "listener", None)
    if listener is not None:
        return listener
    handlers = sys.modules.get("logging.handlers")  # not imported: no queue
    queue_handler = getattr(handlers, "QueueHandler", None)
    if queue_handler is None or not isinstance(handler, queue_handler):
        return None
    for thread in threading.enumerate():
        owner = getattr(getattr(thread, "_target", None), "__self__", None)
        if isinstance(owner, handlers.QueueListener) and owner.queue is handler.queue:  # type: ignore[union-attr]
            return owner
    return None


#: How long a scope waits at its end for a queue to hand on the records
#: logged before it (a listener that stopped reading is not waited for).
DRAIN_SECONDS: Final = 1.0


def _drain(listeners: list[Any]) -> None:
    """Wait until each running listener has written what its queue held.

    So a scope's ``end`` follows the records logged in it through a
    ``QueueHandler`` (docs/configuration.md, "session_scope"). Called at a
    scope's exit, never from a signal handler. Best effort, at most
    :data:`DRAIN_SECONDS` in all: a queue that never empties (other threads
    logging without pause) is left as it is.
    """
    deadline = time.monotonic() + DRAIN_SECONDS
    for listener in listeners:
        thread = getattr(listener, "_thread", None)
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            continue
        while not _empty(listener.queue) and time.monotonic() < deadline:
            time.sleep(0.0005)
        # The last record taken may still be on its way into a handler:
        # a moment, then each handler's lock (held while it writes).
        time.sleep(0.001)
        for handler in getattr(listener, "handlers", ()):
            lock = getattr(handler, "lock", None)
            if (
                getattr(handler, "sink", None) is not None
                and lock is not None
                and lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            ):
                lock.release()


def _empty(queue: Any) -> bool:
    try:
        return bool(queue.empty())
    except Exception:  # no empty(), or a closed multiprocessing queue: not waited for
        return True


def _collect(owner: object, found: list[Sink]) -> None:
    sink = getattr(owner, "sink", None)
    if isinstance(sink, Sink):
        found.append(sink)
