"""Write path: records/s of CodexHandler and CodexProcessor beside their peers, one run."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

import codex_logging._record as codex_record
from codex_logging import CodexProcessor
from codex_logging._writer import WRITER

N = int(os.environ.get("BENCH_RECORDS", "40000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))

Case = Callable[[Path], Callable[[int], None]]


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def floor_prebuilt(path: Path) -> Callable[[int], None]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    line = (
        json.dumps(
            {
                "ts": time.time(),
                "level": "INFO",
                "logger": "bench",
                "message": "processing step 1",
                "pid": 1,
            }
        ).encode()
        + b"\n"
    )
    write = os.write
    return lambda i: write(fd, line)  # type: ignore[return-value]


def floor_json(path: Path) -> Callable[[int], None]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    pid = os.getpid()

    def run(i: int) -> None:
        os.write(
            fd,
            (
                json.dumps(
                    {
                        "ts": time.time(),
                        "level": "INFO",
                        "logger": "bench",
                        "message": f"processing step {i}",
                        "pid": pid,
                        "step": i,
                    }
                )
                + "\n"
            ).encode(),
        )

    return run


def floor_orjson(path: Path) -> Callable[[int], None]:
    import orjson

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    pid = os.getpid()

    def run(i: int) -> None:
        os.write(
            fd,
            orjson.dumps(
                {
                    "ts": time.time(),
                    "level": "INFO",
                    "logger": "bench",
                    "message": f"processing step {i}",
                    "pid": pid,
                    "step": i,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            ),
        )

    return run


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "pid": record.process,
                "step": getattr(record, "step", None),
            }
        )


def stdlib_file_json(path: Path) -> Callable[[int], None]:
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    log = _logger(handler, "bench.stdlib")
    return lambda i: log.info("processing step %d", i, extra={"step": i})


def python_json_logger(path: Path) -> Callable[[int], None]:
    try:
        from pythonjsonlogger.json import JsonFormatter as PJL
    except ImportError:  # older releases
        from pythonjsonlogger.jsonlogger import JsonFormatter as PJL  # type: ignore[no-redef]
    handler = logging.FileHandler(path)
    handler.setFormatter(PJL("%(created)f %(levelname)s %(name)s %(message)s %(process)d"))
    log = _logger(handler, "bench.pjl")
    return lambda i: log.info("processing step %d", i, extra={"step": i})


def codex_handler(path: Path) -> Callable[[int], None]:
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"codex": {"class": "codex_logging.CodexHandler", "sessions_dir": str(path.parent), "session_id": path.stem}},
        "loggers": {"bench.codex": {"handlers": ["codex"], "level": "INFO", "propagate": False}},
    })  # fmt: skip
    log = logging.getLogger("bench.codex")
    return lambda i: log.info("processing step %d", i, extra={"step": i})


def structlog_json(path: Path) -> Callable[[int], None]:
    f = path.open("a")
    log = structlog.wrap_logger(
        structlog.WriteLogger(f),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return lambda i: log.info("processing step", step=i)


def structlog_orjson(path: Path) -> Callable[[int], None]:
    import orjson

    f = path.open("ab")
    log = structlog.wrap_logger(
        structlog.BytesLogger(f),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return lambda i: log.info("processing step", step=i)


def structlog_orjson_same_fields(path: Path) -> Callable[[int], None]:
    """structlog's orjson chain writing the fields a Codex record has (issue 15's peer)."""
    import orjson

    f = path.open("ab")
    pid = os.getpid()
    session = path.stem

    def codex_fields(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
        return {
            "ts": time.time(),
            "session_id": session,
            "kind": "message",
            "level": event.pop("level", "info").upper(),  # type: ignore[union-attr]
            "message": event.pop("event", ""),
            "pid": pid,
            **event,
        }

    log = structlog.wrap_logger(
        structlog.BytesLogger(f),
        processors=[
            structlog.processors.add_log_level,
            codex_fields,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return lambda i: log.info("processing step", step=i)


def codex_processor(path: Path) -> Callable[[int], None]:
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            structlog.processors.add_log_level,
            CodexProcessor(path.parent, path.stem),
            lambda *_: "",
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return lambda i: log.info("processing step", step=i)


def measure(case: Case, folder: Path, name: str) -> float:
    rates = []
    for r in range(REPEATS):
        path = folder / f"{name}-{r}.ndjson"
        run = case(path)
        for i in range(200):  # warm up, outside the count
            run(-1 - i)
        start = time.perf_counter()
        for i in range(N):
            run(i)
        rates.append(N / (time.perf_counter() - start))
        WRITER.close_all()
        lines = path.read_bytes().split(b"\n")
        assert lines[-1] == b"", f"{name}: partial last line"
        steps = [json.loads(line).get("step") for line in lines[:-1]]
        assert len(steps) == N + 200 or name == "pre-serialised line + os.write", (name, len(steps))
        if name != "pre-serialised line + os.write":
            assert sorted(s for s in steps if s is not None and s >= 0) == list(range(N)), name
    return statistics.median(rates)


def main() -> list[tuple[str, float]]:
    has_orjson = codex_record._fast_dumps is not None
    fast = codex_record._fast_dumps
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases: list[tuple[str, Case]] = [
            ("pre-serialised line + os.write", floor_prebuilt),
            ("json.dumps + os.write", floor_json),
            ("stdlib FileHandler + JSON formatter", stdlib_file_json),
            ("python-json-logger + FileHandler", python_json_logger),
            ("structlog JSONRenderer + WriteLogger", structlog_json),
        ]
        if has_orjson:
            cases += [
                ("orjson.dumps + os.write", floor_orjson),
                ("structlog orjson + BytesLogger", structlog_orjson),
                ("structlog orjson + BytesLogger, same fields", structlog_orjson_same_fields),
            ]
        for name, case in cases:
            results.append((name, measure(case, folder, name)))
        codex_record._fast_dumps = None
        try:
            results.append(
                ("CodexHandler (dictConfig), json", measure(codex_handler, folder, "codex-h-json"))
            )
            results.append(
                (
                    "CodexProcessor (structlog), json",
                    measure(codex_processor, folder, "codex-p-json"),
                )
            )
        finally:
            codex_record._fast_dumps = fast
        if has_orjson:
            results.append(
                (
                    "CodexHandler (dictConfig), orjson",
                    measure(codex_handler, folder, "codex-h-orjson"),
                )
            )
            results.append(
                (
                    "CodexProcessor (structlog), orjson",
                    measure(codex_processor, folder, "codex-p-orjson"),
                )
            )
    return results


def table(results: list[tuple[str, float]]) -> str:
    rates = dict(results)
    base = rates["stdlib FileHandler + JSON formatter"]
    out = [f"Write path: {N:,} records x {REPEATS} repeats, median; redaction on (the default)", "",
           "| writer | records/s | vs stdlib FileHandler + JSON |", "| --- | ---: | ---: |"]  # fmt: skip
    out += [f"| {name} | {rate:,.0f} | {rate / base:.2f}x |" for name, rate in results]
    ratios = []
    if "CodexHandler (dictConfig), json" in rates:
        ratios.append(
            (
                "CodexHandler json / stdlib FileHandler+JSON (target >= 1.0)",
                rates["CodexHandler (dictConfig), json"] / base,
            )
        )
        ratios.append(("CodexProcessor json / structlog JSONRenderer+WriteLogger (target >= 1.0)",
                       rates["CodexProcessor (structlog), json"] / rates["structlog JSONRenderer + WriteLogger"]))  # fmt: skip
    if "CodexHandler (dictConfig), orjson" in rates:
        ratios.append(
            (
                "CodexHandler orjson / stdlib FileHandler+JSON (target >= 1.25)",
                rates["CodexHandler (dictConfig), orjson"] / base,
            )
        )
        ratios.append(("CodexProcessor orjson / structlog orjson+BytesLogger (was the target)",
                       rates["CodexProcessor (structlog), orjson"] / rates["structlog orjson + BytesLogger"]))  # fmt: skip
        ratios.append(("CodexProcessor orjson / structlog orjson+BytesLogger, same fields (target >= 0.9)",
                       rates["CodexProcessor (structlog), orjson"]
                       / rates["structlog orjson + BytesLogger, same fields"]))  # fmt: skip
    out += ["", "| ratio | value |", "| --- | ---: |"] + [f"| {n} | {v:.2f}x |" for n, v in ratios]
    return "\n".join(out)


if __name__ == "__main__":
    print(table(main()))
    sys.stdout.flush()
