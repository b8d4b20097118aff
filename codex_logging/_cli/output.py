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
import math
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Final, TextIO

from codex_logging._errors import hide_secrets
from codex_logging._mirror.target import SyncReport
from codex_logging._record import CORE_FIELDS

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
#: the format characters; and a lone surrogate (an escaped ``\\udfff`` in an
#: older hook's line), which no output stream can encode.
_CONTROLS: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{FORMAT_CHARACTERS}\ud800-\udfff]")
_NAMED: Final = {"\r": "\\r"}
#: JSON already escapes C0; DEL, C1, the format characters and a lone
#: surrogate (written back as the escape it was read from) are escaped as well.
_JSON_CONTROLS: Final = re.compile(f"[\x7f-\x9f{FORMAT_CHARACTERS}\ud800-\udfff]")


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
    """Return ``value`` as one line of JSON with DEL, C1 and format characters escaped too.

    A NaN or infinite number (an older hook's line may hold one) is written as
    the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, as protobuf's JSON
    mapping writes them: the output stays JSON that every parser reads.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(value), ensure_ascii=False, default=str)
    # Outside its strings JSON text is ASCII: every match is inside a string.
    return _JSON_CONTROLS.sub(_json_escaped, text)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def local_time(ts: object) -> str:
    """Return Unix seconds as local time to the millisecond; anything else escaped."""
    if isinstance(ts, int | float):
        try:
            # Rounded to the millisecond as the views' ISO times are.
            local = datetime.fromtimestamp(round(ts, 3), tz=timezone.utc).astimezone()
        except (OverflowError, ValueError, OSError):  # NaN, infinite, or out of range
            return escape(str(ts))
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
    # A field of the record named like a column only the mirror has (the line
    # number, a team mirror's source) is kept as "extra.<name>", as the write
    # path keeps a field named like one of the record's own (docs/cli.md).
    for name in _MIRROR_COLUMNS:
        column = event.get(name)
        if column is not None and name in merged and merged[name] != column:
            merged.setdefault(f"extra.{name}", merged[name])
    # The normalised columns win: ts in seconds, kind always set.
    merged.update({k: v for k, v in event.items() if v is not None})
    return merged


#: The columns a mirror adds to a record: the line number, and a team
#: mirror's source.
_MIRROR_COLUMNS: Final = ("seq", "source_id", "host", "folder")


def duration(seconds: object) -> str:
    """Return a duration the same way everywhere.

    ``850ms``, ``1.25s``, ``12.3s``, ``4m05s``, ``2h03m``: no space, so it stays
    one word in ``name=value`` output.
    """
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 9.995:
        return f"{seconds:.2f}s"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    if seconds < 3599.5:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours}h{rest:02d}m"


def _failure(record: dict[str, Any]) -> str | None:
    # "ValueError: bad input"; a bare "KeyboardInterrupt" has no message.
    kind, text = record.get("error_type"), record.get("error")
    if not kind and not text:
        return None
    return f"{kind or 'error'}: {text}" if text else str(kind)


def _ending(record: dict[str, Any]) -> str:
    # An end record says how the session went: status, error and duration.
    parts = [str(record.get("status") or "-")]
    failure = _failure(record)
    if failure is not None:
        parts.append(failure)
    if isinstance(record.get("duration_s"), int | float):
        parts.append(duration(record["duration_s"]))
    return " (" + ", ".join(parts) + ")"


def _sources(events: list[dict[str, Any]]) -> bool:
    # Whether the rows came from more than one machine or folder (a team's
    # PostgreSQL mirror): then each line says which.
    return len({event.get("source_id") for event in events}) > 1


def source_of(record: dict[str, Any]) -> str:
    """Return where a team mirror's row came from: ``host:folder``, or its source id."""
    host, folder = record.get("host"), record.get("folder")
    if host or folder:
        return f"{host or '?'}:{folder or '?'}"
    return str(record.get("source_id") or "?")


def print_events(events: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    """Write events one per line: text columns, or JSON objects with every field.

    Rows of a team mirror carry ``source_id``, ``host`` and ``folder`` in
    ``--json``; in text they are shown, as ``host:folder`` after the session,
    when the rows printed together came from more than one source.
    """
    plain = Transcript(out, colour=False)
    many = _sources(events)
    for event in events:
        team = "source_id" in event
        record = _record(event)
        if as_json:
            out.write(to_json(record) + "\n")
            continue
        message = "" if event.get("message") is None else str(event["message"])
        if event.get("role"):
            message = f"[{event['role']}] {message}"
        if event.get("kind") == "end":
            message += _ending(record)
        session = str(event.get("session_id") or "")
        if many:
            session += f"  {source_of(record)}"
        fields = (
            local_time(event.get("ts")),
            session,
            f"{event.get('kind') or '':<7}",
            f"{event.get('level') or '':<8}",
            str(event.get("logger") or "-"),
            message,
        )
        text = escape("  ".join(fields))
        extras = plain.extras(record, team=team)
        out.write(text + (f"  {extras}" if extras else "") + plain.traceback(record) + "\n")
    out.flush()


def session_line(row: dict[str, Any]) -> str:
    """Return one text line for a row of the ``sessions`` view.

    The first five fields are the contract's (id, start, end, status, events: docs/cli.md); the
    counts follow as ``name=value``.
    """
    took = duration(row["duration_s"])
    return escape(
        f"{row['session_id']}  {local_time(row['start_ts'])}  {local_time(row['end_ts'])}"
        f"  {row['status'] or '-'}  {row['events']}  messages={row['messages']}"
        f" warnings={row['warnings']} errors={row['errors']}"
        f" processes={row['processes']} duration={took}"
    )


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Failing:
    """A ``--watch`` round's failure, said once while it lasts, and its end said too."""

    def __init__(self, resumed: str) -> None:
        """``resumed`` is the line said when a round succeeds after failing."""
        self.causes: list[str] = []
        self.resumed = resumed

    def failed(self, text: str, *, again: bool = True) -> None:
        """Say ``text`` on stderr unless this failure said it already.

        ``again=False``: the last round (Ctrl-C), no other follows.
        """
        if text not in self.causes:
            self.causes.append(text)
            _say(f"warning: {text}" + (" (trying again each round)" if again else ""))

    def succeeded(self) -> None:
        """Say the failure is over, if there was one."""
        if self.causes:
            self.causes.clear()
            _say(f"warning: {self.resumed}")


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


# -- the transcript (codex-logs show) ------------------------------------------

#: Fields every line shows in its own place, not as ``key=value``.
_PLACED: Final = (CORE_FIELDS | {"seq"}) - {"redacted"}
#: What a start or end mark says in its own text, or leaves out (the scope's
#: machine, as "extra.host" on a team mirror's row); on other lines, fields like any.
_MARKED: Final = frozenset(
    {"status", "error_type", "error", "duration_s", "signal", "host", "extra.host"}
)
#: A team mirror's columns: said as ``host:folder`` when the rows printed
#: together came from several sources.
_SOURCE: Final = frozenset({"source_id", "host", "folder"})
#: Those hidden as ``key=value``, by (is a mark, is a team mirror's row).
_HIDDEN: Final = {
    (mark, team): _PLACED | (_MARKED if mark else frozenset()) | (_SOURCE if team else frozenset())
    for mark in (False, True)
    for team in (False, True)
}


def _has_traceback(record: dict[str, Any]) -> bool:
    exc = record.get("exc")
    return isinstance(exc, str) and bool(exc.strip())


#: ANSI styles, as structlog's ConsoleRenderer colours levels.
_RESET: Final = "\x1b[0m"
_DIM: Final = "\x1b[2m"
_BOLD: Final = "\x1b[1m"
_LEVEL_STYLES: Final = {
    "CRITICAL": "\x1b[31;1m",
    "ERROR": "\x1b[31m",
    "WARNING": "\x1b[33m",
    "INFO": "\x1b[32m",
    "DEBUG": "\x1b[34m",
}
_FIELD_KEY: Final = "\x1b[36m"
_MARK: Final = "\x1b[35;1m"


def use_colour(out: TextIO, choice: str = "auto") -> bool:
    """Return whether to colour ``out``: ``always``, ``never``, or ``auto``.

    ``auto`` colours a terminal, unless ``NO_COLOR`` is set and not empty.
    """
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):  # https://no-color.org: set and not empty
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


class Transcript:
    """A session as a person reads it: one line per event, tracebacks under their line.

    In the manner of structlog's ``ConsoleRenderer``: time, level, role,
    logger, message, then the record's other fields as ``key=value``; start and
    end as marks with the process, the status and the duration. Every text
    from a record is escaped (docs/cli.md).
    """

    def __init__(self, out: TextIO, *, colour: bool) -> None:
        """Write to ``out``, with ANSI colour or none."""
        self.out = out
        self.colour = colour
        self.day: str | None = None

    def _style(self, style: str, text: str) -> str:
        return f"{style}{text}{_RESET}" if self.colour and text else text

    def write(self, events: list[dict[str, Any]]) -> None:
        """Write ``events`` in order, then flush; each says its source when they have several."""
        many = _sources(events)
        for event in events:
            team = "source_id" in event
            record = _record(event)
            source = source_of(record) if many else None
            self.out.write(self.line(record, source=source, team=team) + "\n")
        self.out.flush()

    def _time(self, ts: object) -> str:
        full = local_time(ts)
        day, _, clock = full.partition(" ")
        if not clock:
            return full
        if day != self.day:  # the date once, then when it changes
            self.day = day
            return full
        return clock

    def line(self, record: dict[str, Any], source: str | None = None, *, team: bool = False) -> str:
        """Return one event's text: its line, and its traceback indented below.

        ``source``, when given, follows the time: the machine and folder a team
        mirror's row came from. ``team``: the record is such a row.
        """
        kind = record.get("kind") or "message"
        when = self._style(_DIM, self._time(record.get("ts")))
        if source is not None:
            when += " " + self._style(_DIM, escape(source))
        if kind in {"start", "end"}:
            head = self._mark(record, kind)
        else:
            level = str(record.get("level") or "-")
            head = self._style(_LEVEL_STYLES.get(level, ""), f"{escape(level):<8}")
            if record.get("role"):
                head += f" [{escape(str(record['role']))}]"
            if record.get("logger"):
                head += " " + self._style(_DIM, escape(str(record["logger"])) + ":")
            message = "" if record.get("message") is None else str(record["message"])
            head += " " + self._style(_BOLD, escape(message))
        extras = self.extras(record, team=team)
        return f"{when} {head}" + (f"  {extras}" if extras else "") + self.traceback(record)

    @staticmethod
    def traceback(record: dict[str, Any]) -> str:
        """Return the record's traceback as lines indented under its own, or ``""``."""
        if not _has_traceback(record):
            return ""
        return "".join("\n    " + escape(line) for line in record["exc"].rstrip("\n").split("\n"))

    def _mark(self, record: dict[str, Any], kind: str) -> str:
        session = escape(str(record.get("session_id") or "-"))
        if kind == "start":
            text = f"── start {session}"
            if record.get("pid") is not None:
                text += f" · pid {escape(str(record['pid']))}"
            return self._style(_MARK, text + " ──")
        parts = [str(record.get("status") or "-")]
        if record.get("signal"):
            parts.append(str(record["signal"]))
        failure = _failure(record)
        if failure is not None:
            parts.append(failure)
        if isinstance(record.get("duration_s"), int | float):
            parts.append(duration(record["duration_s"]))
        style = _MARK if parts[0] == "ok" else _LEVEL_STYLES["ERROR"]
        return self._style(style, f"── end {session} · {escape(' · '.join(parts))} ──")

    def extras(self, record: dict[str, Any], *, team: bool = False) -> str:
        """Return the record's other fields as ``key=value``, strings quoted when needed.

        ``team``: the record is a team mirror's row, whose source columns are
        not fields of the record.
        """
        hidden = _HIDDEN[record.get("kind") in {"start", "end"}, team]
        if _has_traceback(record):
            # The structured exception (structlog's dict_tracebacks) is that
            # traceback: shown once, as text.
            hidden = hidden | {"exception"}
        pairs = []
        for key, value in record.items():
            if key in hidden:
                continue
            if isinstance(value, str):
                text = value
                if not text or any(c.isspace() or c in '"=' for c in text):
                    text = json.dumps(text, ensure_ascii=False)  # quoted, as ConsoleRenderer would
            else:
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
            pairs.append(f"{self._style(_FIELD_KEY, escape(str(key)))}={escape(text)}")
        return " ".join(pairs)
