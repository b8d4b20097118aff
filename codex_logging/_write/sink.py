"""The sink: the one write pipeline every record goes through.

A sink owns where a session is written and how: the folder, the fsync policy,
the redactor, the default session id, its caches, and how a failure is
reported. Every record takes the same steps, in this order: route the
session, normalise every value into JSON data, redact, encode, append
(ARCHITECTURE.md, "Invariants"). :meth:`Sink.write` takes them for
:func:`session_scope` and structlog's stdlib recipe; ``CodexHandler.emit`` and
``CodexProcessor.__call__`` read their record or event straight into the same
steps, on the helpers here (:meth:`Sink.route`, :meth:`Sink.texts`,
:meth:`Sink.add_fields`, :meth:`Sink.append`), which costs less than building
the arguments of :meth:`Sink.write` (docs/performance.md).
``tests/test_sink.py::TestOneRecordWhateverThePath`` holds the three to the
same lines.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import sys
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Final

from codex_logging import _record
from codex_logging._errors import InvalidSessionId, UnsafePathError, WriteError
from codex_logging._record import (
    CORE_FIELDS,
    FAST_OPTIONS,
    KINDS,
    OTEL_TRACE,
    STANDARD_LEVELS,
    add_trace_context,
    encode,
    key_text,
    normalize,
    safe_str,
)
from codex_logging._redaction.redactor import Redactor
from codex_logging._settings import (
    CACHE_SIZE,
    ENV_SESSION_ID,
    ENV_SESSIONS_DIR,
    invalid_id_message,
    is_valid_session_id,
    sessions_dir_path,
    validate_session_id,
)
from codex_logging._write.session import current_session, get_session_id
from codex_logging._write.writer import WRITER, FsyncPolicy, check_fsync

#: Distinct (cause, folder) pairs reported per process; past this, failures
#: are only counted (a bound on memory, far above one program's folders).
MAX_REPORTED: Final = 1024
#: Kinds of failure by errno: one stderr line for each kind, whichever file or
#: byte count the message names (EMFILE for 50 session files is one cause).
_ERRNO_KINDS: Final = {
    errno.EMFILE: "out of descriptors",
    errno.ENFILE: "out of descriptors",
    errno.ENOSPC: "out of space",
    errno.EDQUOT: "out of space",
    errno.EFBIG: "out of space",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EROFS: "permission",
}
#: (cause, sessions folder) pairs this process has reported on stderr.
_REPORTED: set[tuple[tuple[str, str], str]] = set()
#: Texts up to this length that held no secret are remembered per sink.
CLEAN_TEXT_LENGTH: Final = 128


class _Mark(enum.Enum):
    SKIP = enum.auto()
    OWN = enum.auto()


#: In a field-name cache (:meth:`Sink.field_names`): a name that is not an
#: extra field (it was mapped to a record field).
SKIP: Final = _Mark.SKIP
#: In the processor's cache: a name the processor reads itself (docs/record-format.md).
OWN: Final = _Mark.OWN
#: A field-name cache: field name as given -> the name written, for names
#: that held no secret and whose values are not secret by their name; or SKIP.
FieldNames = dict[object, "str | _Mark"]


def record_head(
    *,
    ts: float,
    sid: str | None,
    kind: object,
    level: str,
    levelno: int | None,
    logger: object,
    message: object,
    pid: int,
    role: object,
) -> dict[str, Any]:
    """Return a record's own fields, in the order of docs/record-format.md.

    ``levelno`` is written only for a level that is not one of the standard
    five names, ``logger`` and ``role`` only when given. The hot paths build
    the usual record (a standard level, a logger, no role) in one dict display
    and come here for the others.
    """
    record: dict[str, Any] = {"ts": ts, "session_id": sid, "kind": kind, "level": level}
    if levelno is not None and level not in STANDARD_LEVELS:
        record["levelno"] = levelno
    if logger is not None:
        record["logger"] = logger
    record["message"] = message
    record["pid"] = pid
    if role is not None:
        record["role"] = role
    return record


class Sink:
    """Where and how one handler, processor or scope writes its records.

    Made from settings already checked: by :class:`SinkOwner` from an entry
    point's keywords, or by ``session_scope`` for a folder no handler or
    processor writes to.

    Args:
        sessions_dir: The absolute folder of session files.
        session_id: The session for records that name none and run outside a
            ``session_scope`` (checked at each record).
        fsync: The fsync policy.
        redactor: What replaces secrets before writing; ``None``: nothing is.

    """

    __slots__ = (
        "__weakref__",
        "_field_names",
        "clean_texts",
        "dropped",
        "fsync",
        "logging_handler",
        "own_id",
        "paths",
        "redactor",
        "session_id",
        "sessions_dir",
    )

    def __init__(
        self,
        sessions_dir: str,
        session_id: str | None,
        fsync: FsyncPolicy,
        redactor: Redactor | None,
    ) -> None:
        """Keep the folder and the settings, and start the counts and caches empty."""
        self.sessions_dir = sessions_dir
        #: Checked at each record, so a bad id is reported, never raised.
        self.session_id = session_id
        self.fsync = fsync
        self.redactor = redactor
        #: Records that could not be written (a count the program can
        #: read: docs/guarantees.md, "Writing").
        self.dropped = 0
        #: A ``CodexHandler``'s sink: like ``handleError``, it reports on
        #: stderr only while ``logging.raiseExceptions`` is true.
        self.logging_handler = False
        # Caches read by the hot paths (CodexHandler.emit, CodexProcessor.__call__):
        #: The own session id when it is valid; an invalid one is left to
        #: :meth:`route`, which reports it at each record.
        self.own_id = session_id if is_valid_session_id(session_id) else None
        #: Session id -> its file.
        self.paths: dict[str, str] = {}
        #: One field-name cache (:data:`FieldNames`) per set of mapped names.
        self._field_names: dict[AbstractSet[str], FieldNames] = {}
        #: Logger names, kinds and roles that held no secret.
        self.clean_texts: set[str] = set()

    def path(self, session_id: str) -> str:
        """Return the file of a (validated) session.

        Args:
            session_id: The session.

        Returns:
            ``<sessions_dir>/<session_id>.ndjson``.

        """
        found = self.paths.get(session_id)
        if found is None:
            found = os.path.join(self.sessions_dir, session_id + ".ndjson")
            if len(self.paths) < CACHE_SIZE:  # bounded: a program may mint ids forever
                self.paths[session_id] = found
        return found

    def write(
        self,
        message: object,
        *,
        ts: float,
        level: str,
        pid: int,
        session: object = None,
        kind: object = None,
        logger: object = None,
        role: object = None,
        exc: str | None = None,
        extra: Iterable[tuple[Any, Any]] = (),
        skip: AbstractSet[str] = frozenset(),
        levelno: int | None = None,
        exception: object = None,
    ) -> None:
        """Route, normalise, redact, encode and append one record.

        The record's fields come in docs/record-format.md's order; names of core fields in
        ``extra`` are kept as ``extra.<name>``. ``session_scope`` and records
        from structlog's stdlib recipe come here; ``CodexHandler.emit`` and
        ``CodexProcessor.__call__`` take the same steps on the same helpers
        (one hot function per entry point: docs/performance.md).

        Args:
            message: The message.
            ts: Unix seconds.
            level: The level name, upper case.
            pid: The writing process.
            session: The session named on the record, or ``None``.
            kind: ``start``, ``message``, ``end``; ``None`` means ``message``.
            logger: The logger name, or ``None``.
            role: Optional role.
            exc: Optional formatted traceback.
            extra: Further fields as ``(name, value)`` pairs.
            skip: Names in ``extra`` already mapped to record fields.
            levelno: The level's number, written when ``level`` is not one
                of the standard five names.
            exception: A structured exception the program built (structlog's
                ``dict_tracebacks``), written under ``exception``.

        Raises:
            InvalidSessionId: The routed session id is invalid.
            OSError: The file cannot be written (WriteError, UnsafePathError...).

        """
        sid = self.route(session)
        counter = [0]
        kind, role, logger, other = self.texts(kind, role, logger, counter)
        message = self.message(message, counter)
        record = record_head(
            ts=ts,
            sid=sid,
            kind=kind,
            level=level,
            levelno=levelno,
            logger=logger,
            message=message,
            pid=pid,
            role=role,
        )
        if other is not None:
            record["extra.kind"] = other
        if exc is not None:
            record["exc"] = exc if self.redactor is None else self.redactor.text(exc, counter)
        if exception is not None:
            record["exception"] = self.structured(exception, counter)
        self.add_fields(record, extra, skip, counter)
        self.append(record, sid, kind, counter[0])

    def route(self, explicit: object) -> str:
        """Return the session of a record; the first match wins.

        The order is docs/configuration.md's "Which session a record goes to".

        Args:
            explicit: The session named on the record, or ``None``.

        Returns:
            The record's session, the scope's, the sink's own id, or the
            environment's (a new uuid4, exported, when it has none).

        Raises:
            InvalidSessionId: The id that wins is invalid.

        """
        if explicit is not None:
            return validate_session_id(explicit)
        scoped = current_session.get()
        if scoped is not None:
            return scoped
        if self.own_id is not None:
            return self.own_id
        if self.session_id is None:
            return get_session_id()
        return validate_session_id(self.session_id)  # invalid: raises at each record

    def texts(
        self, kind: object, role: object, logger: object, counter: list[int]
    ) -> tuple[str, Any, Any, str | None]:
        """Return kind, role and logger name as text, redacted (``None`` stays ``None``).

        Args:
            kind: The record's kind; ``None`` means ``message``.
            role: Its role, or ``None``.
            logger: Its logger name, or ``None``.
            counter: A one-item list counting replacements.

        Returns:
            ``(kind, role, logger, other)``: a kind that is none of ``start``,
            ``message`` and ``end`` makes the record a ``message``, the text
            given kept as ``other`` (written as ``extra.kind``), else None.

        """
        kind, other = _kind_text(kind)
        if role is not None and role.__class__ is not str:
            role = safe_str(role)
        if logger is not None and logger.__class__ is not str:
            logger = safe_str(logger)
        if self.redactor is not None:
            clean = self.clean_texts
            if kind not in clean:
                kind = self._text(kind, counter)
            if role is not None and role not in clean:
                role = self._text(role, counter)
            if logger is not None and logger not in clean:
                logger = self._text(logger, counter)
            if other is not None:
                other = self._text(other, counter)
        return kind, role, logger, other

    def message(self, message: object, counter: list[int]) -> str:
        """Return a message as text, redacted.

        Args:
            message: Anything; ``None`` is the empty message.
            counter: A one-item list counting replacements.

        Returns:
            The text to write.

        """
        if message.__class__ is not str:
            message = "" if message is None else safe_str(message)
        if self.redactor is None:
            return message
        return self.redactor.text(message, counter)

    def structured(self, value: object, counter: list[int]) -> Any:
        """Return a structured value (an exception's dict form) normalised and redacted.

        Args:
            value: Anything.
            counter: A one-item list counting replacements.

        Returns:
            JSON data.

        """
        data = normalize(value)
        return data if self.redactor is None else self.redactor.value(data, counter)

    def field_names(self, skip: AbstractSet[str]) -> FieldNames:
        """Return the field-name cache for records whose names in ``skip`` are mapped.

        Args:
            skip: Names that become record fields, never extra fields.

        Returns:
            The cache, its ``skip`` names marked :data:`SKIP`; filled by
            :meth:`add_field`.

        """
        found = self._field_names.get(skip)
        if found is None:
            found = self._field_names[skip] = dict.fromkeys(skip, SKIP)
        return found

    def add_fields(
        self,
        record: dict[str, Any],
        items: Iterable[tuple[Any, Any]],
        skip: AbstractSet[str],
        counter: list[int],
    ) -> None:
        """Add a record's further fields, leaving out the names in ``skip``.

        The hot paths (``CodexHandler.emit``, ``CodexProcessor.__call__``)
        take the usual field (a name seen before, text or a JSON scalar)
        inline; this is for the other writers.

        Args:
            record: The record being built.
            items: ``(name, value)`` pairs.
            skip: Names already mapped to record fields.
            counter: A one-item list counting replacements.

        """
        names = self.field_names(skip)
        for key, value in items:
            if names.get(key) is not SKIP:
                self.add_field(record, key, value, counter, names)

    def add_field(
        self,
        record: dict[str, Any],
        key: object,
        value: object,
        counter: list[int],
        names: FieldNames,
    ) -> None:
        """Add one extra field: named (and cached in ``names``), normalised, redacted.

        Args:
            record: The record being built.
            key: The field's name as given (not a mapped name).
            value: Its value.
            counter: A one-item list counting replacements.
            names: The field-name cache of the record's entry point.

        """
        redactor = self.redactor
        secret = redactor.secret_keys[key] if redactor is not None else 0
        name = names.get(key)
        if not isinstance(name, str):
            name = self._name(key, counter, names, secret=bool(secret))
        cls = value.__class__
        if redactor is None:
            record[name] = value if cls is str else normalize(value)
        elif secret:
            record[name] = redactor.keyed(
                secret, value if cls is str else normalize(value), counter
            )
        elif cls is str:
            record[name] = redactor.text(value, counter)  # type: ignore[arg-type]
        else:
            record[name] = redactor.value(normalize(value), counter)

    def append(self, record: dict[str, Any], sid: str, kind: str, redacted: int) -> None:
        """Encode a built record and append it to its session's file.

        Args:
            record: The record, redacted.
            sid: Its session.
            kind: Its kind (``end`` is synced with ``fsync="end"``).
            redacted: How many values were replaced.

        Raises:
            OSError: The file cannot be written.

        """
        # The one encode-and-write tail of every entry point (the handler, the
        # processor, the scope): docs/performance.md gives what it costs.
        if redacted:
            record["redacted"] = redacted
        if OTEL_TRACE in sys.modules:  # only a program that uses OpenTelemetry pays for it
            add_trace_context(record)
        # encode()'s orjson path without the call to encode (bench/), read at
        # each record as encode reads it; encode for the json module and for
        # what orjson refuses (surrogates, big ints).
        fast = _record._fast_dumps  # noqa: SLF001 - the same module's switch
        try:
            line = (
                encode(record)
                if fast is None
                else fast(record, default=safe_str, option=FAST_OPTIONS)
            )
        except Exception:  # encode falls back to json, value by value
            line = encode(record)
        path = self.paths.get(sid) or self.path(sid)
        fsync = self.fsync
        if fsync == "never":
            lost = WRITER.write(path, line)
        else:
            lost = WRITER.write(path, line, sync=fsync == "always" or kind == "end")
        if lost:
            self.lost(lost)

    def _text(self, value: str, counter: list[int]) -> str:
        # A logger name, kind or role: redacted, and remembered when clean.
        if self.redactor is None:
            return value
        before = counter[0]
        text = self.redactor.text(value, counter)
        clean = self.clean_texts
        if counter[0] == before and len(text) <= CLEAN_TEXT_LENGTH and len(clean) < CACHE_SIZE:
            clean.add(text)
        return text

    def _name(self, key: object, counter: list[int], names: FieldNames, *, secret: bool) -> str:
        # The name a field is written under: text, redacted, core names kept
        # apart as "extra.<name>"; cached when the name held no secret and
        # values under it are not secret.
        before = counter[0]
        name = key if key.__class__ is str else key_text(key)
        if self.redactor is not None:
            name = self.redactor.text(name, counter)
        if name in CORE_FIELDS:
            name = f"extra.{name}"
        if counter[0] == before and not secret and len(names) < CACHE_SIZE:
            names[key] = name
        return name

    def report(self, error: BaseException | None, *, loud: bool = True, count: int = 1) -> None:
        """Count dropped records; say why on stderr once per cause.

        A cause is a kind of failure in this sink's folder: running out of
        descriptors, of space, a permission, an unsafe path, or an error's
        own text when it has no ``errno`` (an invalid id). Reported once per
        process, whichever file or byte count the message names. Never
        raises and never goes through ``warnings`` (which ``-W error`` would
        turn into an exception in the application).

        Args:
            error: What went wrong.
            loud: Print the first report of a cause (``False`` only counts).
            count: How many records it cost.

        """
        self.dropped += count
        key = (_cause(error), self.sessions_dir)
        if key in _REPORTED or len(_REPORTED) >= MAX_REPORTED:
            return
        _REPORTED.add(key)
        stream = sys.stderr
        if not loud or stream is None:
            return
        what = "a record" if count == 1 else f"{count} records"
        # The error's text may quote what was logged (an object's __str__, an
        # invalid session id): stderr is redacted as the records are.
        text = safe_str(error)[:4096]
        if self.redactor is not None:
            try:
                text = redacted_error(error, text, self.redactor)
            except Exception:  # a redactor that fails: the kind of error only
                text = type(error).__name__
        line = (
            f"codex_logging: dropped {what} for {self.sessions_dir}: {text[:300]}"
            f"{_hint(error)}; later records failing the same way are only counted (.dropped)\n"
        )
        try:
            stream.write(line)
            stream.flush()
        except Exception:  # noqa: S110 - a closed stderr must not raise into the application
            pass

    def lost(self, count: int) -> None:
        """Count records the writer found written to a removed file, and say so once.

        Args:
            count: How many records (``Writer.write``'s or ``Writer.close_all``'s answer).

        """
        msg = (
            "written to a session file after it or its folder was removed, before the"
            " writer noticed and opened the path again (within a second)"
        )
        loud = logging.raiseExceptions if self.logging_handler else True
        self.report(WriteError(errno.ENOENT, msg), loud=loud, count=count)


def redacted_error(error: BaseException | None, text: str, redactor: Redactor) -> str:
    """Return an error's ``text`` redacted; an invalid id's value is redacted whole, then cut."""
    if isinstance(error, InvalidSessionId) and error.value is not None:
        return invalid_id_message(error.value, lambda shown: redactor.text(shown, [0]))
    return redactor.text(text, [0])


def _cause(error: BaseException | None) -> tuple[str, str]:
    # The kind of failure a report is about (see Sink.report).
    if isinstance(error, UnsafePathError):
        return ("unsafe path", "")
    number = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if number is not None:
        return ("errno", _ERRNO_KINDS.get(number, str(number)))
    return (type(error).__name__, safe_str(error)[:300])


def _hint(error: BaseException | None) -> str:
    # Say what is wrong and what to set (docs/guarantees.md, "Writing").
    if isinstance(error, InvalidSessionId):
        return f" (set {ENV_SESSION_ID}, or session_id=, to a valid id)"
    if isinstance(error, UnsafePathError):
        return ""  # its message already says what to do
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f" (set {ENV_SESSIONS_DIR}, or sessions_dir=, to a folder this user can write)"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return " (free disk space or raise the file-size limit)"
    return ""


class SinkOwner:
    """The part every entry point shares: its :class:`Sink`, made now, and what it shows of it.

    ``CodexHandler``, ``CodexProcessor`` and ``LoguruSink`` each own one sink;
    this makes it from their settings and gives their public attributes
    (``sessions_dir``, ``session_id``, ``dropped``, ``redactor``).
    """

    __slots__ = ("sink",)

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
        """Fix the folder and the settings now, so a later chdir changes nothing.

        The keywords of every entry point (docs/configuration.md): ``CodexHandler``
        takes them and its ``level``; ``CodexProcessor`` and ``LoguruSink`` take these.

        Args:
            sessions_dir: The folder of session files; by default
                ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``, made absolute now.
            session_id: The session for records (structlog events) that name
                none and run outside a ``session_scope``; by default
                ``CODEX_SESSION_ID`` at each record.
            fsync: ``"never"``, ``"end"`` or ``"always"``.
            redact: Replace secrets before writing (on by default).
            redact_keys: More key names whose values are secret.
            redact_patterns: More regular expressions whose matches are secret.

        Raises:
            ValueError: For an unknown ``fsync`` policy or an invalid pattern.

        """
        self.sink = Sink(
            sessions_dir_path(sessions_dir),
            session_id,
            check_fsync(fsync),
            Redactor(redact_keys, redact_patterns) if redact else None,
        )
        self._made()

    def _made(self) -> None:
        """Set up what an entry point keeps beside its sink (after it is made)."""

    @property
    def sessions_dir(self) -> str:
        """The absolute folder records are written to."""
        return self.sink.sessions_dir

    @property
    def session_id(self) -> str | None:
        """The own session (``None``: the scope's or the environment's)."""
        return self.sink.session_id

    @property
    def dropped(self) -> int:
        """Records that could not be written since this was made."""
        return self.sink.dropped

    @property
    def redactor(self) -> Redactor | None:
        """The redactor, or ``None`` with ``redact=False``."""
        return self.sink.redactor


def _kind_text(kind: object) -> tuple[str, str | None]:
    """Return ``(kind, other)``: the record's kind, and a kind of its own given (see ``texts``)."""
    if kind is None:
        return "message", None
    text = kind if kind.__class__ is str else safe_str(kind)
    return (text, None) if text in KINDS else ("message", text)
