"""CodexProcessor, the structlog processor."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Final

from codex_logging._record import (
    SCALARS,
    STACK_HEADER,
    STANDARD_LEVELS,
    exception_parts,
)
from codex_logging._write.handler import STRUCTLOG_MAPPED, CodexHandler
from codex_logging._write.session import current_session, deferred
from codex_logging._write.sink import OWN, SKIP, FieldNames, SinkOwner, record_head
from codex_logging._write.writer import PROCESS

# Bound once: a module attribute lookup shows on the per-event path.
_time: Final = time.time
_scoped: Final = current_session.get
_StdlibLogger: Final = logging.Logger
#: The keys of an event that __call__ reads besides ``event`` and ``level``
#: (``stack`` is written as a field too, unless it is StackInfoRenderer's text).
_OWN_KEYS: Final = frozenset(
    ("session_id", "logger", "kind", "role", "exception", "exc_info", "stack", "stack_info")
)

# structlog names that are not stdlib level names (docs/record-format.md: warn -> WARNING,
# exception -> ERROR); the others are upper-cased.
_LEVEL_ALIASES: Final = {
    "warn": "WARNING",
    "exception": "ERROR",
    "fatal": "CRITICAL",
    "msg": "INFO",
    "log": "INFO",
}
#: The usual method and level names, looked up without a call.
LEVEL_NAMES: Final = {
    **{name: name.upper() for name in ("debug", "info", "warning", "error", "critical")},
    **_LEVEL_ALIASES,
}
#: Event-dict keys that become record fields rather than extra fields: those
#: the handler maps for structlog's stdlib recipe, but ``positional_args``
#: (the handler formats the message with it; here it stays a field).
_MAPPED: Final = STRUCTLOG_MAPPED - {"positional_args"}


class CodexProcessor(SinkOwner):
    """A structlog processor that writes each event as one NDJSON record.

    It returns the event dict unchanged, so it can stand anywhere in the chain
    before the renderer, and it never raises: a failed write is reported once
    per cause on stderr and counted in :attr:`dropped`.

    When the chain hands events to stdlib ``logging`` (the wrapped logger is a
    ``logging.Logger``) and that logger reaches a :class:`CodexHandler`, or a
    ``QueueHandler`` that may feed one, the handler is the one writer and this
    processor writes nothing: each event is written exactly once.

    Example::

        structlog.configure(processors=[
            structlog.processors.add_log_level,
            CodexProcessor(),
            structlog.processors.JSONRenderer(),
        ])

    Its keywords are :class:`CodexHandler`'s but ``level``, described on
    ``__init__`` (inherited) and in docs/configuration.md.

    """

    __slots__ = ("_names", "_other_class", "_reads_keys")

    def _made(self) -> None:
        # The keys read besides "event" and "level" are marked OWN: the field
        # loop of __call__ finds them (the processor's own cache).
        self._names: FieldNames = {
            **dict.fromkeys(_MAPPED, SKIP),
            **dict.fromkeys(_OWN_KEYS, OWN),
        }
        #: The last logger class found not to be a stdlib Logger: the usual
        #: logger (a PrintLogger, a BytesLogger) skips the isinstance test.
        self._other_class: type | None = None
        #: Set once an event named one of the keys read here: a chain that
        #: adds one to every event (structlog's add_logger_name) then reads
        #: them at once, instead of finding one in the field loop and starting again.
        self._reads_keys = False

    def __call__(  # noqa: C901, PLR0912, PLR0915 - the hot path (bench/)
        self,
        logger: Any,
        method_name: str,
        event_dict: MutableMapping[str, Any],
        _rare: bool = False,  # only the call in the field loop passes it
    ) -> MutableMapping[str, Any]:
        """Write ``event_dict`` and return it untouched.

        As :meth:`CodexHandler.emit` does for a log record: the steps of
        :meth:`Sink.write`, reading the event dict straight into them.
        """
        sink = self.sink
        try:
            cls = logger.__class__
            if cls is not self._other_class:
                if isinstance(logger, _StdlibLogger):
                    if _reaches_codex_handler(logger):
                        if sink.own_id is not None:
                            # The handler writes it, under this processor's
                            # session unless the event or a scope names one.
                            deferred.value = (sink.own_id, event_dict.get("event"))
                        return event_dict
                else:
                    self._other_class = cls
            if _rare or self._reads_keys:
                _rare = True
                get = event_dict.get
                explicit, name, kind, role = (
                    get("session_id"),
                    get("logger"),
                    get("kind"),
                    get("role"),
                )
                exception, exc_info = get("exception"), get("exc_info")
                stack, stack_info = get("stack"), get("stack_info")
            else:
                # The usual event names none of the keys read here; the field
                # loop below finds one if it does, and starts again with
                # _rare (one pass over the keys, not eight lookups: bench/).
                explicit = name = kind = role = None
            level = given_level = event_dict.get("level")
            # add_log_level's name when it ran, else the method's.
            if level.__class__ is not str:
                level = method_name
            known = LEVEL_NAMES.get(level)
            level = known or level.upper()
            if name is None:
                name = getattr(logger, "name", None)
            counter = [0]
            # The usual event names no kind and no role, and a logger name
            # (if any) already found clean: nothing to convert or redact.
            if (
                kind is None
                and role is None
                and (name is None or (name.__class__ is str and name in sink.clean_texts))
            ):
                kind, other = "message", None
            else:
                kind, role, name, other = sink.texts(kind, role, name, counter)
            redactor = sink.redactor
            message = event = event_dict.get("event")
            if message.__class__ is not str:
                message = sink.message(message, counter)
            elif redactor is not None and message not in redactor.clean:
                message = redactor.text(message, counter)
            # The session is filled in once the fields showed whether the
            # event names one.
            if known is not None and role is None:
                # The usual record, in one dict display: structlog's own
                # loggers (PrintLogger, BytesLogger...) have no name.
                if name is None:
                    record: dict[str, Any] = {
                        "ts": _time(),
                        "session_id": None,
                        "kind": kind,
                        "level": level,
                        "message": message,
                        "pid": PROCESS.pid,
                    }
                else:
                    record = {
                        "ts": _time(),
                        "session_id": None,
                        "kind": kind,
                        "level": level,
                        "logger": name,
                        "message": message,
                        "pid": PROCESS.pid,
                    }
            else:
                record = record_head(
                    ts=_time(),
                    sid=None,  # filled in below
                    kind=kind,
                    level=level,
                    levelno=(
                        level_number(level, event_dict.get("level_number"))
                        if known is None and level not in STANDARD_LEVELS  # may carry a number
                        else None
                    ),
                    logger=name,
                    message=message,
                    pid=PROCESS.pid,
                    role=role,
                )
            if other is not None:  # a kind of the event's own
                record["extra.kind"] = other
            if _rare and (
                exception is not None
                or exc_info is not None
                or stack is not None
                or stack_info is not None
            ):
                exc, structured = exception_parts(exception, exc_info, stack, stack_info)
                if exc is not None:
                    record["exc"] = exc if redactor is None else redactor.text(exc, counter)
                if structured is not None:  # dict_tracebacks' form, or the program's own
                    record["exception"] = sink.structured(structured, counter)
            # Sink.add_fields inlined: the usual field is a name seen before
            # with text or a JSON scalar; any other goes through add_field.
            # structlog puts "event" and "level" after the event's own keys:
            # once as many fields as there can be are written, the loop stops.
            left = len(event_dict) - (event is not None) - (given_level is not None)
            if left:
                names = self._names
                for key in event_dict:
                    written = names.get(key)
                    if written.__class__ is str:
                        value = event_dict[key]
                        cls = value.__class__
                        if cls is str:
                            if redactor is not None:
                                value = redactor.text(value, counter)
                            record[written] = value
                        elif cls in SCALARS and (cls is not float or value - value == 0.0):
                            record[written] = value
                        else:
                            sink.add_field(record, key, value, counter, names)
                    elif written is None:
                        sink.add_field(record, key, event_dict[key], counter, names)
                    elif written is SKIP:
                        continue
                    elif not _rare:
                        self._reads_keys = True
                        # This method by name: a subclass's own __call__
                        # (taking three arguments) is not run twice.
                        return CodexProcessor.__call__(
                            self, logger, method_name, event_dict, _rare=True
                        )
                    elif key == "stack" and not (
                        stack.__class__ is str and stack.startswith(STACK_HEADER)
                    ):
                        # A field of its own, unless it is StackInfoRenderer's
                        # text (in exc above); not cached under its mark.
                        sink.add_field(record, key, stack, counter, {})
                    else:
                        continue
                    left -= 1
                    if not left:
                        break
            # Sink.route inlined for its usual answers: the scope's session or
            # the sink's own (already valid) id.
            sid = None if explicit is not None else _scoped() or sink.own_id
            if sid is None:
                sid = sink.route(explicit)
            record["session_id"] = sid
            sink.append(record, sid, kind, counter[0])
        except Exception as error:
            sink.report(error)
        return event_dict


def level_number(name: str, given: object = None) -> int | None:
    """Return the number of a level that is not one of the standard five.

    Args:
        name: The level name, upper case.
        given: A number the event carries (structlog's ``add_log_level_number``).

    Returns:
        ``given`` when it is an int, else the number ``logging.addLevelName``
        registered for ``name`` (``Level 25`` -> 25), else ``None``.

    """
    if isinstance(given, int) and not isinstance(given, bool):
        return given
    number = logging.getLevelName(name)
    if isinstance(number, int):
        return number
    if name.startswith("LEVEL ") and name[6:].isdigit():
        return int(name[6:])
    return None


def _reaches_codex_handler(logger: logging.Logger) -> bool:
    # The stdlib bridge: when the record will reach a CodexHandler, the handler
    # writes it (one writer, no handshake). A QueueHandler without a known
    # listener is taken to feed one: QueueHandler -> QueueListener(CodexHandler).
    # logging.handlers is looked up, not imported: without it there is no
    # QueueHandler, and a hook script need not pay for importing it.
    handlers_module = sys.modules.get("logging.handlers")
    queue_handler = getattr(handlers_module, "QueueHandler", None)
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, CodexHandler):
                return True
            if queue_handler is not None and isinstance(handler, queue_handler):
                listener = getattr(handler, "listener", None)
                if listener is None or any(
                    isinstance(h, CodexHandler) for h in getattr(listener, "handlers", ())
                ):
                    return True
        current = current.parent if current.propagate else None
    return False
