"""Child-process entry points for the multi-process tests (run with python -m)."""

from __future__ import annotations

import logging
import sys
import threading

from codex_logging import CodexHandler


def log_numbered(
    sessions_dir: str, session_id: str, worker: str, threads: int, count: int, size: int
) -> None:
    """Log ``threads * count`` numbered messages of about ``size`` bytes each."""
    handler = CodexHandler(sessions_dir=sessions_dir, session_id=session_id)
    logger = logging.getLogger(f"w{worker}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    pad = "x" * size

    def run(thread: int) -> None:
        for i in range(count):
            logger.info(
                "%s", f"{worker}:{thread}:{i}", extra={"pad": pad[: (i * 7919) % (size + 1)]}
            )

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    handler.close()


if __name__ == "__main__":
    d, s, w, th, n, sz = sys.argv[1:7]
    log_numbered(d, s, w, int(th), int(n), int(sz))
