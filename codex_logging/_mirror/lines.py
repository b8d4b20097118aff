"""One line of a session file into an event row or a quarantined line.

No database: the sync engine (``_mirror/engine.py``) calls :meth:`LineParser.take` for
each complete line, :meth:`LineParser.settle` before it hands a batch of rows
to a target (the credential-shape check of plain lines is done there, once
per batch), and :meth:`LineParser.begin` at each new file.
Whatever a line holds, it ends in exactly one place (docs/mirror.md, "Guarantees"):
a row of ``session_events``, or a row of ``session_ingest_errors`` with the
reason; a torn fragment glued to a whole record gives one of each.

Every text value stored is valid UTF-8, and the mirror holds no credential
shapes: lines are checked with the write path's :class:`Redactor` (its key
rules and its shape rules), since another tool may have written them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Final

from codex_logging._mirror.compact import BIT, split
from codex_logging._redaction.redactor import Redactor
from codex_logging._settings import CACHE_SIZE

#: ``(session_id, seq, ts, kind, level, logger, role, message, data, record, values)``:
#: ``data`` the line's text as stored, ``record`` the object it holds (a
#: compact target splits it: ``_mirror/compact.py``), or None for a line
#: longer than :data:`_JOIN_LIMIT`, whose record is read again from ``data``
#: when needed (:func:`record_of`), so the long text and its parsed copy are
#: not both held while the batch waits (docs/performance.md, "Sync memory");
#: ``values`` the row's compact values but its session (``seq, ts, kind,
#: level, logger, role, message, pid, shape, fields``: ``session_rows``'
#: order) when they were made from the line's text already (a line in the
#: write path's shape), else None.
EventRow = tuple[
    str,
    int,
    float | None,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    str,
    dict[str, Any] | None,
    tuple[Any, ...] | None,
]
#: ``(session_id, seq, byte_offset, error, raw)``
ErrorRow = tuple[str, int, int, str, "str | bytes"]

TORN: Final = "torn record"
_LEGACY_KINDS: Final = {"session_start": "start", "session_end": "end"}
#: Lines longer than this are shape-checked alone, not joined with the others.
_JOIN_LIMIT: Final = 1 << 16
#: A long line's shape check looks at windows this long, overlapping by more
#: than the longest credential the rules find (a PEM block of an 8192-bit key
#: is about 6.5 KB).
_WINDOW: Final = 1 << 20
_OVERLAP: Final = 1 << 16
#: The types a text column takes as they are.
_PLAIN: Final = frozenset({str, type(None)})
#: The rest of a line in the write path's shape after its head: members
#: written without blanks, each value a string without escapes or one bare
#: word (a number, true, false, null). Every key then ends in ``":``, and
#: nothing else does.
_COMPACT_REST: Final = re.compile(r'(?:,"[^"]*":(?:"[^"]*"|[-+.\w]+))*\}')
#: In such a rest: an integer of 19 digits or more, which orjson may read as
#: a rounded float (see :data:`_EXACT_INTS`).
_LONG_INT: Final = re.compile(r'":-?\d{19}')
#: A head value that no credential rule can read across into another field.
_INERT: Final = re.compile(r"[A-Za-z0-9_.\-]*")
#: The ``shape`` of a line split from its text, with a ``role`` and without:
#: every column holds its field.
_ALL_FIELDS: Final = sum(BIT.values())
_ALL_BUT_ROLE: Final = _ALL_FIELDS & ~BIT["role"]
#: A 64-bit ``pid`` (the ``session_rows.pid`` column) is at least its
#: negation and below it; a float below it in magnitude is no integer orjson
#: rounded (see :data:`_EXACT_INTS`).
_INT64_LIMIT: Final = 1 << 63


def _fast_parser() -> tuple[Callable[[bytes], Any], type[Exception]]:
    try:
        import orjson  # noqa: PLC0415 - optional extra, looked up once
    except ImportError:
        return json.loads, ValueError
    return orjson.loads, orjson.JSONDecodeError


_fast_loads, _FastError = _fast_parser()
#: Whether orjson reads the lines: only then is a line's own text taken as
#: its fields' JSON (Python's json also takes NaN, which is not JSON).
_SPLIT_FROM_TEXT: Final = _fast_loads is not json.loads


#: orjson reads an integer outside [-2**63, 2**64) as a float: such a float
#: may be a rounded integer, and the line is read again by Python's json.
_EXACT_INTS: Final = (-(2.0**63), 2.0**64)


def _rounded(values: Any) -> bool:
    """Return whether a parsed value holds a float orjson may have rounded from an integer.

    A flat record's values are looked at in one pass; containers go on a
    stack, not into recursion (a line may nest as deep as orjson reads).
    """
    low, high = _EXACT_INTS
    stack = [values]
    while stack:
        for value in stack.pop():
            kind = type(value)
            if kind is float:
                if not low <= value < high:
                    return True
            elif kind is dict:
                stack.append(value.values())
            elif kind is list:
                stack.append(value)
    return False


def loads(raw: bytes) -> Any:
    """Parse one line: orjson when installed, else (or when it refuses or rounds) json.

    Args:
        raw: The line.

    Returns:
        The value.
    """
    try:
        value = _fast_loads(raw)
    except _FastError:
        # Older hooks may write what only Python's json takes (NaN, big ints).
        return json.loads(raw)
    if _rounded(value.values() if type(value) is dict else [value]):
        return json.loads(raw)
    return value


def record_of(row: EventRow) -> dict[str, Any]:
    """Return the record a row holds: its own, or (for a long line) read from its data.

    Args:
        row: An event row.

    Returns:
        The record, as the row's ``data`` holds it.
    """
    record = row[9]
    return record_in(row[8]) if record is None else record


def split_of(row: EventRow) -> tuple[int | None, int, str | None]:
    """Return a row's compact split ``(pid, shape, fields)`` (``_mirror/compact.py``).

    Args:
        row: An event row.

    Returns:
        The split the parser made from the line's text (the end of its
        values), or one made now from its record.
    """
    made = row[10]
    if made is None:
        return split(record_of(row), row[0], row[2:8])
    pid, shape, fields = made[7:]
    return pid, shape, fields


def values_of(row: EventRow) -> tuple[Any, ...]:
    """Return a row's compact values but its session, in ``session_rows``' order (``compact.py``).

    Args:
        row: An event row.

    Returns:
        ``(seq, ts, kind, level, logger, role, message, pid, shape, fields)``.
    """
    return (*row[1:8], *split_of(row))


def record_in(text: str) -> dict[str, Any]:
    """Return the record a row's ``data`` holds (read with Python's json, as a long line is).

    Args:
        text: The row's ``data``.

    Returns:
        The record, or an empty one when the text holds no object.
    """
    found = json.loads(text)
    return found if isinstance(found, dict) else {}


class _KeyVerdicts(dict[str, bool]):
    """``verdicts[key]``: whether the redactor hides values under ``key``, asked once."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def __missing__(self, key: str) -> bool:
        # Secret by its name, or holding a secret itself (a token as a key).
        counter = [0]
        self._redactor.text(key, counter)
        secret = counter[0] > 0 or self._redactor.is_secret_key(key)
        if len(self) < CACHE_SIZE:  # bounded: foreign files may hold any keys
            self[key] = secret
        return secret


class LineParser:
    """Turn complete lines into rows; one instance per sync call (it caches verdicts).

    Rows are final only after :meth:`settle`.
    """

    def __init__(self) -> None:
        """Build the redactor the mirror's copy goes through."""
        self._redactor = Redactor()
        # The quick check over a batch of flat JSON lines without escapes:
        # every rule, on the lines' text, where each string value stands as it
        # is. Their keys go through the key rules, so the "name": rule skips
        # the keys (reading every '":' doubled the sync's cost, measured).
        self._shapes = Redactor(flat_json=True)
        self._secret_key = _KeyVerdicts(self._redactor)
        self._clean_keys: set[str] = set()
        #: Indexes in ``events`` of flat lines whose shape check is still due:
        #: one check over all of them in :meth:`settle` is far cheaper than
        #: one per line, and almost always finds nothing.
        self._unchecked: list[int] = []
        #: Where in its line each of those is checked from: 0, or for a line
        #: split from its text, its message (see :meth:`_writer_row`).
        self._checks: list[int] = []
        #: The texts of heads (session id to logger) known plain, and the
        #: words known plain (see :meth:`_plain_head`).
        self._plain_heads: set[str] = set()
        self._plain_words: set[str] = set()

    def take(  # noqa: PLR0917 - called per line
        self,
        session_id: str,
        seq: int,
        offset: int,
        raw: bytes,
        events: list[EventRow],
        errors: list[ErrorRow],
    ) -> int:
        """Append line ``seq`` (without its ``\\n``) to ``events`` or ``errors``.

        Never raises for anything the line holds: a line that cannot be
        parsed or converted is quarantined with the reason.

        Args:
            session_id: The file's session.
            seq: The line number.
            offset: The byte offset of the line in the file.
            raw: The line's bytes.
            events: Receives an event row.
            errors: Receives a quarantine row (and a torn fragment's row).

        Returns:
            The byte offset of the event appended (after a torn fragment, the
            offset of the record glued to it), or -1 when none was.
        """
        writer_shaped = False
        try:
            try:
                obj = _fast_loads(raw)
                if type(obj) is dict:
                    writer_shaped = (
                        _SPLIT_FROM_TEXT
                        and len(raw) <= _JOIN_LIMIT
                        and raw.startswith(b'{"ts":')
                        and raw.find(b"\\") < 0
                        and raw.find(b"[") < 0
                        and raw.find(b"{", 1) < 0
                    )
                    # The line in the write path's shape is checked for rounded
                    # integers in _writer_row, in its text.
                    if not writer_shaped and _rounded(obj.values()):
                        obj = json.loads(raw)
            except _FastError:
                obj = json.loads(raw)  # what only Python's json takes: NaN, big ints
            if type(obj) is not dict:
                msg = f"not a JSON object but {type(obj).__name__}"
                raise TypeError(msg)  # noqa: TRY301 - one path for every bad line
        except (ValueError, TypeError, RecursionError) as exc:
            glued = glued_record(raw)
            if glued is None:
                errors.append((session_id, seq, offset, _reason(exc), self.quarantined(raw)))
                return -1
            # A writer died mid-record and another appended after it: the torn
            # fragment is quarantined and the record glued to it is taken as the
            # event, both under this line's seq (docs/mirror.md: seq is the line number).
            cut, obj = glued
            errors.append((session_id, seq, offset, TORN, self.quarantined(raw[:cut])))
            raw = raw[cut:]
            offset += cut
        try:
            index = len(events)
            row = None
            if writer_shaped:
                row = self._writer_row(session_id, seq, obj, raw, index)
                if row is None and _rounded(obj.values()):
                    obj = json.loads(raw)
            events.append(self._event(session_id, seq, obj, raw, index) if row is None else row)
        except Exception as exc:  # any conversion failure stays with its line
            errors.append((session_id, seq, offset, _reason(exc), self.quarantined(raw)))
            return -1
        return offset

    def take_text(  # noqa: PLR0917 - the arguments of take
        self,
        session_id: str,
        seq: int,
        offset: int,
        text: str,
        events: list[EventRow],
        errors: list[ErrorRow],
    ) -> int:
        """:meth:`take` for a long line that the caller holds only as ASCII text.

        The row's ``data`` is that same ``str``, so the line is held once, plus
        its parsed object while the row is built (sync memory ~2x the longest
        line: docs/performance.md, "Sync memory"). A line that is not a JSON object goes the way of
        :meth:`take`.

        Args:
            session_id: The file's session.
            seq: The line number.
            offset: The byte offset of the line in the file.
            text: The line, decoded; ASCII.
            events: Receives an event row.
            errors: Receives a quarantine row (and a torn fragment's row).

        Returns:
            As :meth:`take`.
        """
        try:
            # Python's json, not orjson: orjson copies the strings into its own
            # document before it builds the objects (one more copy of the line,
            # measured); json takes what orjson takes, with the same values.
            obj = json.loads(text)
        except (ValueError, RecursionError):
            obj = None
        if type(obj) is not dict:
            del obj
            return self.take(session_id, seq, offset, text.encode(), events, errors)
        try:
            events.append(self._event(session_id, seq, obj, text, len(events)))
        except Exception as exc:  # any conversion failure stays with its line
            errors.append((session_id, seq, offset, _reason(exc), self.quarantined(text.encode())))
            return -1
        return offset

    def begin(self) -> None:
        """Start a new file: forget the checks still due for another file's rows."""
        self._unchecked.clear()
        self._checks.clear()

    def settle(self, events: list[EventRow]) -> None:
        """Finish the shape checks of the flat lines queued in ``events`` (before a commit).

        Args:
            events: The rows :meth:`take` appended to since the last call.
        """
        unchecked, checks = self._unchecked, self._checks
        if not unchecked:
            return
        # Long lines are checked one by one, short ones joined: no copy of a long line.
        long_lines = [i for i in unchecked if len(events[i][8]) > _JOIN_LIMIT]
        counter = [0]
        if len(long_lines) < len(unchecked):
            joined = "\n".join(
                [
                    events[i][8][at:]
                    for i, at in zip(unchecked, checks, strict=True)
                    if len(events[i][8]) <= _JOIN_LIMIT
                ]
            )
            self._shapes.text(joined, counter)
        if counter[0] or long_lines:  # rare: find the lines that hold a secret
            for i in unchecked if counter[0] else long_lines:
                row = events[i]
                if self._holds_shape(row[8]):
                    raw = row[8].encode()
                    events[i] = self._event(row[0], row[1], loads(raw), raw, -1)
        unchecked.clear()
        checks.clear()

    def _holds_shape(self, text: str) -> bool:
        """Return whether the flat line ``text`` holds a credential shape.

        A long line is looked at in windows of :data:`_WINDOW` characters that
        overlap by :data:`_OVERLAP` (longer than any shape the rules find), so
        the check never copies the whole line (the rules lower-case what
        they scan): a long line costs about twice its size at most while it
        waits (docs/performance.md, "Sync memory").
        """
        counter = [0]
        if len(text) <= _WINDOW + _OVERLAP:
            self._shapes.text(text, counter)
            return counter[0] > 0
        for start in range(0, len(text), _WINDOW):
            self._shapes.scan(text[start : start + _WINDOW + _OVERLAP], counter)
            if counter[0]:
                return True
        return False

    def _event(
        self, session_id: str, seq: int, obj: dict[str, Any], raw: bytes | str, index: int
    ) -> EventRow:
        """Build the row from the line's bytes, or its text (:meth:`take_text`).

        ``index`` is the row's place in ``events``, or -1 to check it now.
        """
        if isinstance(raw, bytes):
            text = raw.decode("utf-8")  # json.loads also takes UTF-16/32: those are quarantined
            backslash = raw.find(b"\\") >= 0
            nested = raw.find(b"[") >= 0 or raw.find(b"{", 1) >= 0
            escaped = backslash and b"\\u" in raw  # only an escape makes a lone surrogate
        else:
            text = raw
            backslash = text.find("\\") >= 0
            nested = text.find("[") >= 0 or text.find("{", 1) >= 0
            escaped = backslash and "\\u" in text
        # A flat object with no escapes, whose keys are known to be clean, has
        # its values as they are in the line: the line's shape check is
        # deferred to settle(). Anything else takes the full redaction path.
        if (
            index < 0
            or backslash
            or nested
            or (not self._clean_keys.issuperset(obj) and not self._keys_clean(obj))
        ):
            obj, text = self._redacted(obj, text)
        else:
            self._unchecked.append(index)
            self._checks.append(0)
        get = obj.get
        ts = get("ts")
        kind, level, logger, role, message = (
            get("kind"),
            get("level"),
            get("logger"),
            get("role"),
            get("message"),
        )
        if type(kind) is not str:
            kind = legacy_kind(obj)
        if escaped or not (
            type(level) in _PLAIN
            and type(logger) in _PLAIN
            and type(role) in _PLAIN
            and type(message) in _PLAIN
        ):
            kind, level, logger, role, message = (
                column_text(value, escaped) for value in (kind, level, logger, role, message)
            )
        return (  # type: ignore[return-value]  # the columns were made text just above
            session_id,
            seq,
            ts if type(ts) is float and ts - ts == 0.0 else _ts(ts),
            kind,
            level,
            logger,
            role,
            message,
            text,
            None if len(text) > _JOIN_LIMIT else obj,
            None,
        )

    def _writer_row(
        self, session_id: str, seq: int, obj: dict[str, Any], raw: bytes, index: int
    ) -> EventRow | None:
        """Return the row of a line in the write path's own shape, already split; else None.

        That shape (``_write/sink.py``, ``record_head``): a flat object
        without escapes whose text starts with a float ``ts``, then the file's
        ``session_id``, ``kind``, ``level``, ``logger`` and ``message`` as
        strings, a 64-bit ``pid`` and maybe a ``role`` string, in this order,
        without blanks; each key once. Its values are as they are in its
        text, so the compact split is taken from the text: the columns hold
        the head, and the fields no column holds are the rest of the line as
        it is. The head is checked by writing it out from the parsed values
        and comparing: any other text differs. The row is what
        :meth:`_event` and :func:`~codex_logging._mirror.compact.split` give
        (tests/test_lines.py compares them) at about half the cost.

        The shape check is deferred as for any flat line, over the line from
        ``"message"`` on: what every rule reads there is what it reads in
        the whole line, since the values before (the file's session id,
        ``kind``, ``level``, ``logger``) must be inert words (letters,
        digits, ``_.-``: no quote, mark or bracket a rule could read on from;
        no keyword that lets a rule run) and are each checked alone, as the
        record's redaction reads them (remembered when so). The fields keep
        the line's own text: the same JSON as the record's, its numbers as
        the line wrote them (``1e-07`` from Python's json where orjson
        writes ``1e-7``).
        """
        try:
            ts, kind, level, logger = obj["ts"], obj["kind"], obj["level"], obj["logger"]
            message, pid = obj["message"], obj["pid"]
        except KeyError:  # not in the shape: the check below returns
            ts = kind = level = logger = message = pid = None
        role = obj.get("role")
        if (
            ts.__class__ is not float
            # Not NaN or infinite, nor an integer orjson read as a float.
            or not -_INT64_LIMIT < ts < _INT64_LIMIT
            or pid.__class__ is not int
            or not -_INT64_LIMIT <= pid < _INT64_LIMIT
            or (role is not None and role.__class__ is not str)
        ):
            return None
        text = raw.decode("utf-8")
        comma = text.find(",", 6)  # after the ts (none: the head below does not match)
        # The head written out from the values, each text in its quotes as it is.
        columns = (
            f'"session_id":"{session_id}","kind":"{kind}","level":"{level}","logger":"{logger}",'
        )
        tail = f'"message":"{message}","pid":{pid}'
        if role is not None:
            tail = f'{tail},"role":"{role}"'
        message_at = comma + 1 + len(columns)
        if not (text.startswith(columns, comma + 1) and text.startswith(tail, message_at)):
            return None
        rest = text[message_at + len(tail) :]
        # JSON's blanks are " \t\r\n"; a string holds no tab or CR (orjson read it).
        if (
            "\t" in rest
            or "\r" in rest
            or _LONG_INT.search(rest) is not None
            or (" " in rest and _COMPACT_REST.fullmatch(rest) is None)
        ):
            return None
        if (
            # Each key once: a repeated key's last value is the record's.
            len(obj) != (7 if role is None else 8) + rest.count('":')
            or not (self._clean_keys.issuperset(obj) or self._keys_clean(obj))
            or not (columns in self._plain_heads or self._plain_head(columns, obj))
        ):
            return None
        self._unchecked.append(index)
        self._checks.append(message_at)
        fields = None if len(rest) == 1 else "{" + rest[1:]
        shape = _ALL_BUT_ROLE if role is None else _ALL_FIELDS
        values = (seq, ts, kind, level, logger, role, message, pid, shape, fields)
        return (session_id, seq, ts, kind, level, logger, role, message, text, obj, values)

    def _plain_head(self, columns: str, obj: dict[str, Any]) -> bool:
        """Return whether the values before the message are plain words; remember the head's text.

        The session id, ``kind``, ``level`` and ``logger`` (:meth:`_plain`).
        """
        words = self._plain_words
        for name in ("session_id", "kind", "level", "logger"):
            value = obj[name]
            if value not in words:
                if not self._plain(value):
                    return False
                if len(words) >= CACHE_SIZE:  # bounded; the frequent ones come back
                    words.clear()
                words.add(value)
        if len(self._plain_heads) >= CACHE_SIZE:
            self._plain_heads.clear()
        self._plain_heads.add(columns)
        return True

    def _plain(self, value: str) -> bool:
        """Return whether a value before the message is a plain word (see :meth:`_writer_row`).

        An inert word (letters, digits, ``_.-``) that lets no rule run and
        that the record's redaction leaves as it is.
        """
        if _INERT.fullmatch(value) is None or not self._shapes.enables_no_rule(value):
            return False
        # No rule of today's finds anything in such a word; one that needs no
        # keyword would, and is asked here.
        counter = [0]
        self._redactor.text(value, counter)
        return not counter[0]

    def _keys_clean(self, obj: dict[str, Any]) -> bool:
        """Return whether no key of a flat object is secret, remembering clean keys."""
        for key in obj:
            if self._secret_key[key]:
                return False
            if len(self._clean_keys) < CACHE_SIZE:  # bounded: foreign keys may be endless
                self._clean_keys.add(key)
        return True

    def _redacted(self, obj: dict[str, Any], text: str) -> tuple[dict[str, Any], str]:
        """Return the line's object and text with secrets replaced (the line itself if none)."""
        counter = [0]
        redacted = self._redactor.mapping(obj, counter)
        if not counter[0]:
            return obj, text
        return redacted, _dumps(redacted)

    def quarantined(self, raw: bytes) -> str | bytes:
        """Return a bad line as stored: text if UTF-8, else its bytes; shapes redacted.

        Args:
            raw: The line's bytes.

        Returns:
            The value for ``session_ingest_errors.raw``.
        """
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # The bytes that are not UTF-8 ride along as surrogate escapes and
            # come back unchanged; only a credential shape is replaced.
            counter = [0]
            redacted = self._redactor.text(raw.decode("utf-8", "surrogateescape"), counter)
            return raw if not counter[0] else redacted.encode("utf-8", "surrogateescape")
        return self._redactor.text(text, [0])


def glued_record(raw: bytes) -> tuple[int, dict[str, Any]] | None:
    """Return where a whole JSON object that ends the line starts, and the object.

    The candidate is found by one backward scan from the line's last ``}`` to
    the ``{`` that opens it, skipping strings, then parsed once: linear time
    whatever the fragment in front of it holds.

    Args:
        raw: A line that is not itself a JSON object.

    Returns:
        ``(offset, object)``, or None when the line does not end in one.
    """
    end = len(raw.rstrip(b" \t\r"))
    if end < 2 or raw[end - 1] != ord("}"):
        return None
    start = _opening_brace(raw, end - 1)
    if start is None or start == 0 or raw[start] != ord("{"):
        return None
    try:
        obj = loads(raw[start:])
    except (ValueError, RecursionError):
        return None
    return (start, obj) if isinstance(obj, dict) else None


_SPECIAL: Final = tuple(ord(c) for c in '"{}[]')


def _opening_brace(raw: bytes, close: int) -> int | None:
    """Return the index of the bracket that matches ``raw[close]``, scanning backward."""
    # Where each special byte last occurs below the scan position; an entry is
    # searched again only once the scan passed it, so each byte value is
    # searched through the line at most once in all.
    last = {c: raw.rfind(bytes([c]), 0, close) for c in _SPECIAL}
    depth = 1
    pos = close
    while depth:
        for c, at in last.items():
            if at >= pos:
                last[c] = raw.rfind(bytes([c]), 0, pos)
        pos = max(last.values())
        if pos < 0:
            return None
        char = raw[pos]
        if char == ord('"'):
            if _escaped(raw, pos):
                continue
            # Inside a string, going backward: jump to its opening quote.
            pos = _string_start(raw, pos)
            if pos < 0:
                return None
        elif char in (ord("}"), ord("]")):
            depth += 1
        else:
            depth -= 1
    return pos


def _escaped(raw: bytes, quote: int) -> bool:
    run = quote
    while run > 0 and raw[run - 1] == ord("\\"):
        run -= 1
    return (quote - run) % 2 == 1


def _string_start(raw: bytes, close: int) -> int:
    pos = close
    while True:
        pos = raw.rfind(b'"', 0, pos)
        if pos < 0 or not _escaped(raw, pos):
            return pos


def _reason(exc: BaseException) -> str:
    return _scrub(f"{type(exc).__name__}: {exc}")


def _dumps(obj: object) -> str:
    # A lone surrogate (from an escaped \ud800) cannot be stored as UTF-8:
    # it is written back as the JSON escape it came from.
    text = json.dumps(obj, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _ts(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # a 400-digit integer is no time
            return None
        return number if math.isfinite(number) else None  # nor is NaN, nor 1e400
    if isinstance(value, str):
        moment = iso_time(value)
        return None if moment is None else moment.timestamp()
    return None


def iso_time(text: str) -> datetime | None:
    """Return the moment of an older hook's ``ts``: ISO 8601, ``Z`` or an offset (none: UTC).

    Args:
        text: The ``ts`` text.

    Returns:
        An aware datetime, or None when the text is no such time.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def legacy_kind(obj: dict[str, Any]) -> str:
    """Return the kind of a line whose ``kind`` is not a string: older hooks' ``type``."""
    legacy = obj.get("type")
    if isinstance(legacy, str) and legacy in _LEGACY_KINDS:
        return _LEGACY_KINDS[legacy]
    return "message"


def _scrub(value: str) -> str:
    """Return ``value`` with lone surrogates as U+FFFD: SQLite text is UTF-8."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def column_text(value: object, escaped: bool) -> str | None:
    """Return a text column's value from the record's field: a text, or its JSON.

    Args:
        value: The field's value.
        escaped: The line holds a ``\\u`` escape (a lone surrogate is repaired).

    Returns:
        The column's text, or None.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _scrub(text) if escaped else text
