"""Many writers: records/s with 1-8 threads and 1-4 processes, CodexHandler beside its peers.

Every writer appends small JSON lines to one shared file. The stdlib FileHandler
serialises threads on its handler lock and, across processes, relies on its
buffered stream's O_APPEND writes; concurrent-log-handler takes a file lock per
record; CodexHandler takes no lock on the write. Each run checks that every
numbered record landed exactly once, so a fast but lossy writer cannot win.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench_write import JsonFormatter

N = int(os.environ.get("BENCH_SCALING_RECORDS", "40000"))
THREADS = (1, 2, 4, 8)
PROCESSES = (1, 2, 4)
ROOT = Path(__file__).resolve().parent.parent


def make_handler(kind: str, path: Path) -> logging.Handler:
    if kind == "stdlib FileHandler + JSON":
        handler: logging.Handler = logging.FileHandler(path)
        handler.setFormatter(JsonFormatter())
    elif kind == "concurrent-log-handler + JSON":
        from concurrent_log_handler import ConcurrentRotatingFileHandler

        handler = ConcurrentRotatingFileHandler(str(path))
        handler.setFormatter(JsonFormatter())
    else:
        from codex_logging import CodexHandler

        handler = CodexHandler(path.parent, path.stem)
    return handler


KINDS = ("stdlib FileHandler + JSON", "concurrent-log-handler + JSON", "CodexHandler")


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _check(path: Path, expected: int) -> None:
    steps = [json.loads(line)["step"] for line in path.read_bytes().splitlines()]
    assert sorted(steps) == list(range(expected)), f"{path.name}: lost or duplicated records"


def threads_run(kind: str, threads: int, folder: Path) -> float:
    path = folder / f"t-{abs(hash(kind))}-{threads}.ndjson"
    handler = make_handler(kind, path)
    log = _logger(handler, f"scaling.{threads}.{abs(hash(kind))}")
    share = N // threads
    start_line = threading.Barrier(threads + 1)

    def run(t: int) -> None:
        start_line.wait()
        for i in range(t * share, (t + 1) * share):
            log.info("processing step %d", i, extra={"step": i})

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start_line.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    handler.close()
    _check(path, share * threads)
    return share * threads / elapsed


CHILD = """
import logging, sys, time
sys.path.insert(0, sys.argv[5])
from bench_scaling import make_handler, _logger
from pathlib import Path
kind, path, first, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
log = _logger(make_handler(kind, path), "scaling.proc")
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
for i in range(first, first + count):
    log.info("processing step %d", i, extra={"step": i})
logging.shutdown()
"""


def processes_run(kind: str, processes: int, folder: Path) -> float:
    path = folder / f"p-{abs(hash(kind))}-{processes}.ndjson"
    share = N // processes
    bench_dir = str(Path(__file__).resolve().parent)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, str(path), str(p * share), str(share), bench_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for p in range(processes)
    ]
    for child in children:  # every child imported and configured before the clock starts
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
    began = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        assert child.wait(600) == 0
    elapsed = time.perf_counter() - began
    _check(path, share * processes)
    return share * processes / elapsed


def table(title: str, counts: tuple[int, ...], run: Callable[[str, int, Path], float]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        rates = {(kind, n): run(kind, n, Path(tmp)) for kind in KINDS for n in counts}
    head = " | ".join(f"{n}" for n in counts)
    out = [title, "", f"| writer | {head} |", "| --- |" + " ---: |" * len(counts)]
    for kind in KINDS:
        cells = " | ".join(f"{rates[kind, n]:,.0f}" for n in counts)
        out.append(f"| {kind} | {cells} |")
    base = "stdlib FileHandler + JSON"
    cells = " | ".join(f"{rates['CodexHandler', n] / rates[base, n]:.2f}x" for n in counts)
    out.append(f"| CodexHandler / stdlib | {cells} |")
    return "\n".join(out)


def main() -> str:
    threads = table(
        f"Threads: {N:,} records in total, records/s (one process)", THREADS, threads_run
    )
    processes = table(
        f"Processes: {N:,} records in total over one file, records/s (wall time, after start-up)",
        PROCESSES,
        processes_run,
    )
    return threads + "\n\n" + processes


if __name__ == "__main__":
    print(main())
