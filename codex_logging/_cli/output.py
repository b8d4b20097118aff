"""How records look on a terminal and in ``--json``: nothing from a record is printed raw.

Control characters a logged message could carry (ESC, BEL, CR, DEL, C1) are
escaped, so a message cannot move the cursor or retitle the window
(docs/cli.md). A newline inside a message starts an indented continuation line.
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

#: C0 controls but tab and newline, DEL and C1: what could move the cursor,
#: ring the bell or retitle the window. Tab only moves right: it stays.
_CONTROLS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED: Final = {"\r": "\\r"}
#: JSON already escapes C0; DEL and C1 are escaped as well.
_JSON_CONTROLS: Final = re.compile("[\x7f-\x9f]")


def escape(text: str) -> str:
    """Return ``text`` with its control characters escaped and continuation lines indented."""
    escaped = _CONTROLS.sub(lambda m: _NAMED.get(m[0], f"\\x{ord(m[0]):02x}"), text)
    return escaped.replace("\n", "\n    ")


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
    """Return ``value`` as one line of JSON with DEL and C1 escaped too."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return _JSON_CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


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
