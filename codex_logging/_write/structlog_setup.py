"""``configure_structlog``: structlog's chain, set up to write every event to the session."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

from codex_logging._record import MAX_DEPTH, SCALARS, normalize, unformatted
from codex_logging._redaction.redactor import Redactor
from codex_logging._write.processor import LEVEL_NAMES, CodexProcessor, level_number
from codex_logging._write.writer import FsyncPolicy

_LEVEL_NUMBERS: Final = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


class _RedactDownstream:
    """Hand the processors after CodexProcessor a redacted copy of the event.

    The session file is redacted by CodexProcessor itself; this keeps the same
    secrets off the console and out of stdlib handlers that render the event
    (CI logs are kept too). A clean event goes on as the very same dict.
    """

    __slots__ = ("redactor",)

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(
        self, _logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        counter = [0]
        redacted = self.redactor.mapping(event_dict, counter)
        # The redactor takes bytes, a dataclass or any other object as it is,
        # and the console renders its repr: such a value holding a secret
        # goes on as the file's copy has it (normalized, then redacted).
        for key, value in redacted.items():
            if key != "exc_info":  # the renderer formats the exception itself
                redacted[key] = self._opaque(value, counter)
        return redacted if counter[0] else event_dict

    def _opaque(self, value: Any, counter: list[int], depth: int = 0) -> Any:
        if value.__class__ is str or isinstance(value, SCALARS):
            return value
        if isinstance(value, dict | list) and depth < MAX_DEPTH:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            out = value.copy()
            for at, item in items:
                out[at] = self._opaque(item, counter, depth + 1)
            return out
        found = [0]
        hidden = self.redactor.value(normalize(value), found)
        if not found[0]:
            return value
        counter[0] += found[0]
        return hidden


def _level_name(name: str) -> str:
    return LEVEL_NAMES.get(name) or name.upper()


def _min_level(value: object) -> int:
    """Return ``min_level`` as a number: an int, or a level name as stdlib and structlog take it.

    Raises:
        ValueError: Neither (checked once here, never at a log call).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        number = logging.getLevelName(value.upper())  # "warning", "WARNING", "NOTICE"
        if isinstance(number, int):
            return number
    msg = f"min_level must be a level number or name (debug ... critical), not {value!r}"
    raise ValueError(msg)


def _number_of(method_name: str) -> int:
    # The level of a method name: the standard five, warn and the like, a
    # level of the program's own ("level 35", a name from addLevelName).
    name = _level_name(method_name)
    number = _LEVEL_NUMBERS.get(name)
    if number is None:
        number = level_number(name)
    return logging.INFO if number is None else number


def _drop_below(min_level: int, drop: type[BaseException]) -> Any:
    def drop_below(_logger: Any, method_name: str, event_dict: Any) -> Any:
        if _number_of(method_name) < min_level:
            raise drop
        return event_dict

    return drop_below


def _filter_by_level(logger: Any, method_name: str, event_dict: Any) -> Any:
    # structlog.stdlib.filter_by_level, for a level of the program's own too
    # (structlog's raises KeyError for a name it does not know).
    import structlog  # noqa: PLC0415 - only configure_structlog needs structlog

    if logger.disabled or _number_of(method_name) < logger.getEffectiveLevel():
        raise structlog.DropEvent
    return event_dict


def configure_structlog(
    *,
    sessions_dir: str | os.PathLike[str] | None = None,
    session_id: str | None = None,
    fsync: FsyncPolicy = "never",
    redact: bool = True,
    redact_keys: Iterable[str] = (),
    redact_patterns: Iterable[str] = (),
    min_level: int | str = logging.DEBUG,
    to_stdlib: bool = False,
    **structlog_kw: Any,
) -> CodexProcessor:
    """Configure structlog with a chain that writes every event to the session.

    The chain merges contextvars, adds the level, the logger name, the stack
    and exception information, writes the event with :class:`CodexProcessor`,
    then renders it, redacted the same way unless ``redact=False``: by default
    to stderr with structlog's ``ConsoleRenderer``; with ``to_stdlib=True`` it
    is handed to stdlib ``logging`` for ``ProcessorFormatter`` (where a
    :class:`CodexHandler` is the one writer, so each event is written once).
    Printf-style arguments work as in stdlib logging
    (``log.info("hello %s", "world")``), events below ``min_level`` are dropped
    before any work in both modes, and ``structlog.get_logger("svc")`` records
    ``logger: "svc"``.

    Example::

        configure_structlog()
        structlog.get_logger().info("step B", kind="message", role="tool")

    Args:
        sessions_dir: As for :class:`CodexProcessor`.
        session_id: As for :class:`CodexProcessor`.
        fsync: As for :class:`CodexProcessor`.
        redact: As for :class:`CodexProcessor`.
        redact_keys: As for :class:`CodexProcessor`.
        redact_patterns: As for :class:`CodexProcessor`.
        min_level: Events below this stdlib level (a number, or a name such as
            ``"warning"``) are dropped before any work.
        to_stdlib: Forward events to stdlib logging instead of printing them.
        **structlog_kw: Passed to ``structlog.configure`` and win over the
            defaults above (``processors``, ``logger_factory``, ...).

    Returns:
        The processor placed in the chain.

    Raises:
        ValueError: ``min_level`` is neither a level number nor a level name.

    """
    import structlog  # noqa: PLC0415 - only this function needs structlog

    level = _min_level(min_level)
    processor = CodexProcessor(
        sessions_dir,
        session_id,
        fsync=fsync,
        redact=redact,
        redact_keys=redact_keys,
        redact_patterns=redact_patterns,
    )
    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # The stack ends at the program's call, not in this module's log method.
        structlog.processors.StackInfoRenderer(additional_ignores=["codex_logging"]),
        structlog.dev.set_exc_info,
        structlog.processors.format_exc_info,
        processor,
    ]
    if processor.redactor is not None:
        chain.append(_RedactDownstream(processor.redactor))
    chain.append(structlog.processors.TimeStamper(fmt="iso"))
    settings: dict[str, Any] = {"cache_logger_on_first_use": True}
    if to_stdlib:
        chain[:0] = [
            _drop_below(level, structlog.DropEvent),
            _filter_by_level,
            structlog.stdlib.add_logger_name,
        ]
        chain.insert(chain.index(processor), structlog.stdlib.PositionalArgumentsFormatter())
        chain.append(_wrap_for_formatter)
        settings["logger_factory"] = structlog.stdlib.LoggerFactory()
        settings["wrapper_class"] = _stdlib_bound_logger_class()
    else:
        chain.append(structlog.dev.ConsoleRenderer(colors=False))
        settings["logger_factory"] = _named_print_logger_factory(sys.stderr)
        settings["wrapper_class"] = _bound_logger_class(level)
    settings["processors"] = chain
    settings.update(structlog_kw)
    if "logger_factory" in structlog_kw:
        settings["logger_factory"] = _keep_names(structlog_kw["logger_factory"])
    structlog.configure(**settings)
    return processor


def _wrap_for_formatter(logger: Any, name: str, event_dict: Any) -> Any:
    # structlog's ProcessorFormatter.wrap_for_formatter, plus the event dict as
    # a record attribute: a QueueHandler's prepare() turns msg into text, and
    # the CodexHandler behind the QueueListener still writes the event's keys.
    import structlog  # noqa: PLC0415 - only configure_structlog needs structlog

    args, kwargs = structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, name, event_dict)
    kwargs["extra"]["_codex_event"] = event_dict
    return args, kwargs


class _Named:
    """A logger a factory made, carrying the name given to ``get_logger``.

    ``structlog.ReturnLoggerFactory`` (a quiet console) and other factories
    make loggers without a ``name``, or one logger for every name: the
    processor reads the name here. Every other attribute is the logger's own.
    """

    __slots__ = ("_logger", "name")

    def __init__(self, logger: Any, name: str) -> None:
        self._logger = logger
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._logger, attribute)

    def __repr__(self) -> str:
        return f"<{self._logger!r} named {self.name!r}>"


def _keep_names(factory: Any) -> Any:
    # The program's factory, its loggers named after get_logger's first
    # argument when they have no name of their own.
    def named_factory(*args: Any) -> Any:
        logger = factory(*args)
        if args and isinstance(args[0], str) and getattr(logger, "name", None) is None:
            return _Named(logger, args[0])
        return logger

    return named_factory


def _named_print_logger_factory(file: Any) -> Any:
    import structlog  # noqa: PLC0415 - only configure_structlog needs structlog

    class NamedPrintLogger(structlog.PrintLogger):
        """A PrintLogger that knows the name given to ``get_logger``."""

        def __init__(self, name: object) -> None:
            super().__init__(file)
            self.name = name if isinstance(name, str) else None

    def factory(*args: Any) -> Any:
        return NamedPrintLogger(args[0] if args else None)

    return factory


@functools.cache
def _bound_logger_class(min_level: int) -> type:
    """Return a structlog bound logger that filters below ``min_level`` and formats ``%`` args.

    Like structlog's filtering bound logger, but the event is optional
    (``structlog.get_logger().info(kind="message")``: docs/configuration.md).
    """
    import structlog  # noqa: PLC0415 - only configure_structlog needs structlog

    def method(name: str, number: int, *, exc_info: bool = False) -> Any:
        if number < min_level:

            def drop(_self: Any, _event: Any = None, *_args: Any, **_kw: Any) -> None:
                return None

            return drop

        def log(self: Any, event: Any = None, *args: Any, **kw: Any) -> Any:
            if exc_info:
                kw.setdefault("exc_info", True)
            return self._proxy_to_logger(name, _interpolate(event, args), **kw)

        return log

    methods: dict[str, Any] = {}
    for name, number in (
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("msg", logging.INFO),
        ("warning", logging.WARNING),
        ("warn", logging.WARNING),
        ("error", logging.ERROR),
        ("err", logging.ERROR),
        ("critical", logging.CRITICAL),
        ("fatal", logging.CRITICAL),
    ):
        methods[name] = method(name, number)
    methods["exception"] = method("exception", logging.ERROR, exc_info=True)

    methods["log"] = _log_at(min_level, methods)
    for name in [*methods]:
        methods["a" + name] = _async(methods[name])
    return type("CodexBoundLogger", (structlog.BoundLoggerBase,), methods)


@functools.cache
def _stdlib_bound_logger_class() -> type:
    """Return structlog's stdlib bound logger, whose ``log`` takes levels of the program too."""
    import structlog  # noqa: PLC0415 - only configure_structlog needs structlog

    class CodexStdlibBoundLogger(structlog.stdlib.BoundLogger):
        def log(self, level: int, event: Any = None, *args: Any, **kw: Any) -> Any:
            """Log at ``level``; one that is not one of the standard five keeps its number."""
            if level in _LEVEL_NUMBERS.values():
                return super().log(level, event, *args, **kw)
            name = str(logging.getLevelName(level)).lower()  # "notice", "level 35"
            if args:
                kw["positional_args"] = args
            try:
                call_args, call_kw = self._process_event(name, event, kw)
            except structlog.DropEvent:
                return None
            return self._logger.log(level, *call_args, **call_kw)

    return CodexStdlibBoundLogger


def _log_at(min_level: int, methods: dict[str, Any]) -> Any:
    # The bound logger's log(level, event, *args).
    def log_at(self: Any, level: int, event: Any = None, *args: Any, **kw: Any) -> Any:
        if level < min_level:
            return None
        name = str(logging.getLevelName(level)).lower()  # "warning", "notice", "level 35"
        if name in methods:
            return self._proxy_to_logger(name, _interpolate(event, args), **kw)
        return _log_own_level(self, level, name, _interpolate(event, args), kw)

    return log_at


def _log_own_level(bound: Any, level: int, name: str, event: Any, kw: dict[str, Any]) -> Any:
    # A level of its own (log(35), a name from addLevelName): the processors
    # see its name, the record's level; the logger at the end gets the method
    # of the standard level at or below it, its loggers having no other.
    import structlog  # noqa: PLC0415 - only configure_structlog needs structlog

    try:
        args, kw = bound._process_event(name, event, kw)  # noqa: SLF001 - as structlog's loggers
    except structlog.DropEvent:
        return None
    below = [known for known, number in _LEVEL_NUMBERS.items() if number <= level]
    final = bound._logger  # noqa: SLF001 - as structlog's own bound loggers
    return getattr(final, below[-1].lower() if below else "debug")(*args, **kw)


def _async(sync: Any) -> Any:
    async def call(self: Any, *args: Any, **kw: Any) -> Any:
        return sync(self, *args, **kw)

    return call


def _interpolate(event: Any, args: tuple[Any, ...]) -> Any:
    # As stdlib logging and structlog's filtering logger: "%s" % args, a
    # single dict argument for "%(name)s"; a mismatch keeps both, never raises.
    if not args or not isinstance(event, str):
        return event
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]  # type: ignore[assignment]  # a mapping for %(name)s
    try:
        return event % args
    except Exception:  # arguments that do not fit: both are kept
        return unformatted(event, args)
