"""CodexHandler: a standard ``logging.Handler`` that appends session records."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from itertools import islice
from typing import Any, Final

from codex_logging._record import build_record
from codex_logging._redact import Redactor
from codex_logging._session import route_session
from codex_logging._settings import sessions_dir_path
from codex_logging._writer import PROCESS, WRITER, FsyncPolicy, SessionFiles, check_fsync

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
    }
)
#: Record attributes never written as extra fields: LogRecord's own, and the
#: ``extra`` keys that become record fields.
_NOT_EXTRA: Final = _RECORD_ATTRS | {"session_id", "kind", "role"}


# The event dict the CodexProcessor wrote last in this thread. When structlog
# forwards that same dict to stdlib logging (ProcessorFormatter.wrap_for_formatter),
# the handler skips it instead of writing the record twice.
class _LastWritten(threading.local):
    # A class default: reading an unset thread-local attribute would raise
    # and catch AttributeError on every record, which costs about a microsecond.
    event: object = None


written_by_processor = _LastWritten()


class CodexHandler(logging.Handler):
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
        super().__init__(level)
        self.files = SessionFiles(sessions_dir_path(sessions_dir), check_fsync(fsync))
        self.session_id = session_id  # checked at each record: bad ids go to handleError
        self.redactor = Redactor(redact_keys, redact_patterns) if redact else None
        self._format_exception = logging.Formatter().formatException

    @property
    def sessions_dir(self) -> str:
        """The absolute folder this handler writes to."""
        return self.files.sessions_dir

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

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``; any failure goes to ``handleError``, never to the caller."""
        try:
            event = written_by_processor.event
            if event is not None and record.msg is event:
                written_by_processor.event = None
                return
            self.files.write(self.build(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def build(self, record: logging.LogRecord) -> dict[str, Any]:
        """Return the NDJSON record for a log record, routed and redacted.

        Args:
            record: The log record.

        Returns:
            The record dict, ready for ``SessionFiles.write``.

        """
        fields = record.__dict__
        # LogRecord.__init__ sets its own attributes first, so anything from
        # ``extra`` comes after them: read only that tail. A record built some
        # other way (its first key is not "name") is filtered in full.
        if len(fields) <= _PLAIN_RECORD_SIZE:
            extra: Iterable[tuple[str, Any]] = ()
        elif next(iter(fields)) == "name":
            extra = islice(fields.items(), _PLAIN_RECORD_SIZE, None)
        else:
            extra = fields.items()
        get = fields.get
        exc = None
        if record.exc_info:
            exc = self._format_exception(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = f"{exc}\n{record.stack_info}" if exc else record.stack_info
        # Positional: keyword calls cost measurably on this path (bench/).
        return build_record(
            record.created,
            route_session(get("session_id"), self.session_id),
            get("kind"),
            record.levelname,
            record.name,
            record.getMessage(),
            record.process if record.process is not None else PROCESS.pid,
            get("role"),
            exc,
            extra,
            self.redactor,
            _NOT_EXTRA,
        )

    def close(self) -> None:
        """Release the open session files of this handler's folder; safe to call twice.

        The descriptors are shared with other handlers and processors writing
        to the same folder: they reopen theirs at their next record, as this
        handler does if it is used again.
        """
        try:
            WRITER.close_all(self.files.sessions_dir)
        finally:
            super().close()

    def __repr__(self) -> str:
        """Show the folder and the level, like FileHandler."""
        return f"<{type(self).__name__} {self.sessions_dir} ({logging.getLevelName(self.level)})>"
