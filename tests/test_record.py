"""Record building and encoding, with orjson and with the stdlib json fallback alike."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import codex_logging._record as record_module
from codex_logging import CodexProcessor
from codex_logging._record import encode
from tests.conftest import read_lines


@pytest.fixture(params=["orjson", "json"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the fast encoder and once with the stdlib fallback."""
    if request.param == "json":
        monkeypatch.setattr(record_module, "_fast_dumps", None)
    else:
        assert record_module._fast_dumps is not None, "orjson is in the test extra"
    return request.param


VALUES: list[Any] = [
    "plain", "new\nline", "\u2028\u2029", "nul\x00", "\ud800", 1, 2**70, 1.5, float("nan"), True, None,
    [1, "a"], {"k": {"n": [1]}}, {1: "int key"}, {(1, 2): "tuple key"}, {1, 2}, Path("/p"),
    dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc), b"bytes",
]  # fmt: skip


class TestEncode:
    @pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
    def test_any_value_is_one_valid_line(self, encoder: str, value: Any) -> None:
        """Every value encodes to exactly one JSON line; the other fields survive."""
        line = encode({"a": 1, "v": value, "z": "end"})
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert b"\r" not in line
        decoded = json.loads(line)
        assert (decoded["a"], decoded["z"]) == (1, "end")

    def test_same_meaning_with_both_encoders(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """For ordinary values both encoders write the same JSON."""
        rec = {
            "ts": 1.25,
            "s": "é\u2028",
            "n": [1, {"x": None}],
            "p": Path("/x"),
            "t": dt.date(2025, 1, 2),
        }
        fast = json.loads(encode(rec))
        monkeypatch.setattr(record_module, "_fast_dumps", None)
        assert (
            json.loads(encode(rec))
            == fast
            == {"ts": 1.25, "s": "é\u2028", "n": [1, {"x": None}], "p": "/x", "t": "2025-01-02"}
        )

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda c: st.lists(c) | st.dictionaries(st.text(), c),
            max_leaves=20,
        )
    )
    def test_property_no_raw_newline(self, value: Any) -> None:
        """Any JSON-like value gives one line that parses back to a dict."""
        line = encode({"v": value})
        assert line.count(b"\n") == 1
        assert isinstance(json.loads(line), dict)


class TestBuild:
    def test_field_order_and_defaults(self, tmp_path: Path) -> None:
        """Core fields come first in the documented order; kind defaults to message; None message is empty."""
        CodexProcessor(tmp_path, "s").sink.write(
            None, ts=1.0, level="INFO", pid=7, extra={"b": 1, "kind": "x"}.items()
        )
        (rec,) = read_lines(tmp_path / "s.ndjson")
        assert list(rec) == [
            "ts",
            "session_id",
            "kind",
            "level",
            "message",
            "pid",
            "b",
            "extra.kind",
        ]
        assert (rec["kind"], rec["message"]) == ("message", "")
