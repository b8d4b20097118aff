"""How records look on a terminal and in ``--json``: nothing from a record is printed raw.

Control characters a logged message could carry (ESC, BEL, CR, DEL, C1) are
escaped, so a message cannot move the cursor or retitle the window; so are
Unicode's invisible format characters (bidi overrides, zero-width spaces and
joiners, line and paragraph separators), so a message cannot reorder or hide
what is shown (docs/cli.md). A newline inside a message starts an indented
continuation line.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import datetime, timezone
from typing import Any, Final, TextIO

from codex_logging._errors import hide_secrets
from codex_logging._mirror.target import SyncReport

#: Unicode's format characters (category Cf: bidi embeddings, overrides and
#: isolates U+202A-202E and U+2066-2069, marks U+200E/200F/061C, zero-width
#: space, joiners U+200B-200D, word joiner, BOM U+FEFF, soft hyphen, tags),
#: and the line and paragraph separators U+2028/2029 (Zl, Zp), as of Unicode
#: 15.1: invisible, yet "\u202egnp.exe" shows as "exe.png". Listed, not read
#: from ``unicodedata`` at import (a third of a second); a test compares them.
FORMAT_CHARACTERS: Final = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
#: C0 controls but tab and newline, DEL and C1: what could move the cursor,
#: ring the bell or retitle the window (tab only moves right: it stays); and
#: the format characters.
_CONTROLS: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{FORMAT_CHARACTERS}]")
_NAMED: Final = {"\r": "\\r"}
#: JSON already escapes C0; DEL, C1 and the format characters are escaped as well.
_JSON_CONTROLS: Final = re.compile(f"[\x7f-\x9f{FORMAT_CHARACTERS}]")


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    if code < 0x100:
        return _NAMED.get(char, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON escapes UTF-16 code units: a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escape(text: str) -> str:
    """Return ``text`` with its control and format characters escaped, continuation lines indented.

    A control character is shown as ``\\x1b`` (``\\r`` for CR), a format
    character as ``\\u202e`` or ``\\U000e0001``.
    """
    return _CONTROLS.sub(_escaped, text).replace("\n", "\n    ")


def one_line(text: str, *sources: str | None) -> str:
    """Return an error or warning as one escaped line, its passwords hidden.

    Args:
        text: The message; a driver's may span several lines.
        sources: The URLs or connection strings it may quote (see
            :func:`~codex_logging._errors.hide_secrets`).
    """
    text = hide_secrets(text, *sources)
    return escape(" ".join(part.strip() for part in text.splitlines() if part.strip()))


def to_json(value: object) -> str:
    """Return ``value`` as one line of JSON with DEL, C1 and format characters escaped too."""
    # Outside its strings JSON text is ASCII: every match is inside a string.
    return _JSON_CONTROLS.sub(_json_escaped, json.dumps(value, ensure_ascii=False, default=str))


def local_time(ts: object) -> str:
    """Return Unix seconds as local time to the millisecond; anything else escaped."""
    if isinstance(ts, int | float):
        # Rounded to the millisecond as the views' ISO times are.
        local = datetime.fromtimestamp(round(ts, 3), tz=timezone.utc).astimezone()
        return local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return "-" if ts is None else escape(str(ts))


def _record(event: dict[str, Any]) -> dict[str, Any]:
    # The record's own fields plus seq: a column the record has no value for
    # (no logger, no role) is left out, never printed as null.
    data = event.pop("data", None)
    merged: dict[str, Any] = {}
    if isinstance(data, str):
        with contextlib.suppress(ValueError):
            loaded = json.loads(data)
            if isinstance(loaded, dict):
                merged.update(loaded)
    if not merged:  # the older logs table: its columns are the record
        return event
    # The normalised columns win: ts in seconds, kind always set.
    merged.update({k: v for k, v in event.items() if v is not None})
    return merged


def _ending(record: dict[str, Any]) -> str:
    # An end record says how the session went: status, error and duration.
    parts = [str(record.get("status") or "-")]
    if record.get("error_type") or record.get("error"):
        parts.append(f"{record.get('error_type') or 'error'}: {record.get('error') or ''}")
    if isinstance(record.get("duration_s"), int | float):
        parts.append(f"{record['duration_s']:.3f} s")
    return " (" + ", ".join(parts) + ")"


def print_events(events: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    """Write events one per line: text columns, or JSON objects with every field."""
    for event in events:
        record = _record(event)
        if as_json:
            out.write(to_json(record) + "\n")
            continue
        message = "" if event.get("message") is None else str(event["message"])
        if event.get("role"):
            message = f"[{event['role']}] {message}"
        if event.get("kind") == "end":
            message += _ending(record)
        fields = (
            local_time(event.get("ts")),
            str(event.get("session_id") or ""),
            f"{event.get('kind') or '':<7}",
            f"{event.get('level') or '':<8}",
            str(event.get("logger") or "-"),
            message,
        )
        out.write(escape("  ".join(fields)) + "\n")
    out.flush()


def session_line(row: dict[str, Any]) -> str:
    """Return one text line for a row of the ``sessions`` view.

    The first five fields are the contract's (id, start, end, status, events: docs/cli.md); the
    counts follow as ``name=value``.
    """
    duration = "-" if row["duration_s"] is None else f"{row['duration_s']:g}s"
    return escape(
        f"{row['session_id']}  {local_time(row['start_ts'])}  {local_time(row['end_ts'])}"
        f"  {row['status'] or '-'}  {row['events']}  messages={row['messages']}"
        f" warnings={row['warnings']} errors={row['errors']}"
        f" processes={row['processes']} duration={duration}"
    )


class Progress:
    """Files, lines and rate on one refreshed stderr line, only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        """Show progress on ``stream``."""
        self.stream = stream
        self.started = time.monotonic()
        self.shown = 0.0

    def __call__(self, session_id: str, report: SyncReport) -> None:
        """Refresh the line, at most five times a second."""
        now = time.monotonic()
        if now - self.shown < 0.2:
            return
        self.shown = now
        lines = report.rows_inserted + report.lines_quarantined
        rate = lines / max(now - self.started, 1e-9)
        self.stream.write(
            f"\r{report.files} files, {lines:,} lines, {rate:,.0f} lines/s ({session_id})\x1b[K"
        )
        self.stream.flush()

    def done(self) -> None:
        """Clear the line."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
