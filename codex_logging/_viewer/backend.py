"""One mirror behind the viewer's pages: SQLite or PostgreSQL, the same methods.

Each method opens the database read-only, reads one page, and closes it; the
reads themselves are ``_sqlite/read.py`` and ``_postgres/read.py``. A page of
events is addressed by an opaque cursor (text): the ``seq`` of the last row
shown in SQLite, ``ts|source_id|seq`` in PostgreSQL, whose sessions merge the
rows of many machines by time.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, Protocol

from codex_logging._errors import InvalidFilterError
from codex_logging._mirror.filters import MAX_TAIL, Filters
from codex_logging._sqlite import read as _sqlite

#: The fields a transcript line shows in its own columns; the rest are extras.
CORE_FIELDS: Final = frozenset(
    {"ts", "session_id", "kind", "level", "levelno", "logger", "role", "message", "pid", "exc"}
)


class Backend(Protocol):
    """What the pages need of a mirror."""

    name: str

    def sessions(
        self, search: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """Return the count of matching sessions and one page of them, newest first."""

    def session(self, session_id: str) -> dict[str, Any]:
        """Return one session's summary (raises UnknownSessionError)."""

    def events(
        self, filters: Filters, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        """Return the events after the cursor, each with its ``cursor``, and the next page's."""

    def cursor_at(self, session_id: str, ts: float) -> str | None:
        """Return the cursor just before the first event at or after ``ts``."""

    def timeline(self, session_id: str) -> dict[str, Any]:
        """Return the session's timeline (``_mirror/pages.py``)."""


class SqliteBackend:
    """The SQLite mirror at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = path

    def sessions(
        self, search: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        return _sqlite.sessions_page(
            self.path, search=search, status=status, offset=offset, limit=limit
        )

    def session(self, session_id: str) -> dict[str, Any]:
        return _sqlite.sessions(self.path, session_id)[0]

    def events(
        self, filters: Filters, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        start = 0 if not after else cursor_number(after, after)
        rows, following = _sqlite.events_page(self.path, filters, after=start, limit=limit)
        for row in rows:
            row["cursor"] = str(row["seq"])
        return rows, str(following)

    def cursor_at(self, session_id: str, ts: float) -> str | None:
        # Past the last event: after it, so only what comes later is shown.
        return str(_sqlite.seq_at(self.path, session_id, ts) - 1)

    def timeline(self, session_id: str) -> dict[str, Any]:
        return _sqlite.timeline(self.path, session_id)


class PostgresBackend:
    """The PostgreSQL mirror at ``url``; psycopg is imported on first use."""

    def __init__(self, url: str) -> None:
        from codex_logging._postgres.db import display_url  # noqa: PLC0415 - psycopg only on use

        self.url = url
        self.name = display_url(url)

    def sessions(
        self, search: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        from codex_logging._postgres.read import sessions_page_postgres  # noqa: PLC0415

        return sessions_page_postgres(
            self.url, search=search, status=status, offset=offset, limit=limit
        )

    def session(self, session_id: str) -> dict[str, Any]:
        from codex_logging._postgres.read import sessions_postgres  # noqa: PLC0415

        return sessions_postgres(self.url, session_id)[0]

    def events(
        self, filters: Filters, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        from codex_logging._postgres.read import events_page_postgres  # noqa: PLC0415

        rows, following = events_page_postgres(
            self.url, filters, after=_pg_cursor(after), limit=limit
        )
        for row in rows:
            row["cursor"] = _pg_text(row["ts"], row["source_id"], row["seq"])
        return rows, "" if following is None else _pg_text(*following)

    def cursor_at(self, session_id: str, ts: float) -> str | None:
        del session_id
        # Every row at ts or later sorts after (ts, "", -1).
        return f"{float(ts)!r}||-1"

    def timeline(self, session_id: str) -> dict[str, Any]:
        from codex_logging._postgres.read import timeline_postgres  # noqa: PLC0415

        return timeline_postgres(self.url, session_id)


def _pg_text(ts: float | None, source: str, seq: int) -> str:
    return f"{'' if ts is None else repr(float(ts))}|{source}|{seq}"


def _pg_cursor(text: str | None) -> tuple[float | None, str, int] | None:
    if not text:
        return None
    try:
        ts, source, seq = text.split("|", 2)
        moment = None if ts == "" else float(ts)
        if moment is not None and not math.isfinite(moment):
            raise ValueError  # noqa: TRY301 - one message for every bad cursor
    except ValueError:
        msg = f"invalid cursor {text!r}"
        raise InvalidFilterError(msg) from None
    return moment, source, cursor_number(seq, text)


#: A cursor's number: at most 19 ASCII digits, -1 at the least (Python's
#: int() also takes other scripts' digits and blanks).
_NUMBER: Final = re.compile(r"-?[0-9]{1,19}")


def cursor_number(text: str, cursor: str) -> int:
    """Return the number in a cursor, one the databases' 64-bit integers hold.

    Raises:
        InvalidFilterError: Anything else (named as ``cursor``).
    """
    if _NUMBER.fullmatch(text) is None or not -1 <= int(text) <= MAX_TAIL:
        msg = f"invalid cursor {cursor!r}"
        raise InvalidFilterError(msg)
    return int(text)


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    """Return one row as the transcript shows it: core columns, traceback, extra fields.

    The values stay data; the page puts them in as text, never as markup.
    """
    try:
        record = json.loads(row["data"]) if row.get("data") else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    exc = record.get("exc")
    pid = record.get("pid")
    if isinstance(pid, float) and not math.isfinite(pid):  # an older hook's NaN: no JSON for it
        pid = None
    fields = {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in record.items()
        if key not in CORE_FIELDS
    }
    source = row.get("source_id")
    anchor = f"e-{row['seq']}" if source is None else f"e-{str(source)[:12]}-{row['seq']}"
    return {
        "cursor": row["cursor"],
        "anchor": anchor,
        "seq": row["seq"],
        "ts": row["ts"],
        "kind": row["kind"],
        "level": row["level"],
        "logger": row["logger"],
        "role": row["role"],
        "message": row["message"],
        "pid": pid,
        "exc": exc if isinstance(exc, str) else None,
        "fields": fields,
        "source": source,
    }
