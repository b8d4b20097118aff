"""One session line into an OTLP ``LogRecord``; a batch into an ``ExportLogsServiceRequest``.

The mapping follows the OpenTelemetry Logs Data Model field by field
(docs/scale-out.md, "The record in the OpenTelemetry Logs Data Model"). The
messages are the OpenTelemetry project's own (``opentelemetry-proto``, the
``otlp`` extra), imported only here and only when an export runs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from codex_logging._errors import OtlpNotInstalledError
from codex_logging._mirror.lines import iso_time, legacy_kind, loads

try:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, LogsData, ScopeLogs
except ImportError as exc:  # pragma: no cover - the extra is installed for the tests
    msg = "OTLP export needs opentelemetry-proto: pip install '.[otlp]' in a checkout"
    raise OtlpNotInstalledError(msg) from exc

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "ExportLogsServiceRequest",
    "ExportLogsServiceResponse",
    "Resource",
    "build_request",
    "record_uid",
    "severity",
    "time_unix_nano",
    "to_json_line",
]

#: The five standard level names and the severity numbers of the Logs Data Model.
SEVERITY: Final = {
    "DEBUG": 5,
    "INFO": 9,
    "WARNING": 13,
    "WARN": 13,
    "ERROR": 17,
    "CRITICAL": 21,
    "FATAL": 21,
}
#: The record's own kinds that are the session conventions' events.
EVENTS: Final = {"start": "session.start", "end": "session.end"}
#: Keys that become a field of the LogRecord, not an attribute.
_OWN: Final = frozenset({"ts", "level", "message", "logger", "trace_id", "span_id", "trace_flags"})
_TRACE: Final = frozenset({"trace_id", "span_id", "trace_flags"})
#: A template that could not take this many records of a request is not used for the rest.
_MISSES: Final = 32
#: A line longer than this is built in the request itself, not through a template.
_LONG_LINE: Final = 64 << 10
_INT64: Final = 1 << 63
_UINT64: Final = 1 << 64
_NANO: Final = Decimal(1_000_000_000)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_HEX32: Final = re.compile(r"[0-9a-fA-F]{32}")
_HEX16: Final = re.compile(r"[0-9a-fA-F]{16}")
_HEX2: Final = re.compile(r"[0-9a-fA-F]{1,2}")
#: The last line of a Python traceback: ``pkg.Error: message`` (or the bare name).
_EXC_LINE: Final = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?")
_STACK: Final = "Stack (most recent call last):"
#: The first line of a traceback at the top level: an exception's, a group's.
_TRACEBACKS: Final = (
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
)
#: A line that starts with its ``ts``, as the writer writes it: the digits.
_TS_FIRST: Final = re.compile(r'\{\s*"ts"\s*:\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*[,}]')


def time_unix_nano(value: object) -> int:
    """Return ``ts`` (Unix seconds, parsed as :class:`~decimal.Decimal`) in nanoseconds, exactly.

    The digits of the line are used as written, not a float times 10⁹: a
    ``ts`` of ``1765000000.123456789`` gives ``1765000000123456789``. Digits
    past the nanosecond are cut. Anything that is not a number from 0 to
    2⁶⁴ nanoseconds gives 0, the data model's "unknown".

    Args:
        value: ``ts`` as parsed with ``parse_float=Decimal``.

    Returns:
        Nanoseconds since the Unix epoch, or 0.
    """
    if isinstance(value, str):  # an older hook's ISO time, as the mirrors read it
        moment = iso_time(value)
        if moment is None:
            return 0
        delta = moment - _EPOCH
        value = Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return 0
    try:
        nanos = int(value * _NANO)
    except (InvalidOperation, OverflowError, ValueError):
        return 0  # NaN, infinities
    return nanos if 0 <= nanos < _UINT64 else 0


def severity(level: object, levelno: object) -> int:
    """Return the severity number of a record's ``level`` (a custom level by its ``levelno``).

    The five standard names map as the data model says; any other level by
    its number, read on Python's scale (10 DEBUG ... 50 CRITICAL): each ten
    is one of the model's ranges of four, the units step within it (25, as
    loguru's ``SUCCESS``, is 11, ``INFO3``; 5, ``TRACE``, is 3, ``TRACE3``).

    Args:
        level: The record's ``level``.
        levelno: The record's ``levelno``, if any.

    Returns:
        1 to 24, or 0 (unspecified) when neither says.
    """
    if isinstance(level, str):
        known = SEVERITY.get(level.upper())
        if known is not None:
            return known
    if isinstance(levelno, bool) or not isinstance(levelno, int) or levelno <= 0:
        return 0
    if levelno >= 60:
        return 24
    ten, unit = divmod(levelno, 10)
    return 1 + 4 * ten + min(3, unit * 4 // 10)


def record_uid(source: str, session_id: str, seq: int) -> str:
    """Return ``log.record.uid``: the same line always has the same id, in any export."""
    return f"{source}/{session_id}/{seq}"


def _any(value: Any, out: AnyValue) -> None:
    """Fill ``out`` with a JSON value, keeping its JSON type."""
    if isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if -_INT64 <= value < _INT64:
            out.int_value = value
        else:
            out.string_value = str(value)  # past int64: the digits, as text
    elif isinstance(value, Decimal | float):
        out.double_value = float(value)
    elif isinstance(value, list):
        values = out.array_value.values
        for item in value:
            _any(item, values.add())
    elif isinstance(value, dict):
        pairs = out.kvlist_value.values
        for key, item in value.items():
            pair = pairs.add()
            pair.key = key
            _any(item, pair.value)
    # None: an empty AnyValue, the model's null


def _attribute(attributes: Any, key: str, value: Any) -> None:
    pair = attributes.add()
    pair.key = key
    _any(value, pair.value)


def _exception(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Return ``exception.type`` and ``exception.message`` of a record, if it says them.

    From what says them whole: a scope's ``end`` (``error_type``, ``error``),
    structlog's ``dict_tracebacks`` (its first exception is the one raised),
    else the traceback text: the lines after the frames of its last
    traceback (the exception raised), its message on as many lines as it has.
    """
    kind, text = record.get("error_type"), record.get("error")
    if isinstance(kind, str) and kind:
        return kind, text if isinstance(text, str) else None
    structured = record.get("exception")
    if isinstance(structured, list) and structured and isinstance(structured[0], dict):
        kind, text = structured[0].get("exc_type"), structured[0].get("exc_value")
        if isinstance(kind, str):
            return kind, text if isinstance(text, str) else None
    exc = record.get("exc")
    if not isinstance(exc, str) or exc.startswith(_STACK):
        return None, None
    lines = exc.split("\n" + _STACK, 1)[0].split("\n")
    # The last traceback at the top level is the exception raised.
    start, group = 0, False
    for i, line in enumerate(lines):
        if line in _TRACEBACKS:
            start, group = i + 1, line != _TRACEBACKS[0]
    if group:  # its own lines behind "  | ", its members' behind more
        lines = [line[4:] if line.startswith("  | ") else "  " + line for line in lines[start:]]
        start = 0
    # The frames are indented ("  File ...", its source line, its carets).
    first = next(
        (i for i in range(start, len(lines)) if lines[i] and not lines[i][0].isspace()), None
    )
    found = None if first is None else _EXC_LINE.fullmatch(lines[first])
    if found is None or first is None or lines[first].startswith("Traceback "):
        return None, None
    if found.group(2) is None:
        return found.group(1), None
    # A message of several lines goes on to the end (a group's: its first line).
    rest = [] if group else lines[first + 1 :]
    return found.group(1), "\n".join([found.group(2), *rest]).rstrip("\n")


class Resource:
    """The resource every record of one export shares, and the per-process part of it.

    ``service.name``: the argument, else ``OTEL_SERVICE_NAME``, else
    ``service.name`` of ``OTEL_RESOURCE_ATTRIBUTES``, else
    ``unknown_service``; ``OTEL_RESOURCE_ATTRIBUTES`` (``key=value,...``,
    percent-decoded) otherwise kept as given; ``host.name`` of this
    machine; ``codex.source_id`` the sessions folder's id. Each record's
    ``pid`` goes in ``process.pid``: one ``ResourceLogs`` per process.
    """

    def __init__(self, source: str, service_name: str | None = None) -> None:
        """Read the environment once.

        Args:
            source: The sessions folder's id.
            service_name: ``service.name`` (default: from the environment).
        """
        attributes: dict[str, str] = {}
        for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
            key, equals, value = item.partition("=")
            if equals and key.strip():
                attributes[unquote(key.strip())] = unquote(value.strip())
        attributes.setdefault("host.name", socket.gethostname())
        name = service_name or os.environ.get("OTEL_SERVICE_NAME") or attributes.get("service.name")
        attributes["service.name"] = name or "unknown_service"
        attributes["codex.source_id"] = source
        self.attributes = attributes
        self.source = source


def build_request(  # noqa: C901, PLR0912, PLR0915 - one loop, inline for speed
    resource: Resource,
    rows: Sequence[Sequence[Any]],
    observed: int | None = None,
    *,
    columns: tuple[int, int, int, int] = (0, 1, 2, 3),
) -> ExportLogsServiceRequest:
    """Return the request carrying ``rows``: ``(session_id, seq, line[, record])`` each.

    A row may carry the record the engine already parsed from its line
    (``_mirror/lines.py``); it is then not parsed again. ``columns`` says
    where in a row the four are (the engine's rows as they are: no copy).

    Records are grouped by process (``process.pid`` in the resource), then by
    logger (the scope's name), in the order of the lines.

    Building a LogRecord field by field costs about a microsecond a field in
    Python. So the records whose attributes are all scalars (the common
    case) are set into a :class:`_Template` of their keys, kept from one
    record to the next, serialized by protobuf as a ``ScopeLogs`` holding
    that one record; each scope then parses the run of its records at once
    (``ScopeLogs`` messages merge by appending their records, in order).
    The request is the same, byte for byte, as one built record by record
    with :func:`_fill` (``tests/test_otlp_template.py``), which builds the
    others in place: a null, a list or an object among the attributes, a
    message that is not a string, ``exc``, a trace field kept as an
    attribute, a line over 64 KiB.

    Args:
        resource: The export's resource.
        rows: The lines to send, already checked and redacted by the engine.
        observed: ``observed_time_unix_nano`` (default: now).
        columns: The positions of the session id, seq, line and record.

    Returns:
        The request.
    """
    at_session, at_seq, at_line, at_record = columns
    request = ExportLogsServiceRequest()
    observed = time.time_ns() if observed is None else observed
    source = resource.source
    scopes: dict[tuple[object, str], tuple[Any, list[bytes]]] = {}
    resources: dict[object, Any] = {}
    templates: dict[tuple[str, ...], _Template | None] = {}
    for row in rows:
        session_id, seq, line = row[at_session], row[at_seq], row[at_line]
        record, nanos = _parse(line, row[at_record] if len(row) > at_record else None)
        if "\\ud" in line or "\\uD" in line:  # a surrogate escape: maybe a lone one
            record = _utf8(record)
        get = record.get
        pid = get("pid")
        pid_key = pid if type(pid) is int else None
        logger = get("logger")
        name = logger if type(logger) is str else ""
        found = scopes.get((pid_key, name))
        if found is None:
            logs = resources.get(pid_key)
            if logs is None:
                logs = request.resource_logs.add()
                attributes = logs.resource.attributes
                for key, value in resource.attributes.items():
                    _attribute(attributes, key, value)
                if pid_key is not None:
                    _attribute(attributes, "process.pid", pid_key)
                resources[pid_key] = logs
            scope = logs.scope_logs.add()
            scope.scope.name = name
            found = scopes[pid_key, name] = (scope, [])
        scope, parts = found
        if len(line) > _LONG_LINE:
            template = None  # not copied thrice (template, its bytes, the request)
        else:
            shape = tuple(record)
            template = templates.get(shape, _NO_TEMPLATE)
            if template is _NO_TEMPLATE:
                template = templates[shape] = _Template.of(shape)
        if template is not None:
            message = get("message")
            if (template.body is None or type(message) is str) and (
                not template.traced or _trace_fields(template.record, record)
            ):
                for key, slot in template.pairs:
                    value = record[key]
                    kind = type(value)
                    if kind is str:
                        slot.string_value = value
                    elif kind is int:
                        if -_INT64 <= value < _INT64:
                            slot.int_value = value
                        else:
                            slot.string_value = str(value)  # past int64: the digits, as text
                    elif kind is bool:
                        slot.bool_value = value
                    elif kind is float or kind is Decimal:
                        slot.double_value = float(value)
                    else:
                        break  # null, a list, an object: built below
                else:
                    out = template.record
                    out.time_unix_nano = nanos
                    out.observed_time_unix_nano = observed
                    level = get("level")
                    out.severity_number = severity(level, get("levelno"))
                    out.severity_text = level if type(level) is str else ""
                    if template.body is not None:
                        template.body.string_value = message
                    event = get("kind")
                    if type(event) is not str:  # an older hook's "type"
                        event = legacy_kind(record)
                    out.event_name = EVENTS.get(event, "")
                    if session_id != template.session:
                        template.session_slot.string_value = template.session = session_id
                    template.uid_slot.string_value = record_uid(source, session_id, seq)
                    template.seq_slot.int_value = seq
                    parts.append(template.scope.SerializeToString())
                    continue
            template.misses += 1
            if template.misses >= _MISSES:
                templates[shape] = None  # most of its records are built field by field
        # Built in place, after the records before it.
        _merge(scope, parts)
        _fill(scope.log_records.add(), record, nanos, source, session_id, seq, observed)
    for scope, parts in scopes.values():
        _merge(scope, parts)
    return request


def _utf8(value: Any) -> Any:
    """Return ``value`` with each lone surrogate in its texts as its escape (``\\udce9``).

    A line may hold one (``os.fsdecode`` of a file name that is not UTF-8,
    written by the library as ``\\udce9``); protobuf's strings are UTF-8.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_utf8(key): _utf8(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_utf8(item) for item in value]
    return value


def _merge(scope: Any, parts: list[bytes]) -> None:
    """Append the serialized records (each a ``ScopeLogs`` of one) to ``scope``; empty ``parts``."""
    if parts:
        scope.MergeFromString(b"".join(parts))
        parts.clear()


class _Template:
    """A LogRecord of one set of keys, inside a ``ScopeLogs``, with its attribute values at hand.

    Each record of those keys sets every field it has (so none of the
    previous record's stays) and is serialized. A template lives for one
    request: the strings set into it stay in its memory until then.
    """

    __slots__ = (
        "body",
        "misses",
        "pairs",
        "record",
        "scope",
        "seq_slot",
        "session",
        "session_slot",
        "traced",
        "uid_slot",
    )

    def __init__(self, keys: tuple[str, ...], *, body: bool, traced: bool) -> None:
        self.scope = ScopeLogs()
        self.traced = traced
        self.record = self.scope.log_records.add()
        self.body = self.record.body if body else None
        attributes = self.record.attributes
        slots = []
        for key in ("session.id", "log.record.uid", "codex.seq", *keys):
            pair = attributes.add()
            pair.key = key
            slots.append(pair.value)
        self.session_slot, self.uid_slot, self.seq_slot = slots[:3]
        #: The record's keys and where their values go.
        self.pairs = tuple(zip(keys, slots[3:], strict=True))
        #: The session id set last (the same for all the records of a batch).
        self.session: object = _UNSET
        #: Records of these keys that could not use it (a null, a list, an object).
        self.misses = 0

    @classmethod
    def of(cls, shape: tuple[str, ...]) -> _Template | None:
        """Return the template of records with these keys; None for those built field by field."""
        if "exc" in shape:
            return None
        keys = tuple(key for key in shape if key not in _OWN and key != "session_id")
        return cls(keys, body="message" in shape, traced=any(key in _TRACE for key in shape))


def _trace_fields(out: LogRecord, record: Mapping[str, Any]) -> bool:
    """Set (or clear) the trace fields of a template's record; False if one is not of their form.

    :func:`_trace` after clearing all three, so none of the previous record's
    stays; a value that :func:`_trace` keeps as an attribute sends the record
    the other way.
    """
    out.trace_id = b""
    out.span_id = b""
    out.flags = 0
    return not _trace(out, record)


_NO_TEMPLATE: Final[Any] = object()
#: No session yet: unequal to every session id.
_UNSET: Final = object()


def _parse(line: str, parsed: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """Return the record of a line and ``time_unix_nano`` of its ``ts``, from the digits written.

    The writer puts ``ts`` first: its digits are read from the line's start,
    and the rest is the record the engine parsed (``parsed``), else the line
    parsed as the engine parses it (``_mirror/lines.py`` ``loads``: exact,
    integers past 64 bits included); any other line is parsed with every
    number as a ``Decimal``.
    """
    if parsed is not None and line.startswith('{"ts":'):
        # The writer's own form, {"ts":<digits>.<digits>,...: no Decimal needed.
        digits = line[6 : line.find(",", 6)]
        whole, dot, fraction = digits.partition(".")
        if digits.isascii() and dot and whole.isdigit() and fraction.isdigit():
            nanos = int(whole) * 1_000_000_000 + int(fraction[:9].ljust(9, "0"))
            return parsed, nanos if nanos < _UINT64 else 0
    head = _TS_FIRST.match(line)
    if head is not None:
        record = parsed if parsed is not None else loads(line.encode())
        if isinstance(record, dict):
            return record, time_unix_nano(Decimal(head.group(1)))
    record = json.loads(line, parse_float=Decimal)
    if isinstance(record, dict):
        return record, time_unix_nano(record.get("ts"))
    return {"message": line}, 0


def _fill(  # noqa: PLR0917 - one record's parts
    out: LogRecord,
    record: dict[str, Any],
    nanos: int,
    source: str,
    session_id: str,
    seq: int,
    observed: int,
) -> None:
    out.time_unix_nano = nanos
    out.observed_time_unix_nano = observed
    level = record.get("level")
    out.severity_number = severity(level, record.get("levelno"))  # type: ignore[assignment]
    if isinstance(level, str):
        out.severity_text = level
    message = record.get("message")
    if message is not None:
        _any(message, out.body)
    kind = record.get("kind")
    if not isinstance(kind, str):  # an older hook's "type": session_start, as the mirrors read it
        kind = legacy_kind(record)
    if kind in EVENTS:
        out.event_name = EVENTS[kind]
    attributes = out.attributes
    leftover = _trace(out, record)
    _attribute(attributes, "session.id", session_id)
    _attribute(attributes, "log.record.uid", record_uid(source, session_id, seq))
    _attribute(attributes, "codex.seq", seq)
    exc = record.get("exc")
    if isinstance(exc, str):
        _exception_attributes(attributes, record, exc)
    for key, value in record.items():
        if key in _OWN or key == "session_id" or (key == "exc" and isinstance(value, str)):
            continue
        _attribute(attributes, key, value)
    for key, value in leftover.items():
        _attribute(attributes, key, value)


def _trace(out: LogRecord, record: Mapping[str, Any]) -> dict[str, Any]:
    """Set the record's trace context; return what is not one (kept as attributes)."""
    leftover: dict[str, Any] = {}
    trace_id, span_id = record.get("trace_id"), record.get("span_id")
    flags = record.get("trace_flags")
    if isinstance(trace_id, str) and _HEX32.fullmatch(trace_id):
        out.trace_id = bytes.fromhex(trace_id)
    elif trace_id is not None:
        leftover["trace_id"] = trace_id
    if isinstance(span_id, str) and _HEX16.fullmatch(span_id):
        out.span_id = bytes.fromhex(span_id)
    elif span_id is not None:
        leftover["span_id"] = span_id
    if isinstance(flags, str) and _HEX2.fullmatch(flags):
        out.flags = int(flags, 16)
    elif isinstance(flags, int) and not isinstance(flags, bool) and 0 <= flags <= 0xFF:
        out.flags = flags
    elif flags is not None:
        leftover["trace_flags"] = flags
    return leftover


def _exception_attributes(attributes: Any, record: Mapping[str, Any], exc: str) -> None:
    kind, text = _exception(record)
    if kind is not None:
        _attribute(attributes, "exception.type", kind)
    if text is not None:
        _attribute(attributes, "exception.message", text)
    _attribute(attributes, "exception.stacktrace", exc)


def to_json_line(request: ExportLogsServiceRequest) -> str:
    """Return ``request`` as one line of OTLP/JSON ``LogsData`` (the ``otlpjsonfile`` format).

    lowerCamelCase keys, 64-bit integers as decimal text, enums as numbers,
    trace and span ids as hex (not protobuf's base64), as OTLP/JSON requires.
    """
    data = LogsData()
    data.resource_logs.extend(request.resource_logs)
    tree = json_format.MessageToDict(data, use_integers_for_enums=True)
    for resource in tree.get("resourceLogs", ()):
        for scope in resource.get("scopeLogs", ()):
            for record in scope.get("logRecords", ()):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False)
