"""Each value stored once: a record split into its columns and the fields that have none.

A row of the compact mirror keeps the record's common fields in columns
(``ts``, ``kind``, ``level``, ``logger``, ``role``, ``message``, ``pid``; the
session by a small integer) and only the other fields as JSON text (``fields``,
NULL when there are none). ``shape`` says which of the record's own fields the
columns hold, one bit each, so the whole record is given back with the fields
the line had and no others (docs/mirror.md, "Each value stored once").

A field moves into its column only when the column holds exactly the line's
value: ``ts`` a JSON float, ``pid`` a 64-bit integer, ``session_id`` the file's
own id, the texts as they are. Anything else (an ISO ``ts`` of an older hook, a
``message`` that is an object, a text the mirror had to repair) stays in
``fields`` too, and the column holds what the mirror made of it, as before.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

#: The fields a column can hold, in the order the whole record gives them back
#: (the order the write path writes them), with their ``shape`` bits.
MOVABLE: Final = ("ts", "session_id", "kind", "level", "logger", "message", "pid", "role")
BIT: Final = {name: 1 << i for i, name in enumerate(MOVABLE)}

_INT64: Final = (-(1 << 63), (1 << 63) - 1)


def _fast_dumps() -> Any:
    try:
        import orjson  # noqa: PLC0415 - optional extra, looked up once
    except ImportError:
        return None
    return orjson.dumps


_orjson_dumps = _fast_dumps()


def dumps(obj: dict[str, Any]) -> str:
    """Return a JSON object as compact text, as the mirror stores ``fields``.

    Args:
        obj: The object.

    Returns:
        The text: orjson's when it takes the value, else Python's json (NaN,
        integers past 64 bits), a lone surrogate written back as its escape.
    """
    out = encoded(obj)
    return out if isinstance(out, str) else str(out, "utf-8")


def encoded(obj: dict[str, Any]) -> bytes | str:
    """Return :func:`dumps`'s text, as orjson's UTF-8 bytes when orjson wrote it.

    For a caller that drops the object before the text is decoded: a long
    value is then held twice at most, never three times.

    Args:
        obj: The object.

    Returns:
        UTF-8 bytes, or the text when Python's json wrote it.
    """
    if _orjson_dumps is not None:
        try:
            out: bytes = _orjson_dumps(obj)
        except TypeError:  # an integer past 64 bits, a lone surrogate
            pass
        else:
            # orjson writes NaN and Infinity as null: a line that had them
            # (an older hook's, read by Python's json) is written by json.
            if b"null" not in out or _same(out, obj):
                return out
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if "Infinity" in text:
        text = _INFINITY.sub(_finite_spelling, text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: A string of json's output, or an infinite number it wrote as ``Infinity``
#: (not JSON: SQLite's JSON functions then fail on the whole query).
_INFINITY: Final = re.compile(r'("(?:[^"\\]|\\.)*")|(-?)Infinity')


def _finite_spelling(match: re.Match[str]) -> str:
    # A number too large for a double, as a line may write it (1e400): the
    # same infinity to any JSON reader, and valid JSON.
    string, sign = match.groups()
    return string if string is not None else f"{sign}1e999"


def _same(out: bytes, obj: dict[str, Any]) -> bool:
    return bool(json.loads(out) == obj)


def split(
    obj: dict[str, Any], session_id: str, columns: tuple[Any, ...]
) -> tuple[int | None, int, str | None]:
    """Return ``(pid, shape, fields)`` of a record whose columns are already made.

    Args:
        obj: The record as stored (after redaction).
        session_id: The file's session id.
        columns: ``(ts, kind, level, logger, role, message)`` as the row holds them.

    Returns:
        The ``pid`` column, the ``shape`` bits, and the other fields' JSON text
        (None when every field has a column).
    """
    pid, shape, rest = rest_of(obj, session_id, columns)
    return pid, shape, None if rest is None else dumps(rest)


def rest_of(
    obj: dict[str, Any], session_id: str, columns: tuple[Any, ...]
) -> tuple[int | None, int, dict[str, Any] | None]:
    """Return ``(pid, shape, rest)``: :func:`split` before the rest is written out.

    Called once per row by the sync: the tests are written out, not looped.

    Args:
        obj: The record as stored (after redaction).
        session_id: The file's session id.
        columns: ``(ts, kind, level, logger, role, message)`` as the row holds them.

    Returns:
        The ``pid`` column, the ``shape`` bits, and the fields no column
        holds (the record itself when none moved; None when all did).
    """
    ts, kind, level, logger, role, message = columns
    get = obj.get
    value = get("ts")
    shape = 1 if value.__class__ is float and value == ts else 0
    value = get("session_id")
    if value.__class__ is str and value == session_id:
        shape |= 2
    # A text moves when it is the very object the column holds: one the
    # mirror did not have to repair.
    value = get("kind")
    if value is kind and value.__class__ is str:
        shape |= 4
    value = get("level")
    if value is level and value.__class__ is str:
        shape |= 8
    value = get("logger")
    if value is logger and value.__class__ is str:
        shape |= 16
    value = get("message")
    if value is message and value.__class__ is str:
        shape |= 32
    pid = get("pid")
    if pid.__class__ is int and _INT64[0] <= pid <= _INT64[1]:
        shape |= 64
    else:
        pid = None
    value = get("role")
    if value is role and value.__class__ is str:
        shape |= 128
    if _COUNT[shape] == len(obj):
        return pid, shape, None
    if not shape:
        return pid, shape, obj
    moved = _MOVED[shape]
    return pid, shape, {k: v for k, v in obj.items() if k not in moved}


#: For each shape, the names it moves and how many.
_MOVED: Final = tuple(
    frozenset(name for name in MOVABLE if shape & BIT[name]) for shape in range(1 << len(MOVABLE))
)
_COUNT: Final = tuple(len(names) for names in _MOVED)


def whole(session_id: str, row: tuple[Any, ...]) -> dict[str, Any]:
    """Return the whole record of a compact row, as the ``data`` column gives it back.

    Args:
        session_id: The row's session id.
        row: ``(ts, kind, level, logger, role, message, pid, shape, fields)``.

    Returns:
        The record's fields, in the write path's order, then the others.
    """
    ts, kind, level, logger, role, message, pid, shape, fields = row
    values = {
        "ts": ts,
        "session_id": session_id,
        "kind": kind,
        "level": level,
        "logger": logger,
        "message": message,
        "pid": pid,
        "role": role,
    }
    record = {name: values[name] for name in MOVABLE if shape & BIT[name]}
    if fields is not None:
        record.update(json.loads(fields))
    return record


def _sql_float(column: str) -> str:
    # 17 significant digits: they read back as the same double whatever the
    # reader. Fewer are not tested here: SQLite's own text-to-number reading
    # is not correctly rounded (it takes "1796538117.883901" for the double
    # 1796538117.8839011), so a shorter form it accepts may read back as
    # another number elsewhere. SQLite's JSON gives 15 only.
    return f"printf('%!.17g', {column})"


def sqlite_data(row: str = "r", session: str = "k.session_id") -> str:
    """Return the SQLite expression that gives back the whole record as JSON text.

    Args:
        row: The alias of the compact row.
        session: The expression of its session id text.

    Returns:
        An expression: the moved fields as ``"name":value`` members, in
        :data:`MOVABLE` order, then the members of ``fields``.
    """
    values = {
        "ts": _sql_float(f"{row}.ts"),
        "session_id": f"json_quote({session})",
        "kind": f"json_quote({row}.kind)",
        "level": f"json_quote({row}.level)",
        "logger": f"json_quote({row}.logger)",
        "message": f"json_quote({row}.message)",
        "pid": f"{row}.pid",
        "role": f"json_quote({row}.role)",
    }
    members = " || ".join(
        f"""CASE WHEN {row}.shape & {BIT[name]} THEN ',"{name}":' || {values[name]} ELSE '' END"""
        for name in MOVABLE
    )
    rest = f"CASE WHEN {row}.fields IS NULL THEN '' ELSE ',' || substr({row}.fields, 2, length({row}.fields) - 2) END"  # noqa: E501
    # The leading comma of the first member is dropped; '{}' stays '{}'.
    return f"('{{' || substr({members} || {rest}, 2) || '}}')"
