"""Child-process entry points for the multi-process tests (run with python -m)."""

from __future__ import annotations

import logging
import sys
import threading

from codex_logging import CodexHandler


def pad_length(i: int, size: int) -> int:
    """Return the pad of record ``i``: up to ``size``, or mixed 100 B to 64 KB when negative."""
    if size >= 0:
        return (i * 7919) % (size + 1)
    return 65536 - 200 if i % 100 == 7 else 100 + (i * 7919) % 900


def log_numbered(
    sessions_dir: str, session_id: str, worker: str, threads: int, count: int, size: int
) -> None:
    """Log ``threads * count`` numbered messages ``worker:thread:i`` with padding."""
    handler = CodexHandler(sessions_dir=sessions_dir, session_id=session_id)
    logger = logging.getLogger(f"w{worker}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    pad = "x" * 65536
    failures: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            for i in range(count):
                logger.info(
                    "%s", f"{worker}:{thread}:{i}", extra={"pad": pad[: pad_length(i, size)]}
                )
        except BaseException as exc:  # a failed thread must fail the process
            failures.append(exc)
            raise

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    handler.close()
    if failures:
        raise SystemExit(1)


SYNC_LOOP = """
import os, sys, time
from codex_logging import sync_to_sqlite
db, folder, stop = sys.argv[1:4]
while not os.path.exists(stop):
    sync_to_sqlite(db, folder)
    time.sleep(0.02)
"""


def run_load_with_sync_loops(
    sessions: str, db: str, workers: int, threads: int, count: int, size: int
) -> None:
    """Run ``workers`` writer processes and 2 sync loops until the writers are done, then stop the loops."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    stop = f"{db}.stop"
    loops = [
        subprocess.Popen([sys.executable, "-c", SYNC_LOOP, db, sessions, stop], cwd=root)
        for _ in range(2)
    ]
    try:
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.writers",
                    sessions,
                    "load",
                    str(w),
                    str(threads),
                    str(count),
                    str(size),
                ],
                cwd=root,
            )
            for w in range(workers)
        ]
        codes = [p.wait(timeout=600) for p in writers]
    finally:
        Path(stop).touch()
        loop_codes = [p.wait(timeout=600) for p in loops]
        os.unlink(stop)
    assert codes == [0] * workers, codes
    assert loop_codes == [0, 0], loop_codes


if __name__ == "__main__":
    d, s, w, th, n, sz = sys.argv[1:7]
    log_numbered(d, s, w, int(th), int(n), int(sz))
