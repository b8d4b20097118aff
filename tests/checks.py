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
