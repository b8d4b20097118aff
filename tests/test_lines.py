"""One line into a row or a quarantined line: torn records, redaction, conversions."""

from __future__ import annotations

import json
import math

import pytest

from codex_logging._mirror.lines import ErrorRow, EventRow, LineParser, glued_record

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
