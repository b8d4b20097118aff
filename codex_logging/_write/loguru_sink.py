"""A loguru sink that writes the same records as :class:`CodexHandler`.

``logger.add(codex_logging.loguru_sink)`` (or ``logger.add(LoguruSink(...))``
for settings) writes each loguru record to its session: the message without
loguru's format, the values bound with ``bind()`` or passed as keywords as
fields, the exception once in ``exc``, the level by name (and number when it
is not one of the standard five), routed and redacted as the handler does
(docs/configuration.md "loguru"). loguru itself is never imported here.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Final

from codex_logging._record import exception_parts
from codex_logging._write.sink import SinkOwner

#: ``extra`` keys that become record fields rather than extra fields.
_MAPPED: Final = frozenset({"session_id", "kind", "role"})


class LoguruSink(SinkOwner):
    """A loguru sink: ``logger.add(LoguruSink(fsync="end"))``.

    It never raises into the program: a record it cannot write is counted in
    :attr:`dropped` and reported once per cause on stderr, as the handler does.

    Example::

        from loguru import logger
        from codex_logging import LoguruSink

        logger.add(LoguruSink(fsync="end"), level="TRACE")
        logger.bind(role="tool", tokens=812).success("step B")

    Its keywords are :class:`CodexHandler`'s but ``level``, described on
    ``__init__`` (inherited) and in docs/configuration.md.

    """

    __slots__ = ()

    def __call__(self, message: Any) -> None:
        """Write the record of one loguru message (loguru calls this)."""
        try:
            record = message.record
            extra = record["extra"]
            get = extra.get
            exc = None
            exception = record["exception"]
            if exception is not None and exception[0] is not None:
                exc = exception_parts(None, tuple(exception))[0]
            level = record["level"]
            process = record["process"]
            self.sink.write(
                record["message"],
                ts=record["time"].timestamp(),
                level=level.name,
                pid=process.id if process is not None else os.getpid(),
                session=get("session_id"),
                kind=get("kind"),
                logger=record["name"],
                role=get("role"),
                exc=exc,
                extra=extra.items(),
                skip=_MAPPED,
                levelno=level.no,
            )
        except Exception as error:
            self.sink.report(error)

    def __repr__(self) -> str:
        """Show the folder."""
        return f"<{type(self).__name__} {self.sessions_dir}>"


_default: list[LoguruSink] = []
_default_lock = threading.Lock()


def loguru_sink(message: Any) -> None:
    """Write one loguru message with the default settings: ``logger.add(loguru_sink)``.

    Its folder is settled at the first record (``CODEX_SESSIONS_DIR`` or
    ``.codex/sessions``); use :class:`LoguruSink` to choose the folder, fsync
    or redaction.

    Args:
        message: The message loguru hands to a sink.

    """
    if not _default:
        with _default_lock:
            if not _default:
                _default.append(LoguruSink())
    _default[0](message)
