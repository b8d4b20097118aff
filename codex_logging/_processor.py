"""CodexProcessor, the structlog processor, and ``configure_structlog``."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

from codex_logging._handler import written_by_processor
from codex_logging._record import build_record, safe_str
from codex_logging._redact import Redactor
from codex_logging._session import route_session
from codex_logging._settings import sessions_dir_path
from codex_logging._writer import PROCESS, FsyncPolicy, SessionFiles, check_fsync

# structlog names that are not stdlib level names (SPEC: warn -> WARNING,
# exception -> ERROR); the others are upper-cased.
_LEVEL_ALIASES: Final = {
    "warn": "WARNING",
    "exception": "ERROR",
    "fatal": "CRITICAL",
    "msg": "INFO",
    "log": "INFO",
}
#: The usual method and level names, looked up without a call.
_LEVEL_NAMES: Final = {
    **{name: name.upper() for name in ("debug", "info", "warning", "error", "critical")},
    **_LEVEL_ALIASES,
}
_LEVEL_NUMBERS: Final = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
#: Event-dict keys that become record fields rather than extra fields.
_MAPPED: Final = frozenset(
    {"event", "level", "logger", "session_id", "kind", "role", "exc_info", "exception"}
)


class CodexProcessor:
    """A structlog processor that writes each event as one NDJSON record.

    It returns the event dict unchanged, so it can stand anywhere in the chain
    before the renderer, and it never raises: a failed write becomes a
    ``RuntimeWarning``.

    Example::

        structlog.configure(processors=[
            structlog.processors.add_log_level,
            CodexProcessor(),
            structlog.processors.JSONRenderer(),
        ])

    Args:
        sessions_dir: The folder of session files; by default
            ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``, made absolute now.
        session_id: The session for events that name none and run outside a
            ``session_scope``; by default ``CODEX_SESSION_ID`` at each event.
        fsync: ``"never"``, ``"end"`` or ``"always"``.
        redact: Replace secrets before writing (on by default).
        redact_keys: More key names whose values are secret.
        redact_patterns: More regular expressions whose matches are secret.

    Raises:
        ValueError: For an unknown ``fsync`` policy.

    """

    __slots__ = ("files", "redactor", "session_id")

    def __init__(
        self,
        sessions_dir: str | os.PathLike[str] | None = None,
        session_id: str | None = None,
        *,
        fsync: FsyncPolicy = "never",
        redact: bool = True,
        redact_keys: Iterable[str] = (),
        redact_patterns: Iterable[str] = (),
    ) -> None:
        """Fix the folder and the settings now."""
        self.files = SessionFiles(sessions_dir_path(sessions_dir), check_fsync(fsync))
        self.session_id = session_id
        self.redactor = Redactor(redact_keys, redact_patterns) if redact else None

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Write ``event_dict`` and return it untouched."""
        try:
            self.files.write(self.build(logger, method_name, event_dict))
            # If this very dict reaches stdlib logging next, CodexHandler skips it.
            written_by_processor.event = event_dict
        except Exception as error:
            warnings.warn(
                f"codex_logging: could not write a structlog event: {error!r}",
                RuntimeWarning,
                stacklevel=2,
            )
        return event_dict

    def build(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> dict[str, Any]:
        """Return the NDJSON record for a structlog event, routed and redacted.

        Args:
            logger: The wrapped logger (its ``name`` is used when present).
            method_name: The structlog method called (``info``, ``warn``, ...).
            event_dict: The event.

        Returns:
            The record dict, ready for ``SessionFiles.write``.

        """
        get = event_dict.get
        sid = route_session(get("session_id"), self.session_id)
        level = get("level")
        # add_log_level's name when it ran, else the method's.
        if level.__class__ is not str:
            level = method_name
        level = _LEVEL_NAMES.get(level) or level.upper()  # _level_name, without the call
        name = get("logger")
        if name is None:
            name = getattr(logger, "name", None)
        exception, exc_info = get("exception"), get("exc_info")
        # Positional: keyword calls cost measurably on this path (bench/).
        return build_record(
            time.time(),
            sid,
            get("kind"),
            level,
            None if name is None else name if name.__class__ is str else safe_str(name),
            get("event"),
            PROCESS.pid,
            get("role"),
            None
            if exception is None and exc_info is None
            else _exception_text(exception, exc_info),
            event_dict.items(),
            self.redactor,
            _MAPPED,
        )


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
        if not counter[0]:
            return event_dict
        if written_by_processor.event is event_dict:
            # CodexHandler must still recognise the event it should skip.
            written_by_processor.event = redacted
        return redacted


def _level_name(name: str) -> str:
    return _LEVEL_NAMES.get(name) or name.upper()


def _exception_text(rendered: object, exc_info: object) -> str | None:
    if isinstance(rendered, str):
        return rendered  # format_exc_info already ran
    if exc_info is None or exc_info is False:
        return None
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[0] is not None:
        return "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    return None


def _drop_below(min_level: int, drop: type[BaseException]) -> Any:
    def drop_below(_logger: Any, method_name: str, event_dict: Any) -> Any:
        if _LEVEL_NUMBERS.get(_level_name(method_name), logging.INFO) < min_level:
            raise drop
        return event_dict

    return drop_below


def configure_structlog(
    *,
    sessions_dir: str | os.PathLike[str] | None = None,
    session_id: str | None = None,
    fsync: FsyncPolicy = "never",
    redact: bool = True,
    redact_keys: Iterable[str] = (),
    redact_patterns: Iterable[str] = (),
    min_level: int = logging.DEBUG,
    to_stdlib: bool = False,
    **structlog_kw: Any,
) -> CodexProcessor:
    """Configure structlog with a chain that writes every event to the session.

    The chain merges contextvars, adds the level, the stack and exception
    information, writes the event with :class:`CodexProcessor`, then renders it,
    redacted the same way unless ``redact=False``: by default to stderr with
    structlog's ``ConsoleRenderer``; with
    ``to_stdlib=True`` it is handed to stdlib ``logging`` for
    ``ProcessorFormatter`` (a :class:`CodexHandler` on that path skips the event,
    so it is written once).

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
        min_level: Events below this stdlib level are dropped before any work.
        to_stdlib: Forward events to stdlib logging instead of printing them.
        **structlog_kw: Passed to ``structlog.configure`` and win over the
            defaults above (``processors``, ``logger_factory``, ...).

    Returns:
        The processor placed in the chain.

    """
    import structlog  # noqa: PLC0415 - only this function needs structlog

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
        structlog.processors.StackInfoRenderer(),
        structlog.dev.set_exc_info,
        structlog.processors.format_exc_info,
        processor,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    if processor.redactor is not None:
        chain.insert(chain.index(processor) + 1, _RedactDownstream(processor.redactor))
    settings: dict[str, Any] = {"cache_logger_on_first_use": True}
    if to_stdlib:
        chain.insert(1, structlog.stdlib.add_logger_name)
        chain.append(structlog.stdlib.ProcessorFormatter.wrap_for_formatter)
        settings["logger_factory"] = structlog.stdlib.LoggerFactory()
        settings["wrapper_class"] = structlog.stdlib.BoundLogger
    else:
        chain.insert(0, _drop_below(min_level, structlog.DropEvent))
        chain.append(structlog.dev.ConsoleRenderer(colors=False))
        settings["logger_factory"] = structlog.PrintLoggerFactory(sys.stderr)
        # The generic BoundLogger, unlike the filtering one, takes an optional
        # event: structlog.get_logger().info(kind="message") must work (SPEC).
        settings["wrapper_class"] = structlog.BoundLogger
    settings["processors"] = chain
    settings.update(structlog_kw)
    structlog.configure(**settings)
    return processor
