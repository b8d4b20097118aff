"""Run every benchmark in one process run and print the Markdown tables (make bench)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_compact
import bench_otlp
import bench_query
import bench_redact
import bench_redact_corpus
import bench_scaling
import bench_sync
import bench_viewer
import bench_write


def versions() -> str:
    names = [
        "codex-logging",
        "structlog",
        "portalocker",
        "orjson",
        "python-json-logger",
        "concurrent-log-handler",
        "detect-secrets",
    ]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def main() -> None:
    import os
    import sqlite3

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")  # fmt: skip
    print(f"Versions: {versions()}\n")
    print(bench_write.table(bench_write.main()), end="\n\n", flush=True)
    print(bench_scaling.main(), end="\n\n", flush=True)
    print(bench_sync.main(), end="\n\n", flush=True)
    print(bench_query.main(), end="\n\n", flush=True)
    print(bench_compact.main(), end="\n\n", flush=True)
    print(__import__("bench_postgres").main(), end="\n\n", flush=True)
    print(bench_otlp.main(), end="\n\n", flush=True)
    print(bench_redact.main(), end="\n\n", flush=True)
    print(bench_redact_corpus.main(), end="\n\n", flush=True)
    print(bench_viewer.main(), flush=True)


if __name__ == "__main__":
    main()
