"""What a query asks for: session, kind, times, level, text, role; checked, without SQL.

The command line checks each flag with these functions, so an unknown kind or
level is one line and exit 2 (docs/cli.md). :class:`Filters` is the one filter
type of every backend: each turns it into its own SQL (``_sqlite/read.py``,
``_postgres/read.py``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime
from typing import Final

from codex_logging._errors import InvalidFilterError
from codex_logging._mirror.schema import KINDS, LEVEL_ALIASES, LEVELS
from codex_logging._settings import validate_session_id

#: Seconds per unit of an age such as ``10m`` or ``3d``.
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_age(text: str) -> float:
    """Return the seconds of an age such as ``90s``, ``10m``, ``2h``, ``3d`` or ``1w``.

    Args:
        text: The age.

    Returns:
        Seconds, more than zero.

    Raises:
        InvalidFilterError: It is not a positive number and a unit.
    """
    match = _AGE.fullmatch(text.strip())
    seconds = float(match[1]) * _UNITS[match[2]] if match else 0.0
    if not seconds > 0:
        msg = f"invalid age {text!r}: use a number and a unit, s m h d or w (10m, 2h, 3d)"
        raise InvalidFilterError(msg)
    return seconds


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
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        msg = f"invalid time {value!r}: use an ISO time (2026-11-24T10:00:00Z) or an age (2h)"
        raise InvalidFilterError(msg) from None
    return moment.timestamp()


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is ``start``, ``message`` or ``end``.

    Raises:
        InvalidFilterError: Any other value.
    """
    if kind not in KINDS:
        msg = f"unknown kind {kind!r}: choose from {', '.join(KINDS)}"
        raise InvalidFilterError(msg)
    return kind


def check_level(level: str) -> str:
    """Return the standard name of ``level``, given in any case or as an alias.

    Raises:
        InvalidFilterError: An unknown level.
    """
    name = LEVEL_ALIASES.get(level.upper(), level.upper())
    if name not in LEVELS:
        msg = f"unknown level {level!r}: choose from {', '.join(LEVELS)}"
        raise InvalidFilterError(msg)
    return name


def level_names(minimum: str) -> tuple[str, ...]:
    """Return the stored level names at or above ``minimum``, aliases included.

    Args:
        minimum: A level name, any case: ``debug``, ``INFO``, ``warning``, ``warn``, ...

    Returns:
        The names a record at that level or above is stored with.

    Raises:
        InvalidFilterError: An unknown level.
    """
    name = check_level(minimum)
    names = [n for n, number in LEVELS.items() if number >= LEVELS[name]]
    names += [alias for alias, n in LEVEL_ALIASES.items() if n in names]
    return tuple(names)


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


def build(
    *,
    session_id: str | None,
    kind: str | None,
    since: float | str | datetime | None,
    until: float | str | datetime | None,
    level: str | None,
    grep: str | None,
    role: str | None,
) -> Filters:
    """Check each filter and return them; relative times are taken from one ``now``."""
    now = time.time()
    return Filters(
        session_id=None if session_id is None else validate_session_id(session_id),
        kind=None if kind is None else check_kind(kind),
        since=None if since is None else parse_time(since, now),
        until=None if until is None else parse_time(until, now),
        levels=None if level is None else level_names(level),
        grep=grep,
        role=role,
    )
