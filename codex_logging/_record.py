"""Build one record and encode it as one NDJSON line (SPEC "The NDJSON record").

Every path (handler, processor, ``session_scope``) goes through
:func:`build_record` and :func:`encode`, so the fields, the redaction and the
encoding are the same wherever a record comes from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final

from codex_logging._redact import REDACTED, Redactor

#: Fields the library sets; an ``extra`` key with one of these names is kept
#: under ``extra.<name>`` instead of replacing it.
CORE_FIELDS: Final = frozenset(
    {"ts", "session_id", "kind", "level", "logger", "message", "pid", "role", "exc", "redacted"}
)


def safe_str(value: object) -> str:
    """Return ``str(value)``, or a placeholder when even that fails."""
    for convert in (str, repr):
        try:
            return convert(value)
        except Exception:  # noqa: S112 - an object whose __str__ raises must not lose the record
            continue
    return f"<unprintable {type(value).__name__}>"


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
    options = (
        orjson.OPT_APPEND_NEWLINE
        | orjson.OPT_NON_STR_KEYS
        # Let str() render these, as the stdlib path does, so lines are the same.
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    return orjson.dumps, options


#: ``orjson.dumps`` and its options when the ``fast`` extra is installed.
_fast_dumps, _FAST_OPTIONS = _load_fast_dumps()


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
            return fast(record, default=safe_str, option=_FAST_OPTIONS)
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


_SCALARS: Final = (int, float, bool, type(None))
_NO_SECRET_KEYS: Final[Mapping[object, bool]] = {}  # stands in when redaction is off


def build_record(  # noqa: C901, PLR0912, PLR0917 - one flat pass: this is the hot path
    ts: float,
    session_id: str,
    kind: object,
    level: str,
    logger: str | None,
    message: object,
    pid: int,
    role: object = None,
    exc: str | None = None,
    extra: Iterable[tuple[Any, Any]] = (),
    redactor: Redactor | None = None,
    skip: AbstractSet[str] = frozenset(),
) -> dict[str, Any]:
    """Return the record dict with the SPEC's field order, redacted if asked.

    Args:
        ts: Unix seconds.
        session_id: The validated session.
        kind: ``start``, ``message`` or ``end``; ``None`` means ``message``.
        level: The level name, upper case.
        logger: The logger name, or ``None`` to leave the field out.
        message: The message; non-strings are written with ``str()``.
        pid: The writing process.
        role: Optional ``user`` / ``assistant`` / ``system`` / ``tool``.
        exc: Optional formatted traceback.
        extra: Further fields as ``(name, value)`` pairs, such as a dict's
            ``items()``; names of core fields are kept as ``extra.<name>``.
        redactor: Applied to the message, the traceback and every extra value.
        skip: Names in ``extra`` to leave out: the caller already mapped them
            to record fields.

    Returns:
        A new dict, ready for :func:`encode`.
    """
    if message.__class__ is not str:
        message = "" if message is None else safe_str(message)
    counter = [0]
    if redactor is not None:
        message = redactor.text(message, counter)
        if exc is not None:
            exc = redactor.text(exc, counter)
    record: dict[str, Any] = {
        "ts": ts,
        "session_id": session_id,
        "kind": "message" if kind is None else kind if kind.__class__ is str else safe_str(kind),
        "level": level,
    }
    if logger is not None:
        record["logger"] = logger
    record["message"] = message
    record["pid"] = pid
    if role is not None:
        record["role"] = role if role.__class__ is str else safe_str(role)
    if exc is not None:
        record["exc"] = exc
    # One pass drops mapped keys, renames clashing ones and redacts; scalars
    # skip the redactor.
    secret_keys = _NO_SECRET_KEYS if redactor is None else redactor.secret_keys
    for key, value in extra:
        if key in skip:
            continue
        name = key if key.__class__ is str else safe_str(key)
        if name in CORE_FIELDS:
            name = f"extra.{name}"
        if redactor is None:
            record[name] = value
        elif secret_keys[key]:
            counter[0] += 1
            record[name] = REDACTED
        elif value.__class__ in _SCALARS:
            record[name] = value
        else:
            record[name] = redactor.value(value, counter)
    if counter[0]:
        record["redacted"] = counter[0]
    return record
