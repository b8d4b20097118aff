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
