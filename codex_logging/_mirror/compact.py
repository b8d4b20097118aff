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
    if _orjson_dumps is not None:
        try:
            out = _orjson_dumps(obj)
        except TypeError:  # an integer past 64 bits
            pass
        else:
            # orjson writes NaN and Infinity as null: a line that had them
            # (an older hook's, read by Python's json) is written by json.
            if b"null" not in out or _same(out, obj):
                return str(out, "utf-8")
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    ts, kind, level, logger, role, message = columns
    shape = 0
    moved: list[str] = []
    get = obj.get
    value = get("ts")
    if type(value) is float and value == ts:
        shape |= 1
        moved.append("ts")
    if get("session_id") == session_id and type(get("session_id")) is str:
        shape |= 2
        moved.append("session_id")
    for name, column in (
        ("kind", kind),
        ("level", level),
        ("logger", logger),
        ("message", message),
        ("role", role),
    ):
        value = get(name)
        # The very object the column holds: a text the mirror did not repair.
        if value is column and type(value) is str:
            shape |= BIT[name]
            moved.append(name)
    pid = get("pid")
    if type(pid) is int and _INT64[0] <= pid <= _INT64[1]:
        shape |= BIT["pid"]
        moved.append("pid")
    else:
        pid = None
    if len(moved) == len(obj):
        return pid, shape, None
    if not moved:
        return pid, shape, dumps(obj)
    rest = obj.copy()
    for name in moved:
        del rest[name]
    return pid, shape, dumps(rest)


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
    # The shortest of 15, 16 or 17 significant digits that reads back as the
    # same double: SQLite's own JSON gives 15 only, which loses microseconds.
    forms = [f"printf('%!.{digits}g', {column})" for digits in (15, 16)]
    tests = " ".join(f"WHEN CAST({form} AS REAL) = {column} THEN {form}" for form in forms)
    return f"CASE {tests} ELSE printf('%!.17g', {column}) END"


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
