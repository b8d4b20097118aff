"""One line into a row or a quarantined line: torn records, redaction, conversions."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from codex_logging import CodexHandler, CodexProcessor
from codex_logging._mirror.lines import ErrorRow, EventRow, LineParser, glued_record, split_of
from tests.redaction_corpus import ordinary_lines, secret_cases

RECORD = b'{"message": "glued"}'


def take(raw: bytes) -> tuple[list[EventRow], list[ErrorRow], int]:
    events: list[EventRow] = []
    errors: list[ErrorRow] = []
    parser = LineParser()
    at = parser.take("s", 7, 100, raw, events, errors)
    parser.settle(events)
    return _without_records(events), errors, at


def _without_records(events: list[EventRow]) -> list[EventRow]:
    """The rows without their records, once each record is checked against its data."""
    for row in events:
        # Each row carries the record its data holds (a compact target splits it);
        # NaN != NaN: compared in their text forms.
        assert repr(row[9]) == repr(json.loads(row[8]))
    return [row[:9] for row in events]  # type: ignore[misc]


class TestGluedRecord:
    @pytest.mark.parametrize(
        "fragment",
        [
            b'{"a": ' * 40,  # more than 16 openers
            b'{"x": "a string with } and ] and \\" inside',
            b'{"x": "ends in a backslash \\\\", "y": {"z": [',
            b"\xff\xfe binary",
            b'{"' * 10_000,
            b"}" * 500,
        ],
    )
    def test_record_after_any_fragment(self, fragment: bytes) -> None:
        """The whole record after any fragment is found at its offset."""
        assert glued_record(fragment + RECORD) == (len(fragment), {"message": "glued"})

    def test_record_with_escaped_quotes_and_nan(self) -> None:
        """Escaped quotes and backslashes inside the record, and a NaN only json takes, are handled."""
        record = b'{"message": "say \\"hi\\" \\\\", "n": NaN}'
        glued = glued_record(b'{"torn' + record)
        assert glued is not None
        assert glued[0] == 6
        assert glued[1]["message"] == 'say "hi" \\'
        assert math.isnan(glued[1]["n"])

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"}",
            b'{"a": 1',
            b'junk {"a": "unterminated}',
            b'x ["a"]',
            b'x {"a": 1]',
            b'{"a": 1}',
            b"ab}",
            b'x a"}',
            b'x {"a": 1 2}',
        ],
    )
    def test_no_record(self, raw: bytes) -> None:
        """A line that does not end in a whole object after a fragment gives None."""
        assert glued_record(raw) is None

    def test_take_splits_fragment_and_record(self) -> None:
        """The fragment is quarantined as a torn record, the record is the event, both under one seq."""
        fragment = b'{"a": ' * 20
        events, errors, at = take(fragment + RECORD)
        assert errors == [("s", 7, 100, "torn record", fragment.decode())]
        assert [e[:2] + e[7:] for e in events] == [("s", 7, "glued", RECORD.decode())]
        assert at == 100 + len(fragment)


class TestTake:
    def test_shape_checks_of_a_batch_find_the_one_line(self) -> None:
        """Among 100 clean flat lines, the one with a token is redacted when the batch settles."""
        parser = LineParser()
        events: list[EventRow] = []
        errors: list[ErrorRow] = []
        for i in range(100):
            message = "token ghp_abcdefghijklmnopqrstuvwx" if i == 42 else f"step {i}"
            parser.take("s", i + 1, 0, b'{"message": "%s"}' % message.encode(), events, errors)
        parser.settle(events)
        assert errors == []
        assert [e[7] for e in events if "REDACTED" in e[8]] == ["token [REDACTED]"]
        assert events[42][8] == '{"message": "token [REDACTED]"}'
        assert events[41][8] == '{"message": "step 41"}'

    def test_bad_line_is_quarantined_with_its_reason(self) -> None:
        """A JSON array is quarantined with the reason and its bytes as text."""
        events, errors, at = take(b"[1, 2]")
        assert (events, at) == ([], -1)
        assert errors == [("s", 7, 100, "TypeError: not a JSON object but list", "[1, 2]")]

    def test_conversion_failure_is_quarantined(self) -> None:
        """A line whose column cannot be converted (an int past Python's digit limit) is quarantined, not raised."""
        raw = b'{"message": 1' + b"0" * 5000 + b"}"
        events, errors, _ = take(raw)
        assert events == []
        assert [(e[1], e[4]) for e in errors] == [(7, raw.decode())]
        assert errors[0][3].startswith("ValueError: ")

    def test_clean_line_is_stored_as_written(self) -> None:
        """A line without secrets keeps its exact text in data."""
        raw = b'{"ts":1.5,"kind":"end","level":"INFO","logger":"a","role":"tool","message":"m","x":[1]}'
        events, errors, _ = take(raw)
        assert errors == []
        assert events == [("s", 7, 1.5, "end", "INFO", "a", "tool", "m", raw.decode())]

    @pytest.mark.parametrize(
        ("raw", "data"),
        [
            (b'{"token": "t"}', '{"token": "[REDACTED]"}'),
            (b'{"X-Api-Key": "t"}', '{"X-Api-Key": "[REDACTED]"}'),
            (b'{"a": [{"client_secret": 1}]}', '{"a": [{"client_secret": "[REDACTED]"}]}'),
            (b'{"m": "sk-abcdefghijklmnopqrstu"}', '{"m": "[REDACTED]"}'),
            (b'{"m": "Bearer\\u0020abcdefghijkl"}', '{"m": "Bearer [REDACTED]"}'),
            (b'{"m": "x\\ud800", "password": 1}', '{"m": "x\\ud800", "password": "[REDACTED]"}'),
        ],
    )
    def test_secrets_are_redacted(self, raw: bytes, data: str) -> None:
        """Secret keys at any depth and credential shapes, also behind escapes, are redacted in data."""
        events, errors, _ = take(raw)
        assert errors == []
        assert events[0][8] == data

    @pytest.mark.parametrize(
        ("raw", "data"),
        [
            (b'{"detail":"password=hunter2"}', '{"detail": "password=[REDACTED]"}'),
            (b'{"url":"/cb?code=1&access_token=CANARYat"}', '{"url": "/cb?code=1&access_token=[REDACTED]"}'),
            (b'{"m":"x","cfg":"\'password\': \'CANARYq\'"}', '{"m": "x", "cfg": "\'password\': \'[REDACTED]\'"}'),
            (b'{"message":"ok","env":"DB_PASS=CANARYenv host=db"}', '{"message": "ok", "env": "DB_PASS=[REDACTED] host=db"}'),
        ],
    )  # fmt: skip
    def test_every_rule_runs_on_every_string_field(self, raw: bytes, data: str) -> None:
        """A flat foreign line's fields other than message lose a secret name's value too."""
        parser = LineParser()
        events: list[EventRow] = []
        errors: list[ErrorRow] = []
        for i in range(50):  # among clean lines, checked as one batch
            line = raw if i == 20 else b'{"message":"step %d","detail":"n=%d"}' % (i, i)
            parser.take("s", i + 1, 0, line, events, errors)
        parser.settle(events)
        assert errors == []
        assert [e[8] for e in events if "REDACTED" in e[8]] == [data]

    def test_quarantined_bytes_keep_what_is_not_secret(self) -> None:
        """Quarantined non-UTF-8 bytes are kept exactly, except a credential shape."""
        parser = LineParser()
        assert parser.quarantined(b"\xff ghp_abcdefghijklmnopqrstuvwx") == b"\xff [REDACTED]"
        assert parser.quarantined(b"\xff plain") == b"\xff plain"
        assert parser.quarantined(b"plain") == "plain"


class TestTakeText:
    """take_text (a long ASCII line held as text only) gives what take gives."""

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"ts": 1.5, "kind": "message", "message": "plain", "pad": "yyyy"}',
            b'{"ts": "2025-01-01T12:34:56Z", "type": "session_start", "pid": 7}',
            b'{"message": "a", "message": "duplicate key: the last wins"}',
            b'{"ts": NaN, "big": 123456789012345678901234567890, "x": 1e400}',
            b'{"nested": {"a": [1, 2, {"b": null}]}, "message": ["not", "text"]}',
            b'{"message": "escapes \\" \\\\ \\n \\u00e9 \\ud800 lone"}',
            b'{"password": "hunter2", "message": "token=ghp_' + b"a" * 36 + b'"}',
            b'{"message": "sk-proj-' + b"A" * 40 + b'"}',
            b"[1, 2]",
            b'{"torn": "frag{"message": "glued"}',
            b"not json",
        ],
    )
    def test_same_rows_as_take(self, raw: bytes) -> None:
        assert raw.isascii()
        expected = take(raw)
        events: list[EventRow] = []
        errors: list[ErrorRow] = []
        parser = LineParser()
        at = parser.take_text("s", 7, 100, raw.decode(), events, errors)
        parser.settle(events)
        got = (_without_records(events), errors, at)
        # NaN != NaN: compare the rows' text forms.
        assert repr(got) == repr(expected)


class TestExactNumbers:
    def test_an_integer_past_64_bits_is_kept_exact(self) -> None:
        """orjson reads it as a rounded float: the line is read again by json, exactly."""
        big = 123456789012345678901234567890
        for raw in (
            b'{"message": "m", "big": %d}' % big,
            b'{"message": "m", "nested": {"a": [1, -%d]}}' % big,
        ):
            parser = LineParser()
            events: list[EventRow] = []
            parser.take("s", 1, 0, raw, events, [])
            parser.settle(events)
            assert json.dumps(events[0][9]) == json.dumps(json.loads(raw))


class TestLongLineShapes:
    @pytest.mark.parametrize("offset", [0, (1 << 20) - 11, (1 << 20) + 5, 3 * (1 << 20) - 1])
    def test_a_secret_anywhere_in_a_long_line_is_found(self, offset: int) -> None:
        """A long flat line is checked in overlapping windows: a key across a window's end is found."""
        token = "AKIAZ7Q2W3E4R5T6Y7U8"  # neither half is a key by itself
        head = '{"message": "m", "pad": "'
        # The key starts at ``offset`` in the line's text.
        pad = "y" * max(0, offset - len(head) - 1) + " " + token + " " + "y" * (1 << 20)
        raw = json.dumps({"message": "m", "pad": pad}).encode()
        assert raw.index(token.encode()) in {offset, len(head) + 1}
        parser = LineParser()
        events: list[EventRow] = []
        parser.take_text("s", 1, 0, raw.decode(), events, [])
        parser.settle(events)
        assert token not in events[0][8]
        assert "[REDACTED]" in events[0][8]


# A line as the write path writes it (``record_head``), up to its pid.
_HEAD = '{"ts":1.5,"session_id":"s","kind":"message","level":"INFO","logger":"a.b","message":"hello","pid":42'
_GHP = "ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3"


def _settled(lines: list[bytes]) -> list[EventRow]:
    parser = LineParser()
    events: list[EventRow] = []
    errors: list[ErrorRow] = []
    for seq, raw in enumerate(lines, 1):
        parser.take("s", seq, 0, raw, events, errors)
    parser.settle(events)
    assert errors == []
    return events


def _assert_same_rows(fast: EventRow, slow: EventRow) -> None:
    """The row split from a line's text is the row made from its record."""
    assert repr((fast[0], *fast[2:8])) == repr((slow[0], *slow[2:8]))  # but seq
    assert json.loads(fast[8]) == json.loads(slow[8])
    assert repr(fast[9]) == repr(slow[9])  # the record, exactly (NaN, big ints)
    (pid, shape, fields), (slow_pid, slow_shape, slow_fields) = split_of(fast), split_of(slow)
    assert (pid, shape) == (slow_pid, slow_shape)
    assert (fields is None) == (slow_fields is None)
    if fields is not None:
        assert repr(json.loads(fields)) == repr(json.loads(slow_fields))


class TestSplitFromText:
    """A line in the write path's shape is split from its text; the row is the one its record gives."""

    @pytest.mark.parametrize(
        ("line", "from_text"),
        [
            (_HEAD + "}", True),
            (_HEAD + ',"role":"tool"}', True),
            (_HEAD + ',"role":"tool","user":"bob","n":3,"f":1.25,"t":true,"z":null,"u":"\u00e9\u2713"}', True),
            (_HEAD + ',"role":null,"x":1}', True),
            (_HEAD + ',"x": 1, "y" :2}', False),  # a blank before a colon: not counted as a key
            (_HEAD + ',"detail":"a b, c: d","n":1}', True),  # blanks in a string only
            (_HEAD + ',"x": 1}', False),  # a blank: not in the shape
            (_HEAD + ',"x":\t1}', False),
            (_HEAD + ',"a":"b c","x" :1}', False),
            (_HEAD + ',"status":"ok","status" :"error"}', False),  # a key the count would miss
            (_HEAD + ',"big": 12345678901234567890123}', False),
            (_HEAD.replace("1.5", "1.5e9") + "}", True),
            (_HEAD.replace("1.5", "-2E-3") + "}", True),
            (_HEAD.replace("42", str(2**63 - 1)) + "}", True),
            (_HEAD.replace("42", str(-(2**63))) + "}", True),
            (_HEAD.replace('"hello"', '"h\u00e9llo \u2713 \U0001f600"') + "}", True),
            (_HEAD + ',"s":"12345678901234567890123"}', True),  # digits in a string
            # Not split from the text: each the record's way.
            (_HEAD + ',"role":5}', False),
            (_HEAD + ',"x":1,"role":"tool"}', False),  # the role after other fields
            (_HEAD + ',"big":12345678901234567890123}', False),  # orjson rounds it
            (_HEAD + ',"big":-1234567890123456789}', False),
            (_HEAD.replace("1.5", "123456789012345678901") + "}", False),  # an integer ts
            (_HEAD.replace("1.5", "15") + "}", False),
            (_HEAD.replace("42", str(2**63)) + "}", False),  # past the 64-bit column
            (_HEAD.replace("42", "4.2") + "}", False),
            (_HEAD.replace("42", "true") + "}", False),
            (_HEAD + ',"message":"again"}', False),  # a repeated key: the last value counts
            (_HEAD + ',"x":1,"x":2}', False),
            (_HEAD + ',"ts":2.5}', False),
            (_HEAD.replace('"session_id":"s"', '"session_id":"other"') + "}", False),
            (_HEAD.replace('"kind":"message"', '"kind":5') + "}", False),
            (_HEAD.replace('"message":"hello"', '"message":null') + "}", False),
            (_HEAD.replace('"level":"INFO"', '"level":"INFO","levelno":20') + "}", False),
            # A value before the message that a rule could read on from, or that lets a rule
            # run: the line is checked whole (as any flat line), not from its message.
            (_HEAD.replace('"a.b"', '"a\'b"') + "}", False),
            (_HEAD.replace('"a.b"', '"a(b"') + "}", False),
            (_HEAD.replace('"a.b"', '"a b"') + "}", False),
            (_HEAD.replace('"a.b"', '"db.mysql"') + "}", False),
            (_HEAD.replace('"message","level"', '"login","level"') + "}", False),
            (_HEAD.replace('"INFO"', '"curl"') + "}", False),
            (_HEAD.replace('"logger":"a.b",', "") + "}", False),  # no logger
            (_HEAD + "} ", False),
            (_HEAD + "}\r", False),
            (_HEAD + ',"x":1} ', False),
            (_HEAD + ',"x":1}\r', False),
            (_HEAD + ' ,"x":1}', False),
            (_HEAD + ',"x":[1]}', False),
            (_HEAD.replace('"hello"', '"say \\"hi\\""') + "}", False),
        ],
    )  # fmt: skip
    def test_same_row_as_from_the_record(self, line: str, from_text: bool) -> None:
        """Each line gives the row of the same line with a blank after its brace (read the record's way)."""
        [fast] = _settled([line.encode()])
        [slow] = _settled([b"{ " + line.encode()[1:]])
        assert slow[10] is None
        assert (fast[10] is not None) == from_text
        _assert_same_rows(fast, slow)
        if from_text:
            assert fast[8] == line  # the line itself

    @pytest.mark.parametrize(
        ("line", "secret"),
        [
            (_HEAD.replace('"hello"', f'"pushed with {_GHP}"') + "}", _GHP),
            (_HEAD + ',"detail":"password=hunter2"}', "hunter2"),
            (_HEAD + ',"password":"hunter2"}', "hunter2"),
            (_HEAD + f',"{_GHP}":1}}', _GHP),  # a token as a key
            (_HEAD.replace('"a.b"', f'"{_GHP}"') + "}", _GHP),
            (_HEAD.replace('"INFO"', f'"{_GHP}"') + "}", _GHP),
            (_HEAD.replace('"message","level"', f'"{_GHP}","level"') + "}", _GHP),
            (_HEAD + f',"role":"{_GHP}"}}', _GHP),
            # A quoted value read on past the message's end: the check reads what follows it.
            (
                _HEAD.replace(
                    '"hello","pid":42',
                    '"upload signature=\'Q7wZ4kP9xM aaaaaaaaaaaaaaaa","pid":1234567890',
                )
                + ',"n":"\'"}',
                "Q7wZ4kP9xM",
            ),
            (_HEAD.replace('"hello"', '"password=\'<abc"') + ',"role":">","n":">\'"}', "<abc"),
        ],
    )
    def test_a_secret_anywhere_is_redacted(self, line: str, secret: str) -> None:
        """Among clean lines of a batch, the one with a secret in any field is redacted as the record's way does."""
        lines = [(_HEAD + f',"step":{i}}}').encode() for i in range(40)]
        lines[17] = line.encode()
        rows = _settled(lines)
        assert secret in line
        assert secret not in rows[17][8]
        assert "[REDACTED]" in rows[17][8]
        _assert_same_rows(rows[17], _settled([b"{ " + line.encode()[1:]])[0])
        assert all(row[10] is not None for i, row in enumerate(rows) if i != 17)

    def test_a_session_id_holding_a_secret_is_not_split(self) -> None:
        """The file's own session id is checked alone, as the record's redaction checks it."""
        line = _HEAD.replace('"session_id":"s"', f'"session_id":"{_GHP}"') + "}"
        parser = LineParser()
        events: list[EventRow] = []
        parser.take(_GHP, 1, 0, line.encode(), events, [])
        parser.settle(events)
        assert _GHP not in events[0][8]
        assert events[0][10] is None

    def test_secret_corpus_in_every_place(self) -> None:
        """Each secret of the corpus, in the message, a field, the logger or the role: the rows are the record's."""
        lines: list[bytes] = []
        for case in secret_cases():
            for text in [case.text, *(v for v in case.fields.values() if isinstance(v, str))]:
                if text is None:
                    continue
                for place in ("message", "detail", "logger", "role"):
                    record = {"ts": 1.5, "session_id": "s", "kind": "message", "level": "INFO",
                              "logger": "a.b", "message": "m", "pid": 7, "role": "tool"}  # fmt: skip
                    record[place] = text
                    lines.append(orjson.dumps(record))
        assert len(lines) > 400
        fast = _settled(lines)
        slow = _settled([b"{ " + raw[1:] for raw in lines])
        for raw, fast_row, slow_row in zip(lines, fast, slow, strict=True):
            _assert_same_rows(fast_row, slow_row)
            assert fast_row[8] != raw.decode() or "[REDACTED]" not in slow_row[8]
        assert sum(row[10] is not None for row in fast) < len(lines)  # redacted ones were not

    def test_ordinary_corpus_is_split_from_text(self) -> None:
        """Ordinary messages (the corpus that must stay as written) are split from their text."""
        lines = [
            orjson.dumps(
                {
                    "ts": 1.5,
                    "session_id": "s",
                    "kind": "message",
                    "level": "INFO",
                    "logger": "app",
                    "message": text,
                    "pid": 7,
                    **fields,
                }
            )
            for text in ordinary_lines()
            for fields in ({}, {"tool": "git", "step": 3, "ms": 1.25})
        ]
        fast = _settled(lines)
        slow = _settled([b"{ " + raw[1:] for raw in lines])
        for fast_row, slow_row in zip(fast, slow, strict=True):
            _assert_same_rows(fast_row, slow_row)
        escaped = sum(b"\\" in raw or b"[" in raw or b"{" in raw[1:] for raw in lines)
        assert sum(row[10] is not None for row in fast) == len(lines) - escaped

    def test_the_handlers_lines_are_split_from_text(self, tmp_path: Path) -> None:
        """What CodexHandler and CodexProcessor write is in the shape split from the text."""
        handler = CodexHandler(sessions_dir=str(tmp_path), session_id="s")
        log = logging.getLogger("tests.split_from_text")
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        try:
            log.info("step %d of %s", 3, "build", extra={"tool": "git", "ms": 1.5, "ok": True})
            log.warning("plain", extra={"role": "tool"})
            log.error("no extra")
        finally:
            log.removeHandler(handler)
            handler.close()
        processor = CodexProcessor(sessions_dir=str(tmp_path), session_id="s")
        for event in ("a", "b"):
            with contextlib.suppress(structlog.DropEvent):
                processor(None, "info", {"event": event, "n": 1, "logger": "p"})
        lines = (tmp_path / "s.ndjson").read_bytes().splitlines()
        assert len(lines) == 5
        rows = _settled(lines)
        assert all(row[10] is not None for row in rows)
        for row, raw in zip(rows, lines, strict=True):
            _assert_same_rows(row, _settled([b"{ " + raw[1:]])[0])

    def test_many_sessions_keep_the_head_checks_few(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past the cache's size (thousands of sessions in one sync) a word is still checked about once."""
        calls = [0]
        plain_head = LineParser._plain_head

        def counted(self: LineParser, columns: str, obj: dict[str, Any]) -> bool:
            calls[0] += 1
            return plain_head(self, columns, obj)

        monkeypatch.setattr(LineParser, "_plain_head", counted)
        parser = LineParser()
        events: list[EventRow] = []
        sessions = 6000
        for n in range(sessions):
            sid = f"run-{n}"
            parser.begin()
            for seq in range(1, 4):
                line = _HEAD.replace('"session_id":"s"', f'"session_id":"{sid}"') + "}"
                parser.take(sid, seq, 0, line.encode(), events, [])
            parser.settle(events)
        assert all(row[10] is not None for row in events)
        assert len(events) == 3 * sessions
        assert calls[0] == sessions  # each session's head once
