"""What a query asks for: session, kind, times, level, text, role, logger, fields; no SQL.

The command line checks each flag with these functions, so an unknown kind or
level is one line and exit 2 (docs/cli.md). :class:`Filters` is the one filter
type of every backend: each turns it into its own SQL (``_sqlite/read.py``,
``_postgres/read.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final, NamedTuple

from codex_logging._errors import InvalidFilterError
from codex_logging._mirror.schema import LEVEL_ALIASES, LEVELS
from codex_logging._record import KINDS
from codex_logging._settings import validate_session_id

#: Seconds per unit of an age such as ``10m`` or ``3d``.
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: The longest age taken (100 years, in days as the message says it): older
#: than that reaches back before any session, and a longer one overflows.
MAX_AGE_DAYS: Final = 36525
#: The most events a query returns: SQLite's and PostgreSQL's largest integer.
MAX_TAIL: Final = 2**63 - 1


def parse_age(text: str) -> float:
    """Return the seconds of an age such as ``90s``, ``10m``, ``2h``, ``3d`` or ``1w``.

    Args:
        text: The age.

    Returns:
        Seconds, from 0 (``0s``: now) to :data:`MAX_AGE_DAYS` days.

    Raises:
        InvalidFilterError: It is not a number and a unit, or is longer than that.
    """
    match = _AGE.fullmatch(text.strip())
    if match is None:
        msg = f"invalid age {text!r}: use a number and a unit, s m h d or w (10m, 2h, 3d)"
        raise InvalidFilterError(msg)
    seconds = float(match[1]) * _UNITS[match[2]]
    if not seconds <= MAX_AGE_DAYS * _UNITS["d"]:  # also inf, from 400 digits
        msg = f"invalid age {text!r}: at most {MAX_AGE_DAYS}d (100 years)"
        raise InvalidFilterError(msg)
    return seconds


def check_tail(tail: int) -> int:
    """Return ``tail``, how many events a query returns, if it is 1 to :data:`MAX_TAIL`.

    Raises:
        InvalidFilterError: Another number, or not a whole number.
    """
    if isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= MAX_TAIL:
        msg = f"tail must be a whole number from 1 to {MAX_TAIL}, not {tail!r}"
        raise InvalidFilterError(msg)
    return tail


def parse_time(value: float | str | datetime, now: float | None = None) -> float:
    """Return Unix seconds for a moment given as seconds, a datetime, an ISO time or an age.

    An age (``10m``) means that long before ``now``. An ISO time or datetime
    without a UTC offset is local time, as the text output shows times.

    Args:
        value: Unix seconds, a datetime, ``2026-11-24T10:00:00Z``, ``2026-11-24`` or ``2h``.
        now: The present, in Unix seconds; ``time.time()`` by default.

    Returns:
        Unix seconds.

    Raises:
        InvalidFilterError: A string that is neither an ISO time nor an age.
    """
    if isinstance(value, datetime):
        return value.timestamp()  # naive: local time, as datetime.timestamp() takes it
    if not isinstance(value, str):
        return float(value)
    if _AGE.fullmatch(value.strip()):
        return (time.time() if now is None else now) - parse_age(value)
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):  # not ISO; a year the platform's clock cannot hold
        msg = f"invalid time {value!r}: use an ISO time (2026-11-24T10:00:00Z) or an age (2h)"
        raise InvalidFilterError(msg) from None


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        InvalidFilterError: Any other value, named as ``what``.
    """
    if value not in choices:
        msg = f"unknown {what} {value!r}: choose from {', '.join(choices)}"
        raise InvalidFilterError(msg)
    return value


def finite_number(text: str) -> float | None:
    """Return ``text`` as a finite float, or ``None`` when it is not one."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


#: A number as a person types one: ``5``, ``-0.25``, ``1e-07``, ``.5``.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_INT64: Final = 1 << 63


def where_number(text: str) -> int | float | None:
    """Return the number ``--where KEY=VALUE`` compares a number field with, if VALUE is one.

    An integer as an exact int (a float past 64 bits, where SQLite's JSON
    holds such a number as one too), anything else as a finite float; a
    number no float holds (``1e400``, ``1e-400``) is compared as text.
    """
    if not _NUMBER.fullmatch(text):
        return None
    if _INTEGER.fullmatch(text) and len(text) <= 20:  # int() of 4,300 digits raises
        number = int(text)
        if -_INT64 <= number < _INT64:
            return number
    found = finite_number(text)
    mantissa = text.partition("e")[0].partition("E")[0]
    if found == 0 and mantissa.strip("+-.0"):
        return None  # a tiny number that is no float's
    return found


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is ``start``, ``message`` or ``end``.

    Raises:
        InvalidFilterError: Any other value.
    """
    return check_choice(kind, KINDS, "kind")


#: ``Level 25``: the name stdlib logging gives a level it has no name for.
_NUMBERED: Final = re.compile(r"level\s*(\d{1,9})", re.IGNORECASE)
#: A level name a record can carry: loguru's and logging's own names included.
_LEVEL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_ .-]{0,63}")


def check_level(level: str | int) -> int | str:
    """Return the level number ``level`` stands for, or its name to look up in the mirror.

    A number (``25``), ``Level 25``, a standard name in any case or an alias
    (``warn``) is a number at once; any other name (``success``, ``trace``)
    is returned upper-cased, to be found among the levels the mirror holds
    (:func:`resolve_level`).

    Raises:
        InvalidFilterError: Text that is no level name nor number.
    """
    if isinstance(level, int):
        return level
    text = level.strip()
    if text.isascii() and text.isdigit():  # ASCII digits: not "²" nor an Arabic-Indic 5
        if len(text) > 9:
            msg = f"level {level!r} is too large: a level number has at most 9 digits"
            raise InvalidFilterError(msg)
        return int(text)
    numbered = _NUMBERED.fullmatch(text)
    if numbered:
        return int(numbered[1])
    name = LEVEL_ALIASES.get(text.upper(), text.upper())
    if name in LEVELS:
        return LEVELS[name]
    if not _LEVEL_NAME.fullmatch(text):
        msg = (
            f"unknown level {level!r}: use a level name (debug, info, warning, error,"
            " critical, or one the mirror holds) or a number"
        )
        raise InvalidFilterError(msg)
    return name


def level_number(level: object, levelno: object) -> int | None:
    """Return a stored record's level number: its ``levelno``, else its standard name's.

    Args:
        level: The record's ``level`` column.
        levelno: Its ``levelno`` field, if any.

    Returns:
        The number, or ``None`` for a level that has none.
    """
    if isinstance(levelno, int) and not isinstance(levelno, bool):
        return levelno
    if isinstance(level, str):
        name = level.upper()
        return LEVELS.get(LEVEL_ALIASES.get(name, name))
    return None


def standard_names(minimum: int | None = None) -> tuple[str, ...]:
    """Return the standard level names and aliases, or those at or above ``minimum``.

    Args:
        minimum: A level number; ``None`` for every standard name.

    Returns:
        The names as stored (``WARNING`` and ``WARN``, ...).
    """
    names = [n for n, number in LEVELS.items() if minimum is None or number >= minimum]
    names += [alias for alias, n in LEVEL_ALIASES.items() if n in names]
    return tuple(names)


def resolve_level(
    filters: Filters,
    lookup: Callable[[str], int | None],
    held: Callable[[], Iterable[str]],
) -> Filters:
    """Return ``filters`` with a level name turned into its number, as the mirror holds it.

    Args:
        filters: The checked filters.
        lookup: The number the mirror holds for a level name (upper case), or ``None``.
        held: The level names the mirror holds, for the error message.

    Returns:
        The filters with ``min_level`` a number (or none).

    Raises:
        InvalidFilterError: A name the mirror holds no number for.
    """
    name = filters.min_level
    if not isinstance(name, str):
        return filters
    number = lookup(name)
    if number is None:
        found = {str(n).lower() for n in held() if n}
        if name.lower() in found:
            msg = (
                f"level {name.lower()!r} has no number in this mirror (its records carry no"
                " levelno): give the number instead, such as --level 25"
            )
            raise InvalidFilterError(msg, flag="--level")
        names = sorted(found | {n.lower() for n in LEVELS})
        msg = f"unknown level {name.lower()!r}: choose from {', '.join(names)}, or a number"
        raise InvalidFilterError(msg, flag="--level")
    return dataclasses.replace(filters, min_level=number)


#: The operators of ``--where``, longest first so ``!=`` is not read as ``=``.
OPERATORS: Final = ("!=", ">=", "<=", "=", ">", "<")
#: Operators that compare numbers; the others compare text.
NUMERIC_OPERATORS: Final = frozenset({">", "<", ">=", "<="})
_WHERE: Final = re.compile(r"\s*([^=!<>]+?)\s*(!=|>=|<=|=|>|<)(.*)", re.DOTALL)
#: Record fields ``--grep`` does not search: the columns it shows anyway or
#: that hold no words (docs/cli.md, "codex-logs query").
NOT_GREPPED: Final = frozenset({"ts", "session_id", "kind", "level", "levelno", "pid", "message"})


def field_text(value: object) -> str:
    """Return a record field's value as ``--where`` and ``--grep`` see it.

    A string as it is; ``true``, ``false``, ``null`` and numbers as JSON writes
    them; a list or object as its JSON text.
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class FieldTest(NamedTuple):
    """One ``--where`` test on a record field: ``user=alice``, ``status!=ok``, ``ms>250``."""

    key: str
    op: str
    value: str | float


def parse_where(text: str) -> FieldTest:
    """Return the test ``KEY=VALUE``, ``KEY!=VALUE``, ``KEY>N``, ``KEY<N``, ``KEY>=N``, ``KEY<=N``.

    ``=`` and ``!=`` compare the field's text (``true``, ``false``, ``null``),
    or its number when both hold one (:func:`where_number`: ``x=1e-07``
    finds ``1e-7``); the others compare numbers and match only fields that
    hold one.

    Args:
        text: The test, as given to ``--where``.

    Returns:
        The field name, the operator and the value (a float for numeric operators).

    Raises:
        InvalidFilterError: No operator, an empty or unusable field name, or a
            numeric operator with a value that is not a finite number.
    """
    match = _WHERE.fullmatch(text)
    if match is None or not match[1].strip():
        msg = f"invalid --where {text!r}: use KEY=VALUE, KEY!=VALUE, KEY>NUMBER or KEY<NUMBER"
        raise InvalidFilterError(msg)
    key, op, value = match[1].strip(), match[2], match[3].strip()
    if '"' in key or "\\" in key or any(ord(c) < 32 for c in key):
        msg = f"invalid --where {text!r}: a field name cannot hold quotes, backslashes or controls"
        raise InvalidFilterError(msg)
    if op not in NUMERIC_OPERATORS:
        return FieldTest(key, op, value)
    number = finite_number(value)
    if number is None:
        msg = f"invalid --where {text!r}: {op} compares numbers, got {value!r}"
        raise InvalidFilterError(msg)
    return FieldTest(key, op, number)


@dataclasses.dataclass(frozen=True)
class Filters:
    """The checked filters of one query, for any backend."""

    session_id: str | None = None
    kind: str | None = None
    since: float | None = None
    until: float | None = None
    levels: tuple[str, ...] | None = None
    grep: str | None = None
    role: str | None = None
    #: Events at this level number or above (a record's ``levelno``, else its
    #: standard name's number); a name until :func:`resolve_level` looks it up.
    min_level: int | str | None = None
    logger: str | None = None
    fields: tuple[FieldTest, ...] = ()


def build(
    *,
    session_id: str | None,
    kind: str | None,
    since: float | str | datetime | None,
    until: float | str | datetime | None,
    level: str | int | None,
    grep: str | None,
    role: str | None,
    where: Iterable[str | FieldTest] = (),
) -> Filters:
    """Check each filter and return them; relative times are taken from one ``now``."""
    now = time.time()
    return Filters(
        session_id=None if session_id is None else validate_session_id(session_id),
        kind=None if kind is None else check_kind(kind),
        since=None if since is None else parse_time(since, now),
        until=None if until is None else parse_time(until, now),
        grep=grep,
        role=role,
        min_level=None if level is None else check_level(level),
        fields=tuple(t if isinstance(t, FieldTest) else parse_where(t) for t in where),
    )
