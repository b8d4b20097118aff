"""Checkers shared by the stress tests; each is shown to bite by a negative control."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def numbered_messages(path: Path) -> list[str]:
    """Return the messages of a file, failing on any torn or non-JSON line."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "file ends in a partial line"
    out = []
    for raw in data.split(b"\n")[:-1]:
        record = json.loads(raw)
        assert isinstance(record, dict)
        out.append(record["message"])
    return out


def assert_exactly_once(messages: Iterable[str], expected: Iterable[str]) -> None:
    """Fail on any missing, extra or duplicated message."""
    counts = Counter(messages)
    want = set(expected)
    duplicated = [m for m, c in counts.items() if c > 1]
    missing = want - counts.keys()
    unexpected = counts.keys() - want
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {duplicated[:3]}"
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:3]}"
    assert not unexpected, f"{len(unexpected)} unexpected, e.g. {sorted(unexpected)[:3]}"


def expected_numbered(workers: int, threads: int, count: int) -> list[str]:
    """Return the messages tests/writers.py writes."""
    return [f"{w}:{t}:{i}" for w in range(workers) for t in range(threads) for i in range(count)]


def write_rich_session(folder: Path) -> None:
    """Write session 'r': fields of every JSON type, a traceback, a custom level, a failed end."""
    records = [
        {"ts": 1000.0, "kind": "start", "level": "INFO", "logger": "codex_logging", "message": "session start", "pid": 7},
        {"ts": 1000.5, "level": "INFO", "logger": "agent", "message": "calling git", "role": "tool",
         "tool": "git", "user": "alice", "ms": 812.5, "ok": True, "note": "two words", "tags": ["a", "b"]},
        {"ts": 1001.0, "level": "WARNING", "logger": "agent", "message": "slow\x1b[2J", "tool": "npm", "ms": 2400},
        {"ts": 1002.0, "level": "ERROR", "logger": "agent", "message": "boom", "tool": "git",
         "exc": 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad'},
        {"ts": 1003.0, "level": "Level 25", "levelno": 25, "logger": "agent", "message": "<script>alert(1)</script>"},
        {"ts": 1004.0, "kind": "end", "level": "ERROR", "logger": "codex_logging", "message": "session end",
         "status": "error", "error_type": "KeyboardInterrupt", "error": "", "duration_s": 4.0},
    ]  # fmt: skip
    (folder / "r.ndjson").write_text("".join(json.dumps(x) + "\n" for x in records))


#: Session 'n': numbers spelled as writers spell them (orjson's 1e-7, a float
#: off its short form, a 64-bit overflow), and texts that look like numbers.
NUMBER_LINES = (
    '{"ts":1.0,"message":"sum","x":0.30000000000000004}\n'
    '{"ts":2.0,"message":"tenths","x":0.3}\n'
    '{"ts":3.0,"message":"tiny","x":1e-7}\n'
    '{"ts":4.0,"message":"huge","x":18446744073709551616}\n'
    '{"ts":5.0,"message":"text","x":"0.3"}\n'
    '{"ts":6.0,"message":"five","x":5}\n'
    '{"ts":7.0,"message":"yes","x":true}\n'
    '{"ts":8.0,"message":"none"}\n'
    '{"ts":9.0,"message":"zero","x":0}\n'
)
#: ``--where`` tests on those lines, and the messages each finds in order.
NUMBER_WHERE = (
    ("x=0.30000000000000004", ["sum"]),
    ("x=0.3", ["tenths", "text"]),
    ("x=1e-07", ["tiny"]),
    ("x=1e-7", ["tiny"]),
    ("x=0.0000001", ["tiny"]),
    ("x=18446744073709551616", ["huge"]),
    ("x=5", ["five"]),
    ("x=5.0", ["five"]),
    ("x=+5", ["five"]),
    ("x=5.", ["five"]),
    ("x=.5e1", ["five"]),
    ("x=true", ["yes"]),
    ("x=\u0665", []),  # ARABIC-INDIC DIGIT FIVE: a text, not the number 5
    ("x=1e-400", []),  # no float holds it: not 0
    ("x=0.0", ["zero"]),
    ("x=" + "9" * 5000, []),  # past int()'s digit limit: compared as text
    ("x!=0.3", ["sum", "tiny", "huge", "five", "yes", "none", "zero"]),
    ("x!=5", ["sum", "tenths", "tiny", "huge", "text", "yes", "none", "zero"]),
)
