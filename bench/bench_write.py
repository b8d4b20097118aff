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
from codex_logging._write.writer import WRITER

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
        "loggers": {f"bench.codex.{path.stem}": {"handlers": ["codex"], "level": "INFO", "propagate": False}},
    })  # fmt: skip
    log = logging.getLogger(f"bench.codex.{path.stem}")
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
    """structlog's orjson chain writing the fields a Codex record has (the processor's peer)."""
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


def check(path: Path, name: str) -> None:
    """Fail unless the file holds every numbered record once and no partial line."""
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", f"{name}: partial last line"
    steps = [json.loads(line).get("step") for line in lines[:-1]]
    assert len(steps) == WRITTEN + 200 or name == PREBUILT, (name, len(steps))
    if name != PREBUILT:
        assert sorted(s for s in steps if s is not None and s >= 0) == list(range(WRITTEN)), name


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


#: Records a case writes before the next case takes its turn.
CHUNK = min(N, int(os.environ.get("BENCH_CHUNK", "2000")))
#: Records each case writes in a repeat (whole turns), checked afterwards.
WRITTEN = N // CHUNK * CHUNK


def main() -> list[tuple[str, list[float]]]:
    """Run the cases in turns of CHUNK records, N records each per repeat; return the rates.

    Every case keeps its writer and file for a repeat, and the cases take
    turns of CHUNK records (the order rotating each turn), so the ratio of
    two cases is taken over turns a few milliseconds apart, where a noisy
    neighbour or a slower second weighs on both alike (measured
    that way). A case's rates are one per turn.
    """
    fast = codex_record._fast_dumps
    found = cases()
    # dictConfig closes the handlers that exist when it runs: the cases
    # configured with it are made first.
    order = sorted(range(len(found)), key=lambda i: found[i][1] is not codex_handler)
    rates: dict[str, list[float]] = {name: [] for name, _, _ in found}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(REPEATS):
            paths = [folder / f"case{i}-{r}.ndjson" for i in range(len(found))]
            runs: dict[int, Callable[[int], None]] = {}
            for i in order:
                runs[i] = found[i][1](paths[i])
            for turn in range(-1, N // CHUNK):  # turn -1: 200 records to warm up
                shift = turn % len(found)
                for i in [*range(shift, len(found)), *range(shift)]:
                    name, _, orjson = found[i]
                    run = runs[i]
                    codex_record._fast_dumps = fast if orjson else None
                    try:
                        if turn < 0:
                            for n in range(200):
                                run(-1 - n)
                            continue
                        first = turn * CHUNK
                        start = time.perf_counter()
                        for n in range(first, first + CHUNK):
                            run(n)
                        rates[name].append(CHUNK / (time.perf_counter() - start))
                    finally:
                        codex_record._fast_dumps = fast
            WRITER.close_all()
            for i, (name, _, _) in enumerate(found):
                check(paths[i], name)
                paths[i].unlink()
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
    out = [(f"Write path: {WRITTEN:,} records a case, {REPEATS} times, in turns of {CHUNK:,} records "
            "per case; medians (a ratio is the median of its per-turn ratios); redaction on "
            "(the default)"), "",
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
