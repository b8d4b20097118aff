"""CodexHandler: a standard ``logging.Handler`` that appends session records."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from itertools import islice
from typing import Any, Final

from codex_logging._record import (
    SCALARS,
    STACK_HEADER,
    STANDARD_LEVELS,
    exception_parts,
    safe_str,
    unformatted,
)
from codex_logging._write.session import STAMPS, current_session, deferred, stamped_session
from codex_logging._write.sink import SinkOwner, record_head
from codex_logging._write.writer import PROCESS, WRITER, FsyncPolicy

_scoped: Final = current_session.get
_LogRecord: Final = logging.LogRecord
#: logging's own LogRecord.getMessage, inlined in emit for records that use
#: it; ``None`` if a program replaced it before this module was imported.
_STOCK_GET_MESSAGE: Final = (
    _LogRecord.getMessage
    if getattr(_LogRecord.getMessage, "__qualname__", None) == "LogRecord.getMessage"
    and getattr(_LogRecord.getMessage, "__module__", None) == "logging"
    else None
)

_PLAIN_RECORD: Final = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
_PLAIN_RECORD_SIZE: Final = len(_PLAIN_RECORD)
#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRS: Final = frozenset(
    {
        *_PLAIN_RECORD,
        "message",
        "asctime",
        "taskName",
        # Set by structlog's ProcessorFormatter.wrap_for_formatter: plumbing, not data.
        "_logger",
        "_name",
        "_from_structlog",
        # Set by configure_structlog(to_stdlib=True): the event dict, kept
        # across a QueueHandler, whose prepare() replaces msg with text.
        "_codex_event",
    }
)
#: Record attributes never written as extra fields: LogRecord's own, and the
#: ``extra`` keys that become record fields.
_NOT_EXTRA: Final = _RECORD_ATTRS | {"session_id", "kind", "role"}
#: Keys of a structlog event dict that become record fields, not extra fields.
STRUCTLOG_MAPPED: Final = frozenset(
    {
        "event",
        "level",
        "logger",
        "session_id",
        "kind",
        "role",
        "exc_info",
        "exception",
        "stack_info",
        "positional_args",
    }
)
#: The same, when the event's ``stack`` is StackInfoRenderer's text (written in ``exc``).
STRUCTLOG_MAPPED_STACK: Final = STRUCTLOG_MAPPED | {"stack"}
#: Under configure_structlog(to_stdlib=True), whose TimeStamper sets
#: ``timestamp`` for the other handlers' formatters: the record has ``ts``.
_STAMPED: Final = {
    STRUCTLOG_MAPPED: STRUCTLOG_MAPPED | {"timestamp"},
    STRUCTLOG_MAPPED_STACK: STRUCTLOG_MAPPED_STACK | {"timestamp"},
}


_TRACEBACK: Final = "\nTraceback (most recent call last):\n"
_STACK: Final = "\nStack (most recent call last):\n"


def _split_prepared(message: str) -> tuple[str, str | None]:
    """Take the traceback back out of a message ``QueueHandler.prepare`` built.

    ``prepare()`` formats the record, folding its traceback and stack into the
    message text, and sets ``args`` to ``None`` (which no logging call does).
    The traceback goes back to ``exc``, as for a record logged directly.
    """
    cut = min(
        (at for at in (message.find(_TRACEBACK), message.find(_STACK)) if at >= 0), default=-1
    )
    if cut < 0:
        return message, None
    return message[:cut], message[cut + 1 :]


class CodexHandler(SinkOwner, logging.Handler):
    """Append every log record to its session's NDJSON file.

    Usable from ``logging.config.dictConfig`` as
    ``{"class": "codex_logging.CodexHandler"}``; the keyword arguments below are
    dictConfig keys.

    Example::

        handler = CodexHandler(fsync="end")
        logging.getLogger().addHandler(handler)
        logging.getLogger("app").info("step %d", 1, extra={"role": "tool"})

    Args:
        sessions_dir: The folder of session files; by default
            ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``, made absolute now.
        session_id: The session for records that name none and run outside a
            ``session_scope``; by default ``CODEX_SESSION_ID`` at each record.
        fsync: ``"never"``, ``"end"`` (after each ``end`` record) or ``"always"``.
        redact: Replace secrets before writing (on by default).
        redact_keys: More key names whose values are secret.
        redact_patterns: More regular expressions whose matches are secret.
        level: The handler's level.

    Raises:
        ValueError: For an unknown ``fsync`` policy.

    """

    def __init__(
        self,
        sessions_dir: str | os.PathLike[str] | None = None,
        session_id: str | None = None,
        *,
        fsync: FsyncPolicy = "never",
        redact: bool = True,
        redact_keys: Iterable[str] = (),
        redact_patterns: Iterable[str] = (),
        level: int | str = logging.NOTSET,
    ) -> None:
        """Fix the folder and the settings now, so a later chdir changes nothing."""
        # The sink first: a bad setting raises before Handler.__init__ registers
        # the handler for logging.shutdown(), which would close a half-made one.
        SinkOwner.__init__(
            self,
            sessions_dir,
            session_id,
            fsync=fsync,
            redact=redact,
            redact_keys=redact_keys,
            redact_patterns=redact_patterns,
        )
        logging.Handler.__init__(self, level)

    def _made(self) -> None:
        self.sink.logging_handler = True
        self._names = self.sink.field_names(_NOT_EXTRA)
        self._format_exception = logging.Formatter().formatException

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit without ``Handler.lock``: the writer is thread-safe."""
        if not self.filters:  # the usual case: Filterer.filter would return True
            self.emit(record)
            return True
        result: object = self.filter(record)  # a LogRecord from 3.12 on
        if isinstance(result, logging.LogRecord):
            record = result
        if result:
            self.emit(record)
        return bool(result)

    def emit(self, record: logging.LogRecord) -> None:  # noqa: C901, PLR0912, PLR0915 - the hot path (bench/)
        """Write ``record``; any failure goes to ``handleError``, never to the caller.

        The steps of :meth:`Sink.write` (route, normalise, redact, build,
        encode, append), reading the record's attributes straight into them;
        one hot function per entry point (docs/performance.md).
        """
        sink = self.sink
        try:
            # The record's attributes are read from its __dict__: a record
            # with ``extra`` fields has no shared-key dict, and subscripts
            # cost less than attribute lookups then (bench/).
            fields = record.__dict__
            if "_logger" in fields:  # from structlog (ProcessorFormatter.wrap_for_formatter)
                event = record.msg if isinstance(record.msg, dict) else fields.get("_codex_event")
                if isinstance(event, dict):
                    self._emit_structlog(record, event, stamped="_codex_event" in fields)
                    return
            # Sink.route inlined for its usual answers: the scope's session
            # (where the record was made, else here) or the sink's own id.
            explicit = fields.get("session_id")
            sid = (
                None
                if explicit is not None
                else (STAMPS and stamped_session(record)) or _scoped() or sink.own_id
            )
            if sid is None:
                sid = sink.route(explicit)
            record_class = record.__class__
            plain = record_class is _LogRecord
            args = fields["args"]
            counter = [0]
            # LogRecord.getMessage inlined, unless the record's class has
            # another (a subclass, or a program that replaced it).
            template: str | None = None
            if record_class.getMessage is _STOCK_GET_MESSAGE:
                message = fields["msg"]
                if message.__class__ is not str:
                    message = safe_str(message)  # its repr if str() raises
                if args:
                    template = message
                    if args.__class__ is dict and sink.redactor is not None:
                        # "%(password)s" % {...}: the dict's names say what is secret.
                        args = sink.redactor.template_args(args, counter)
                    try:
                        message %= args
                    except Exception:  # arguments that do not fit: both are written
                        message = unformatted(message, args)
            else:
                try:
                    message = record.getMessage()
                except Exception:  # as above, for a record class of its own
                    message = unformatted(fields["msg"], args)
            if fields["exc_info"] or fields["exc_text"] or fields["stack_info"]:
                exc = self._record_exception(record)
            elif args is None:
                message, exc = _split_prepared(message)
                # basicConfig(handlers=[QueueHandler(q)]) gives the queue's
                # handler logging.BASIC_FORMAT, which prepare() bakes in.
                basic = f"{fields['levelname']}:{fields['name']}:"
                message = message.removeprefix(basic)
            else:
                exc = None
            name = fields["name"]
            kind = fields.get("kind")
            role = fields.get("role")
            # The usual record names no kind and no role, and its logger name
            # was found clean before: nothing to convert or redact.
            other = None  # a kind of its own, kept as extra.kind
            if kind is None and role is None and name.__class__ is str and name in sink.clean_texts:
                kind = "message"
            else:
                kind, role, name, other = sink.texts(kind, role, name, counter)
            redactor = sink.redactor
            if redactor is not None:
                if not args:
                    message = redactor.text(message, counter)
                else:
                    # A message formatted from its arguments will not come
                    # again: remembering it as clean would only cost time. Not
                    # scanned at all if its template stays clean filled with
                    # non-negative ints, and they are ("processing step %d"):
                    # the scan is 3% of a record (bench/).
                    digits: bool | None = False
                    if template is not None and args.__class__ is tuple:
                        digits = redactor.digit_templates.get(template)
                        if digits is None:
                            digits = redactor.digits_stay_clean(template)
                        if digits:
                            for arg in args:
                                if arg.__class__ is not int or arg < 0:
                                    digits = False
                                    break
                    if not digits:
                        message = redactor.scan(message, counter)
                if exc is not None:
                    exc = redactor.text(exc, counter)
            level = fields["levelname"]
            pid = fields["process"]
            if pid is None:
                pid = PROCESS.pid
            standard = level in STANDARD_LEVELS
            line: dict[str, Any]
            if standard and name is not None and role is None and exc is None:
                # The usual record, in one dict display (bench/).
                line = {
                    "ts": fields["created"],
                    "session_id": sid,
                    "kind": kind,
                    "level": level,
                    "logger": name,
                    "message": message,
                    "pid": pid,
                }
            else:  # loguru's SUCCESS, a "Level 25", no logger name, a role, a traceback
                line = record_head(
                    ts=fields["created"],
                    sid=sid,
                    kind=kind,
                    level=level,
                    levelno=fields["levelno"],
                    logger=name,
                    message=message,
                    pid=pid,
                    role=role,
                )
                if exc is not None:
                    line["exc"] = exc
            # LogRecord.__init__ sets its own attributes first, so anything from
            # ``extra`` comes after them: read only that tail, from the end
            # (skipping the first twenty items one by one cost more than the
            # rest of this block). A record of a subclass whose first key is
            # not "name" was built some other way: it is filtered in full.
            added = len(fields) - _PLAIN_RECORD_SIZE
            if added > 0:  # a kind of the record's own came this way too
                if other is not None:
                    line["extra.kind"] = other
                keys: Iterable[str]
                if not plain and next(iter(fields)) != "name":
                    keys = fields
                elif added == 1:
                    keys = (next(reversed(fields)),)
                else:
                    keys = reversed(list(islice(reversed(fields), added)))
                # Sink.add_fields inlined: the usual field is a name seen
                # before with text or a JSON scalar; any other goes through
                # add_field.
                names = self._names
                for key in keys:
                    value = fields[key]
                    written = names.get(key)
                    if written is None:
                        sink.add_field(line, key, value, counter, names)
                    elif written.__class__ is str:  # not SKIP
                        cls = value.__class__
                        if cls is str:
                            if redactor is not None:
                                value = redactor.text(value, counter)
                            line[written] = value
                        elif cls in SCALARS and (cls is not float or value - value == 0.0):
                            line[written] = value
                        else:
                            sink.add_field(line, key, value, counter, names)
            sink.append(line, sid, kind, counter[0])
        except RecursionError:  # as logging's own handlers do
            raise
        except Exception:
            self.handleError(record)

    def _emit_structlog(
        self, record: logging.LogRecord, event: dict[str, Any], *, stamped: bool = False
    ) -> None:
        # structlog's stdlib recipe (ProcessorFormatter.wrap_for_formatter): the
        # event dict is the message; its keys become fields (docs/configuration.md, "structlog").
        get = event.get
        # A CodexProcessor with its own session that left this event to the
        # handler (in this thread, for this very event, even copied since).
        left = getattr(deferred, "value", None)
        if left is not None:
            deferred.value = None
            if left[1] is not get("event"):
                left = None
        session = get("session_id")
        if session is None:  # the scope where the record was made, if it was stamped
            session = stamped_session(record)
        if session is None and left is not None and current_session.get() is None:
            session = left[0]  # the processor's own id, where its own write would go
        message = get("event")
        args = get("positional_args")
        if args and isinstance(message, str):  # the chain had no PositionalArgumentsFormatter
            try:
                message = message % args
            except Exception:  # arguments that do not fit: both are written
                message = unformatted(message, args)
        stack = get("stack")
        exc, structured = exception_parts(
            get("exception"), get("exc_info"), stack, get("stack_info")
        )
        taken = isinstance(stack, str) and stack.startswith(STACK_HEADER)
        skip = STRUCTLOG_MAPPED_STACK if taken else STRUCTLOG_MAPPED
        if stamped:
            skip = _STAMPED[skip]
        name = get("logger")
        self.sink.write(
            message,
            ts=record.created,
            level=record.levelname,
            pid=record.process if record.process is not None else PROCESS.pid,
            session=session,
            kind=get("kind"),
            logger=record.name if name is None else name,
            role=get("role"),
            exc=exc if exc is not None else self._record_exception(record),
            extra=event.items(),
            skip=skip,
            levelno=record.levelno,
            exception=structured,
        )

    def _record_exception(self, record: logging.LogRecord) -> str | None:
        exc = None
        if record.exc_info:
            exc = self._format_exception(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = f"{exc}\n{record.stack_info}" if exc else record.stack_info
        return exc

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802, ARG002 - logging's
        """Count the dropped record and say why on stderr once per cause.

        Never a traceback per record (docs/guarantees.md); silent, but still
        counted, when ``logging.raiseExceptions`` is false, as in production.

        Args:
            record: The record that could not be written.

        """
        self.sink.report(sys.exc_info()[1], loud=logging.raiseExceptions)

    def close(self) -> None:
        """Release the open session files of this handler's folder; safe to call twice.

        The descriptors are shared with other handlers and processors writing
        to the same folder: they reopen theirs at their next record, as this
        handler does if it is used again.
        """
        try:
            lost = WRITER.close_all(self.sink.sessions_dir)
            if lost:  # records written to a removed file since the last check
                self.sink.lost(lost)
        finally:
            super().close()

    def __repr__(self) -> str:
        """Show the folder and the level, like FileHandler."""
        return f"<{type(self).__name__} {self.sessions_dir} ({logging.getLevelName(self.level)})>"
