"""The parts of one record: JSON normalisation, tracebacks, and the line encoder.

The sink builds every record (handler, processor, ``session_scope``): it
normalises values with :func:`normalize`, then redacts, then encodes with
:func:`encode`, so nothing becomes text after redaction (ARCHITECTURE.md,
"Invariants"; docs/record-format.md).
"""

from __future__ import annotations

import contextlib
import enum
import json
import linecache
import os
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final

#: Fields the library sets; an ``extra`` key with one of these names is kept
#: under ``extra.<name>`` instead of replacing it.
CORE_FIELDS: Final = frozenset(
    {
        "ts",
        "session_id",
        "kind",
        "level",
        "levelno",
        "logger",
        "message",
        "pid",
        "role",
        "exc",
        "redacted",
    }
)
#: The kinds a record can have (docs/record-format.md).
KINDS: Final = ("start", "message", "end")
#: Level names whose number every reader knows; a record at any other level
#: also carries its number as ``levelno`` (docs/record-format.md).
STANDARD_LEVELS: Final = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def safe_str(value: object) -> str:
    """Return ``str(value)``, or a placeholder when even that fails."""
    return _shown(value, (str, repr))


def _shown(value: object, converts: tuple[Callable[[object], str], ...]) -> str:
    """Return the first of ``converts`` that takes ``value``, or a placeholder."""
    for convert in converts:
        try:
            return convert(value)
        except Exception:  # noqa: S112 - an object whose __str__ raises must not lose the record
            continue
    return f"<unprintable {type(value).__name__}>"


def unformatted(template: object, args: object) -> str:
    """Return a message whose ``template % args`` failed: the two side by side.

    As structlog keeps an event whose arguments do not fit: the record is
    written, never lost (``"retry %d ('three',)"``); an argument whose
    ``repr`` fails shows as a placeholder.
    """
    if isinstance(args, tuple):
        shown = ", ".join(_shown(arg, (repr,)) for arg in args)
        text = f"({shown},)" if len(args) == 1 else f"({shown})"
    else:
        text = _shown(args, (repr,))
    return f"{safe_str(template)} {text}"


def _make_encoder(*, ensure_ascii: bool) -> Callable[[Any], str]:
    # JSONEncoder.encode builds a new C encoder on every call; build it once.
    # Without circular-reference markers a cycle ends in RecursionError, which
    # encode() answers by writing that value as str().
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(
            ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=False, default=safe_str
        ).encode
    basestring = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    sort_keys = skipkeys = allow_nan = False
    chunks = c_make_encoder(
        None, safe_str, basestring, None, ":", ",", sort_keys, skipkeys, allow_nan
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


_json_encode = _make_encoder(ensure_ascii=False)
_json_encode_ascii = _make_encoder(ensure_ascii=True)


def _stdlib_dumps(record: Mapping[str, Any]) -> bytes:
    try:
        return (_json_encode(record) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8: escape it as \udXXX instead.
        return (_json_encode_ascii(record) + "\n").encode("ascii")


def _load_fast_dumps() -> tuple[Callable[..., bytes] | None, int]:
    try:
        import orjson  # noqa: PLC0415 - optional extra, looked up once
    except ImportError:
        return None, 0
    # No OPT_NON_STR_KEYS: every key is text by the time a record is encoded
    # (the sink names fields with key_text, normalize does the same for nested
    # keys), and the option costs about a fifth of a dumps call (bench/). A
    # non-text key that slipped through makes orjson raise, and encode() then
    # takes the json path, which writes it as text.
    options = (
        orjson.OPT_APPEND_NEWLINE
        # Let str() render these, as the stdlib path does, so lines are the same.
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    return orjson.dumps, options


#: ``orjson.dumps`` and its options when the ``fast`` extra is installed.
_fast_dumps, FAST_OPTIONS = _load_fast_dumps()


def encode(record: Mapping[str, Any]) -> bytes:
    """Return ``record`` as one UTF-8 JSON line ending in ``\\n``.

    Values JSON cannot hold are written as ``str()``. A value that cannot be
    encoded at all (a self-referencing dict, nesting past the recursion limit,
    NaN) is replaced by its ``str()`` alone; the rest of the record is kept.

    Args:
        record: A flat mapping of field names to values.

    Returns:
        The line, with no raw newline inside it.

    """
    fast = _fast_dumps
    if fast is not None:
        try:
            return fast(record, default=safe_str, option=FAST_OPTIONS)
        except Exception:  # noqa: S110 - orjson is stricter (surrogates, big ints): use json
            pass
    try:
        return _stdlib_dumps(record)
    except (ValueError, TypeError, RecursionError):
        pass
    cleaned: dict[str, Any] = {}
    for key, value in record.items():
        try:
            _stdlib_dumps({"v": value})
        except (ValueError, TypeError, RecursionError):
            value = safe_str(value)  # noqa: PLW2901 - the replacement is the point
        cleaned[safe_str(key)] = value
    return _stdlib_dumps(cleaned)


#: Values written as they are: JSON scalars, whose text cannot hold a secret.
SCALARS: Final = (int, float, bool, type(None))
#: Containers nested deeper than this are written as a placeholder: a value
#: that deep cannot be checked for secrets within a record's budget.
MAX_DEPTH: Final = 64
TOO_DEEP: Final = f"<nested deeper than {MAX_DEPTH} levels>"
CIRCULAR: Final = "<circular reference>"


def normalize(value: Any, _path: frozenset[int] = frozenset()) -> Any:  # noqa: PLR0911 - a return per kind
    """Return ``value`` as JSON data: dicts with string keys, lists, str, int, float, bool, None.

    Sets, tuples and named tuples, bytes, paths, dataclasses, namespaces,
    exceptions and any other object become JSON data *before* redaction, so
    a secret inside them is seen by the redactor (a dataclass field called
    ``password`` is a secret key, a token inside bytes or an object's
    ``str()`` is a secret shape).

    Args:
        value: Anything a program logs.

    Returns:
        JSON data; the original is never mutated.

    """
    cls = value.__class__
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return finite(value)
    contents = _contents(value)
    if contents is None:
        return _leaf(value)
    if id(value) in _path:
        return CIRCULAR
    if len(_path) >= MAX_DEPTH:
        return TOO_DEEP
    path = _path | {id(value)}
    if isinstance(contents, dict):
        return {
            key if key.__class__ is str else key_text(key): normalize(item, path)
            for key, item in contents.items()
        }
    items = [normalize(item, path) for item in contents]
    if isinstance(value, AbstractSet):
        # A set has no order: sort when the items allow it, for stable lines.
        with contextlib.suppress(TypeError):
            items.sort()
    return items


def _contents(value: Any) -> dict[Any, Any] | list[Any] | tuple[Any, ...] | None:  # noqa: PLR0911
    # The items of a container, as a dict (named fields) or a sequence; None
    # for a leaf value.
    if isinstance(value, Mapping):
        return _read(lambda: dict(value.items()), value)
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a named tuple
        return _read(value._asdict, value)
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, AbstractSet):
        return list(value)
    if isinstance(value, types.SimpleNamespace):
        return _read(lambda: dict(vars(value)), value)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        # A dataclass instance: dataclasses is imported already if one exists.
        fields = sys.modules["dataclasses"].fields
        return _read(lambda: {f.name: getattr(value, f.name) for f in fields(value)}, value)
    if callable(getattr(type(value), "model_dump", None)) and not isinstance(value, type):
        # A pydantic model (v2), or anything with its protocol: its fields.
        return _read(lambda: dict(value.model_dump()), value)
    return None


def finite(value: float) -> float | str:
    """Return a float JSON can hold as it is; NaN and infinities as ``str()``.

    Values JSON cannot hold are written as ``str()`` (docs/record-format.md): the json encoder
    refuses them and orjson would write ``null``, so both are told the same.
    """
    return value if value - value == 0.0 else safe_str(value)


def _leaf(value: Any) -> Any:  # noqa: PLR0911 - a return per kind
    if isinstance(value, enum.Enum):
        # Its value, as JSON would hold it (Color.RED -> "red", Size.L -> 3).
        return normalize(_read_value(value))
    if isinstance(value, float):
        return finite(float(value))
    for base in (str, bool, int):  # subclasses as their JSON base
        if isinstance(value, base):
            return base(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, os.PathLike):
        return _fspath(value)
    iso = _isoformat(value)
    if iso is not None:
        return iso
    return safe_str(value)  # UUID, Decimal, exceptions, objects


def _read_value(member: enum.Enum) -> Any:
    try:
        return member.value
    except Exception:
        return safe_str(member)


def _isoformat(value: object) -> str | None:
    # datetime, date and time in ISO 8601 with a "T" (str() puts a space).
    # Looked up in sys.modules: a datetime exists only if the module is loaded.
    module = sys.modules.get("datetime")
    if module is None or not isinstance(value, module.date | module.time):
        return None
    try:
        return str(value.isoformat())
    except Exception:
        return None


def _fspath(value: os.PathLike[Any]) -> str:
    try:
        path = os.fspath(value)
    except Exception:
        return safe_str(value)
    return path if isinstance(path, str) else path.decode("utf-8", "backslashreplace")


def _read(read: Callable[[], dict[Any, Any]], value: object) -> dict[Any, Any]:
    try:
        return read()
    except Exception:  # a container whose reading fails still leaves a record
        return {"<unreadable>": safe_str(value)}


def key_text(key: object) -> str:
    # JSON object keys are strings; json.dumps writes 1 as "1" and None as "null".
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, bytes):
        return key.decode("utf-8", "backslashreplace")
    if isinstance(key, enum.Enum):
        return key_text(_read_value(key))
    return _isoformat(key) or safe_str(key)


def exception_text(rendered: object, exc_info: object) -> str | None:
    """Return a traceback from structlog's ``exception`` / ``exc_info`` event keys.

    Args:
        rendered: ``exception``: a traceback string when ``format_exc_info``
            ran, an exception, or structlog's ``dict_tracebacks`` form.
        exc_info: ``exc_info``: ``True``, an exception, or a ``sys.exc_info()`` tuple.

    Returns:
        The formatted traceback, or ``None`` when there is none.

    """
    return exception_parts(rendered, exc_info)[0]


#: How structlog's StackInfoRenderer (and logging) starts a rendered stack.
STACK_HEADER: Final = "Stack (most recent call last):"


def exception_parts(
    exception: object, exc_info: object, stack: object = None, stack_info: object = None
) -> tuple[str | None, Any]:
    """Return the text for ``exc`` and the structured form for ``exception``.

    Every form an event can carry an exception in gives the text: the
    traceback ``format_exc_info`` rendered, an exception or ``exc_info``
    (``True``, an exception, a ``sys.exc_info()`` tuple) not rendered by any
    processor, and the list of dicts ``dict_tracebacks`` built, rendered back
    into Python's traceback layout. That list is also returned as the
    structured form, as is any other non-text ``exception`` value the program
    built. A stack (``stack_info=True`` with or without structlog's
    ``StackInfoRenderer``) follows the traceback, as logging writes it.

    Args:
        exception: The event's ``exception`` value, or ``None``.
        exc_info: The event's ``exc_info`` value, or ``None``.
        stack: The event's ``stack`` value: taken only when it is a rendered
            stack (text starting ``Stack (most recent call last):``).
        stack_info: The event's ``stack_info``: ``True`` renders the caller's stack.

    Returns:
        ``(text, structured)``, each ``None`` when there is none.

    """
    text: str | None = None
    structured: Any = None
    if isinstance(exception, str):
        text = exception  # format_exc_info already ran
    elif isinstance(exception, BaseException):
        text = _format_exc_info((type(exception), exception, exception.__traceback__))
    elif exception is not None:
        structured = exception
        text = render_exception_dicts(exception)
    if text is None and exc_info is not None and exc_info is not False:
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[0] is not None:
            text = _format_exc_info(exc_info)
    rendered = stack if isinstance(stack, str) and stack.startswith(STACK_HEADER) else None
    if rendered is None and stack_info is True:
        rendered = caller_stack()
    if rendered is not None:
        text = f"{text}\n{rendered}" if text else rendered
    return text, structured


def _format_exc_info(exc_info: Any) -> str | None:
    try:
        return "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    except Exception:  # a hostile exception still leaves a record
        return safe_str(exc_info[1])


#: Modules whose frames are the logging machinery, not the program.
_MACHINERY: Final = ("logging", "structlog", "codex_logging", "loguru")


def caller_stack() -> str:
    """Return the stack of the code that logged, as logging's ``stack_info`` renders it."""
    frame = sys._getframe(1)  # noqa: SLF001 - the stack is the point
    while frame.f_back is not None:
        module = frame.f_globals.get("__name__", "")
        if not isinstance(module, str) or module.split(".", 1)[0] not in _MACHINERY:
            break
        frame = frame.f_back
    lines = "".join(traceback.format_stack(frame)).rstrip("\n")
    return f"{STACK_HEADER}\n{lines}"


def render_exception_dicts(stacks: object) -> str | None:
    """Return Python's traceback text for structlog's ``dict_tracebacks`` form.

    Args:
        stacks: The list ``ExceptionDictTransformer`` returns: one dict per
            exception of the chain, the raised one first, each with
            ``exc_type``, ``exc_value``, ``frames`` and ``is_cause`` (and
            ``exc_notes``, ``syntax_error``, ``is_group``, ``exceptions``).

    Returns:
        The text, oldest exception first as Python prints it; ``None`` when
        ``stacks`` is not that form.

    """
    if not _is_trace(stacks):
        return None
    try:
        return "\n".join(_render_trace(stacks, "")).rstrip("\n")  # type: ignore[arg-type]
    except Exception:  # a malformed dict: the structured form is still kept
        return None


def _is_trace(stacks: object) -> bool:
    return (
        isinstance(stacks, list)
        and bool(stacks)
        and all(isinstance(s, dict) and "exc_type" in s and "frames" in s for s in stacks)
    )


_CAUSE: Final = "The above exception was the direct cause of the following exception:"
_CONTEXT: Final = "During handling of the above exception, another exception occurred:"


def _render_trace(stacks: list[dict[str, Any]], indent: str) -> list[str]:
    lines: list[str] = []
    # structlog lists the raised exception first, then its cause or context.
    for position in range(len(stacks) - 1, -1, -1):
        stack = stacks[position]
        lines.extend(_render_stack(stack, indent))
        if position:
            link = _CAUSE if stacks[position].get("is_cause") else _CONTEXT
            lines.extend(["", indent + link, ""])
    return lines


def _render_stack(stack: dict[str, Any], indent: str) -> list[str]:
    group = bool(stack.get("is_group"))
    frames = stack.get("frames") or []
    lines: list[str] = []
    if frames:
        title = "Exception Group Traceback" if group else "Traceback"
        lines.append(f"{indent}{title} (most recent call last):")
    for frame in frames:
        filename, lineno = frame.get("filename"), frame.get("lineno")
        lines.append(f'{indent}  File "{filename}", line {lineno}, in {frame.get("name")}')
        source = (
            linecache.getline(filename, lineno).strip()
            if isinstance(filename, str) and isinstance(lineno, int)
            else ""
        )
        if source:
            lines.append(f"{indent}    {source}")
    syntax = stack.get("syntax_error")
    if isinstance(syntax, dict):
        lines.append(f'{indent}  File "{syntax.get("filename")}", line {syntax.get("lineno")}')
        lines.append(f"{indent}    {str(syntax.get('line') or '').strip()}")
    value = stack.get("exc_value")
    lines.append(
        f"{indent}{stack.get('exc_type')}: {value}" if value else f"{indent}{stack.get('exc_type')}"
    )
    lines.extend(f"{indent}{note}" for note in stack.get("exc_notes") or ())
    if group:
        members = stack.get("exceptions") or []
        for number, member in enumerate(members, 1):
            lines.append(f"{indent}+---------------- {number} ----------------")
            if _is_trace(member):
                lines.extend(_render_trace(member, indent + "    "))
        if members:
            lines.append(f"{indent}+------------------------------------")
    return lines


#: Checked in ``sys.modules`` only: a hook script that never imports
#: OpenTelemetry pays one dict lookup per record (docs/configuration.md, "OpenTelemetry").
OTEL_TRACE: Final = "opentelemetry.trace"


def add_trace_context(record: dict[str, Any]) -> None:
    # The field names and hex forms the OpenTelemetry Collector's trace parser
    # reads by default: trace_id (32 hex), span_id (16 hex), trace_flags (2 hex).
    try:
        context = sys.modules[OTEL_TRACE].get_current_span().get_span_context()
        if not context.is_valid:
            return
        record.setdefault("trace_id", f"{context.trace_id:032x}")
        record.setdefault("span_id", f"{context.span_id:016x}")
        record.setdefault("trace_flags", f"{int(context.trace_flags):02x}")
    except Exception:  # noqa: S110 - a broken tracer must never cost the record
        pass
