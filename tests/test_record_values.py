"""Values a program logs that fight back: subclasses, failing hooks, hand-made tracebacks."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from codex_logging import CodexProcessor
from codex_logging._record import encode, exception_parts, exception_text, normalize
from tests.conftest import read_lines


def written(value: Any) -> Any:
    """``value`` as it reads back from the line the record encodes to."""
    return json.loads(encode({"v": normalize(value)}))["v"]


class Celsius(float):
    def __str__(self) -> str:
        return "hot"


class Name(str):
    __slots__ = ()


class Count(int):
    def __str__(self) -> str:
        return "many"


class NoValue(enum.Enum):
    A = 1

    @property
    def value(self) -> Any:  # type: ignore[override]
        raise RuntimeError("no value")


class BadDate(dt.date):
    def isoformat(self) -> str:
        raise RuntimeError("no iso")

    def __str__(self) -> str:
        return "some day"


class BadPath(os.PathLike[str]):
    def __fspath__(self) -> str:
        raise RuntimeError("no path")

    def __str__(self) -> str:
        return "nowhere"


class BytesPath(os.PathLike[bytes]):
    def __fspath__(self) -> bytes:
        return b"/tmp/caf\xc3\xa9/\xff"


class Unreadable(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no items")

    def __len__(self) -> int:
        return 1

    def __str__(self) -> str:
        return "a locked box"


class TestValues:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (Celsius(21.5), 21.5),
            (Name("ada"), "ada"),
            (Count(3), 3),
            ({True: 1, False: 0}, {"true": 1, "false": 0}),
            (NoValue.A, "NoValue.A"),
            (BadDate(2025, 1, 2), "some day"),
            (BadPath(), "nowhere"),
            (BytesPath(), "/tmp/caf\u00e9/\\xff"),
            (Unreadable(), {"<unreadable>": "a locked box"}),
        ],
        ids=lambda v: type(v).__name__,
    )
    def test_written_as_their_json_base_or_their_text(self, value: Any, expected: Any) -> None:
        assert written(value) == expected

    def test_a_broken_tracer_costs_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An OpenTelemetry module whose span lookup raises: the record is written, no trace ids."""

        class Broken:
            def get_current_span(self) -> Any:
                raise RuntimeError("tracer gone")

        monkeypatch.setitem(sys.modules, "opentelemetry.trace", Broken())
        CodexProcessor(tmp_path, "s").sink.write("hello", ts=1.0, level="INFO", pid=7)
        (rec,) = read_lines(tmp_path / "s.ndjson")
        assert rec["message"] == "hello"
        assert not {"trace_id", "span_id", "trace_flags"} & set(rec)


class TestTracebacks:
    def test_an_exception_object_is_formatted(self) -> None:
        def fail() -> None:
            raise ValueError("bad input")

        try:
            fail()
        except ValueError as exc:
            error = exc
        text = exception_text(error, None)
        assert text is not None
        assert text.startswith("Traceback (most recent call last):")
        assert text.endswith("ValueError: bad input")

    def test_an_exc_info_that_cannot_be_formatted_gives_its_value(self) -> None:
        assert exception_parts(None, (ValueError, "not an exception", None)) == (
            "not an exception",
            None,
        )

    def test_dicts_that_are_not_a_traceback_are_kept_as_they_are(self) -> None:
        malformed = [{"exc_type": "E", "exc_value": "v", "frames": 5}]  # frames not a list
        assert exception_parts(malformed, None) == (None, malformed)
        other = [{"just": "data"}]
        assert exception_parts(other, None) == (None, other)

    def test_a_syntax_error_and_a_group_as_dict_tracebacks(self) -> None:
        stacks = [
            {
                "exc_type": "ExceptionGroup",
                "exc_value": "two failed (2 sub-exceptions)",
                "frames": [{"filename": "<prog>", "lineno": 3, "name": "main"}],
                "is_group": True,
                "exceptions": [
                    [
                        {
                            "exc_type": "SyntaxError",
                            "exc_value": "invalid syntax",
                            "frames": [],
                            "syntax_error": {
                                "filename": "cfg.py",
                                "lineno": 7,
                                "line": "  x = = 1\n",
                            },
                        }
                    ],
                    "not a trace",
                ],
            }
        ]
        text, structured = exception_parts(stacks, None)
        assert structured is stacks
        lines = [
            "Exception Group Traceback (most recent call last):",
            '  File "<prog>", line 3, in main',
            "ExceptionGroup: two failed (2 sub-exceptions)",
            "+---------------- 1 ----------------",
            '      File "cfg.py", line 7',
            "        x = = 1",
            "    SyntaxError: invalid syntax",
            "+---------------- 2 ----------------",
            "+------------------------------------",
        ]
        assert text == "\n".join(lines)
