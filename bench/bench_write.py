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
from typing import Final

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


def run_once(case: Case, folder: Path, name: str, r: int) -> float:
    """Records/s of one case over N records into a new file, checked for loss afterwards."""
    path = folder / f"{''.join(c if c.isalnum() else '-' for c in name)}-{r}.ndjson"
    run = case(path)
    for i in range(200):  # warm up, outside the count
        run(-1 - i)
    start = time.perf_counter()
    for i in range(N):
        run(i)
    rate = N / (time.perf_counter() - start)
    WRITER.close_all()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", f"{name}: partial last line"
    steps = [json.loads(line).get("step") for line in lines[:-1]]
    assert len(steps) == N + 200 or name == PREBUILT, (name, len(steps))
    if name != PREBUILT:
        assert sorted(s for s in steps if s is not None and s >= 0) == list(range(N)), name
    path.unlink()
    return rate


PREBUILT = "pre-serialised line + os.write"
#: (name, case, with orjson): the CodexHandler/CodexProcessor cases run
#: once with the stdlib json encoder and once with orjson.
Cases = list[tuple[str, Case, bool]]


def cases() -> Cases:
    """Every writer of the table, in its order."""
    has_orjson = codex_record._fast_dumps is not None
    found: Cases = [
        (PREBUILT, floor_prebuilt, True),
        ("json.dumps + os.write", floor_json, True),
        ("stdlib FileHandler + JSON formatter", stdlib_file_json, True),
        ("python-json-logger + FileHandler", python_json_logger, True),
        ("structlog JSONRenderer + WriteLogger", structlog_json, True),
    ]
    if has_orjson:
        found += [
            ("orjson.dumps + os.write", floor_orjson, True),
            ("structlog orjson + BytesLogger", structlog_orjson, True),
            ("structlog orjson + BytesLogger, same fields", structlog_orjson_same_fields, True),
        ]
    found += [
        ("CodexHandler (dictConfig), json", codex_handler, False),
        ("CodexProcessor (structlog), json", codex_processor, False),
    ]
    if has_orjson:
        found += [
            ("CodexHandler (dictConfig), orjson", codex_handler, True),
            ("CodexProcessor (structlog), orjson", codex_processor, True),
        ]
    return found


def main() -> list[tuple[str, list[float]]]:
    """Run every case once per round, interleaved, REPEATS rounds; return each case's rates.

    The cases of one round run back to back (in reverse order every other
    round), so a ratio of two cases is taken within a round, where a noisy
    neighbour or a slower minute weighs on both alike (issue 15 measured
    that way).
    """
    fast = codex_record._fast_dumps
    found = cases()
    rates: dict[str, list[float]] = {name: [] for name, _, _ in found}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(REPEATS):
            for name, case, orjson in found if r % 2 == 0 else found[::-1]:
                codex_record._fast_dumps = fast if orjson else None
                try:
                    rates[name].append(run_once(case, folder, name, r))
                finally:
                    codex_record._fast_dumps = fast
    return [(name, rates[name]) for name, _, _ in found]


RATIOS: Final = (
    ("CodexHandler json / stdlib FileHandler+JSON (target >= 1.0)",
     "CodexHandler (dictConfig), json", "stdlib FileHandler + JSON formatter"),
    ("CodexProcessor json / structlog JSONRenderer+WriteLogger (target >= 1.0)",
     "CodexProcessor (structlog), json", "structlog JSONRenderer + WriteLogger"),
    ("CodexHandler orjson / stdlib FileHandler+JSON (target >= 1.25)",
     "CodexHandler (dictConfig), orjson", "stdlib FileHandler + JSON formatter"),
    ("CodexProcessor orjson / structlog orjson+BytesLogger (was the target)",
     "CodexProcessor (structlog), orjson", "structlog orjson + BytesLogger"),
    ("CodexProcessor orjson / structlog orjson+BytesLogger, same fields (target >= 0.9)",
     "CodexProcessor (structlog), orjson", "structlog orjson + BytesLogger, same fields"),
)  # fmt: skip


def ratio(rates: dict[str, list[float]], case: str, peer: str) -> float:
    """The median over rounds of a case's rate over its peer's in the same round."""
    return statistics.median(a / b for a, b in zip(rates[case], rates[peer], strict=True))


def table(results: list[tuple[str, list[float]]]) -> str:
    """The Markdown tables: each case's median rate, and the target ratios."""
    rates = dict(results)
    base = "stdlib FileHandler + JSON formatter"
    out = [(f"Write path: {N:,} records, {REPEATS} rounds of every case in turn; medians "
            "(a ratio is the median of its per-round ratios); redaction on (the default)"), "",
           "| writer | records/s | vs stdlib FileHandler + JSON |", "| --- | ---: | ---: |"]  # fmt: skip
    out += [
        f"| {name} | {statistics.median(rate):,.0f} | {ratio(rates, name, base):.2f}x |"
        for name, rate in results
    ]
    out += ["", "| ratio | value |", "| --- | ---: |"]
    out += [
        f"| {label} | {ratio(rates, case, peer):.2f}x |"
        for label, case, peer in RATIOS
        if case in rates and peer in rates
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(table(main()))
    sys.stdout.flush()
