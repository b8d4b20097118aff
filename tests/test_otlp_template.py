"""build_request's templates send what building each record field by field sends, byte for byte."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from codex_logging._mirror.lines import loads
from codex_logging._otlp import mapping
from codex_logging._otlp.mapping import Resource, build_request

#: Values that change a template's slot from one type to another (0.0 and
#: -0.0 are equal but not the same bytes; a null, a list or an object send
#: the record the other way).
VALUES: list[Any] = [0, 1, -1, True, False, 1.0, 0.0, -0.0, 0.5, "1", "", "a", "é"]
ODD: list[Any] = [None, [], {}, [1, {"b": None}], {"x": [1.5]}, 2**64, -(2**63), 2**63 - 1]


def reference(resource: Resource, rows: list[tuple[Any, ...]], observed: int) -> bytes:
    """The request built record by record with ``_fill``, grouped as ``build_request`` groups."""
    request = mapping.ExportLogsServiceRequest()
    scopes: dict[tuple[object, str], Any] = {}
    resources: dict[object, Any] = {}
    for session_id, seq, line, *parsed in rows:
        record, nanos = mapping._parse(line, parsed[0] if parsed else None)
        pid = record.get("pid")
        pid_key = pid if type(pid) is int else None
        name = record.get("logger") if isinstance(record.get("logger"), str) else ""
        scope = scopes.get((pid_key, name))
        if scope is None:
            logs = resources.get(pid_key)
            if logs is None:
                logs = resources[pid_key] = request.resource_logs.add()
                for key, value in resource.attributes.items():
                    mapping._attribute(logs.resource.attributes, key, value)
                if pid_key is not None:
                    mapping._attribute(logs.resource.attributes, "process.pid", pid_key)
            scope = scopes[pid_key, name] = logs.scope_logs.add()
            scope.scope.name = name
        mapping._fill(
            scope.log_records.add(), record, nanos, resource.source, session_id, seq, observed
        )
    return request.SerializeToString()


def record(rnd: random.Random) -> dict[str, Any]:
    """A record of a few shapes, its values often changing type from one record to the next."""
    # (trace fields: valid, null, or kept as attributes; a template sets them all each time)
    found: dict[str, Any] = {
        "ts": rnd.choice([1765000000.123456789, 1765000001, 1765000000.5, 0.0, 17e8, "x"]),
        "session_id": "s1",
        "kind": rnd.choice(["message", "start", "end", 3]),
        "level": rnd.choice(["INFO", "warning", "SUCCESS", 5, None]),
        "logger": rnd.choice(["app", "app.db", 1]),
        "message": rnd.choice(["m", "m", "", 1, None, [1]]),
        "pid": rnd.choice([41, 42, True, "x"]),
    }
    if rnd.random() < 0.3:
        found["levelno"] = rnd.choice([25, 5, 70, True])
    if rnd.random() < 0.1:
        del found["message"]
    if rnd.random() < 0.3:
        found["trace_id"] = rnd.choice(["4bf92f3577b34da6a3ce929d0e0e4736", "00" * 16, None, "zz"])
        found["span_id"] = rnd.choice(["00f067aa0ba902b7", "00f067aa0ba902b8", None, 7])
        found["trace_flags"] = rnd.choice(["01", "1", 0, 3, None, 256, True, "zzz"])
    if rnd.random() < 0.05:
        found["exc"] = rnd.choice(["Traceback (most recent call last):\nValueError: v\n", 5])
    for key in rnd.sample(["a", "b", "c", "d"], rnd.randint(0, 4)):
        found[key] = rnd.choice(VALUES) if rnd.random() < 0.9 else rnd.choice(ODD)
    return found


@pytest.mark.parametrize("seed", range(6))
def test_templates_send_the_same_bytes(seed: int) -> None:
    rnd = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    for seq in range(1, 1501):
        line = json.dumps(record(rnd), separators=(",", ":") if rnd.random() < 0.7 else None)
        if rnd.random() < 0.01:
            line = line[:-1] + ',"pad":"' + "p" * (70 << 10) + '"}'  # a long line
        session_id = rnd.choice(["s1", "s1", "s2"])
        if rnd.random() < 0.2:
            rows.append((session_id, seq, line))
        else:
            rows.append((session_id, seq, line, loads(line.encode())))
    resource = Resource("src", "svc")
    for size in (1, 9, 250, 1500):
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            got = build_request(resource, chunk, observed=7).SerializeToString()
            assert got == reference(resource, chunk, 7), (seed, size, start)
