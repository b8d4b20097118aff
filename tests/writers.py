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


if __name__ == "__main__":
    d, s, w, th, n, sz = sys.argv[1:7]
    log_numbered(d, s, w, int(th), int(n), int(sz))
