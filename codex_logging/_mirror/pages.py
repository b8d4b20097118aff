"""What the web viewer's pages read, the same for every backend (docs/viewer.md).

The statuses a sessions page filters on, and the shape of a session's timeline
built from the rows each backend's read returns (``_sqlite/read.py``,
``_postgres/read.py``).
"""

from __future__ import annotations

from typing import Any, Final

from codex_logging._mirror.filters import check_choice

#: The statuses a sessions page may filter on; ``running`` is a session with no end yet,
#: ``terminated`` one a signal ended (docs/mirror.md, "Schema").
STATUSES: Final = ("ok", "error", "terminated", "running")

#: Above this many events a session's timeline counts its events per process
#: from its start/end records and alerts only, not from every row's pid.
TIMELINE_EXACT_EVENTS: Final = 50_000

#: A session's timeline marks at most this many warnings and errors.
ALERT_LIMIT: Final = 1000


def check_status(status: str) -> str:
    """Return ``status`` if it is ``ok``, ``error``, ``terminated`` or ``running``.

    Raises:
        InvalidFilterError: Any other value.
    """
    return check_choice(status, STATUSES, "status")


def timeline_shape(
    start: float | None,
    end: float | None,
    bins: int,
    marks: list[Any],
    alerts: list[Any],
    *,
    counts: list[tuple[Any, int, int]],
    exact: bool,
) -> dict[str, Any]:
    """Return the timeline of one session from its rows, for any backend.

    Args:
        start: The first event's time (Unix seconds), or None.
        end: The last event's time, or None.
        bins: How many equal slices of time the counts are given in.
        marks: The start/end rows, in order: ``ts, kind, pid, status``.
        alerts: The warnings and worse, in order: ``seq, ts, level, pid``.
        counts: ``(pid or None, slice, events)``.
        exact: Whether ``counts`` has every row's pid.

    Returns:
        ``start, end, bins, processes, exact`` (docs/viewer.md, "The session page").
    """
    processes: dict[Any, dict[str, Any]] = {}

    def lane(pid: Any) -> dict[str, Any]:
        if pid not in processes:
            processes[pid] = {
                "pid": pid,
                "spans": [],
                "alerts": [],
                "bins": [0] * bins if exact else None,
            }
        return processes[pid]

    for row in marks:
        spans = lane(row["pid"])["spans"]
        if row["kind"] == "start":
            spans.append([row["ts"], None, None])
        elif spans and spans[-1][1] is None:
            spans[-1][1], spans[-1][2] = row["ts"], row["status"]
        else:  # an end whose start is not in the mirror
            spans.append([start, row["ts"], row["status"]])
    for row in alerts:
        lane(row["pid"])["alerts"].append([row["ts"], row["level"], row["seq"]])
    total = [0] * bins
    for pid, index, count in counts:
        total[index] += count
        if exact:
            lane(pid)["bins"][index] += count
    ordered = sorted(processes.values(), key=lambda p: (p["pid"] is None, str(p["pid"])))
    return {"start": start, "end": end, "bins": total, "processes": ordered, "exact": exact}
