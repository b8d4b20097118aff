"""Whether a session without an ``end`` still has a process: ``abandoned`` (docs/cli.md).

A ``start`` record names its process (``pid``) and machine (``host``). On the
machine that wrote it, a reader can tell that the process is gone: no process
has that pid, or the one that has it started after the record (the pid was
used again). Where any start record is from another machine, names no pid, or
its process may still be the one that wrote it, nothing is said.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from typing import Final

#: Seconds a process may seem to start after its own first record: the
#: boot time and the clock ticks of /proc are coarse.
_SLACK: Final = 2.0


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _process_start(pid: int) -> float | None:
    """Return when process ``pid`` started (Unix seconds), or None when this cannot be told."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks = int(fields[19])  # starttime, the 22nd field of the whole line
    except (OSError, ValueError, IndexError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def process_gone(pid: int, since: float) -> bool:
    """Return whether the process ``pid`` that wrote a record at ``since`` is gone.

    Args:
        pid: The process id the record names.
        since: The record's time, Unix seconds.

    Returns:
        True when no process has that pid, or the one that has it started after
        the record; False when it may still be the one.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # it exists (another user's)
    started = _process_start(pid)
    return started is not None and started > since + _SLACK


def abandoned(starts: Iterable[object], host: str | None = None) -> bool:
    """Return whether every process that started a session on this machine is gone.

    Args:
        starts: The session's ``start`` records, as their JSON text.
        host: This machine's name; ``socket.gethostname()`` by default.

    Returns:
        True only when there is at least one start record and each was written
        on this machine by a process that is gone.
    """
    here = socket.gethostname() if host is None else host
    seen = False
    for data in starts:
        try:
            record = json.loads(data) if isinstance(data, str) else None
        except ValueError:
            return False
        if not isinstance(record, dict):
            return False
        pid, ts = record.get("pid"), record.get("ts")
        if record.get("host") != here or type(pid) is not int or not isinstance(ts, int | float):
            return False
        if not process_gone(pid, float(ts)):
            return False
        seen = True
    return seen
