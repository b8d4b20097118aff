"""Build one record and encode it as one NDJSON line (SPEC "The NDJSON record").

Every path (handler, processor, ``session_scope``) goes through
:func:`build_record` and :func:`encode`, so the fields, the redaction and the
encoding are the same wherever a record comes from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from codex_logging._redact import REDACTED, Redactor

#: Fields the library sets; an ``extra`` key with one of these names is kept
#: under ``extra.<name>`` instead of replacing it.
CORE_FIELDS: Final = frozenset(
    {"ts", "session_id", "kind", "level", "logger", "message", "pid", "role", "exc", "redacted"}
)
KINDS: Final = ("start", "message", "end")


def safe_str(value: object) -> str:
    """Return ``str(value)``, or a placeholder when even that fails."""
    for convert in (str, repr):
        try:
            return convert(value)
        except Exception:  # noqa: S112 - an object whose __str__ raises must not lose the record
            continue
    return f"<unprintable {type(value).__name__}>"


_json_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=safe_str
).encode
_json_encode_ascii = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=safe_str
).encode


def _stdlib_dumps(record: Mapping[str, Any]) -> bytes:
    try:
        return (_json_encode(record) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8: escape it as \udXXX instead.
        return (_json_encode_ascii(record) + "\n").encode("ascii")


def _make_fast_dumps() -> Callable[[Mapping[str, Any]], bytes] | None:
    try:
        import orjson  # noqa: PLC0415 - optional extra, looked up once
    except ImportError:
        return None
    options = (
        orjson.OPT_APPEND_NEWLINE
        | orjson.OPT_NON_STR_KEYS
        # Let str() render these, as the stdlib path does, so lines are the same.
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    dumps = orjson.dumps

    def fast_dumps(record: Mapping[str, Any]) -> bytes:
        return dumps(record, default=safe_str, option=options)

    return fast_dumps


_fast_dumps = _make_fast_dumps()


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
    if _fast_dumps is not None:
        try:
            return _fast_dumps(record)
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


def build_record(
    *,
    ts: float,
    session_id: str,
    kind: object,
    level: str,
    logger: str | None,
    message: object,
    pid: int,
    role: object = None,
    exc: str | None = None,
    extra: Mapping[str, Any] | None = None,
    redactor: Redactor | None = None,
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
        extra: Further fields; names of core fields are kept as ``extra.<name>``.
        redactor: Applied to the message, the traceback and every extra value.

    Returns:
        A new dict, ready for :func:`encode`.

    """
    if not isinstance(message, str):
        message = "" if message is None else safe_str(message)
    record: dict[str, Any] = {
        "ts": ts,
        "session_id": session_id,
        "kind": "message" if kind is None else safe_str(kind),
        "level": level,
    }
    if logger is not None:
        record["logger"] = logger
    record["message"] = message
    record["pid"] = pid
    if role is not None:
        record["role"] = safe_str(role)
    if exc is not None:
        record["exc"] = exc
    if extra:
        for key, value in extra.items():
            name = key if isinstance(key, str) else safe_str(key)
            record[f"extra.{name}" if name in CORE_FIELDS else name] = value
    if redactor is not None:
        _redact(record, redactor)
    return record


def _redact(record: dict[str, Any], redactor: Redactor) -> None:
    # The core fields other than message and exc are set by this library, so
    # only those two and the extra fields can carry a secret.
    counter = [0]
    record["message"] = redactor.text(record["message"], counter)
    if "exc" in record:
        record["exc"] = redactor.text(record["exc"], counter)
    for name in record.keys() - CORE_FIELDS:
        if redactor.is_secret_key(name):
            counter[0] += 1
            record[name] = REDACTED
        else:
            record[name] = redactor.value(record[name], counter)
    if counter[0]:
        record["redacted"] = counter[0]
