"""structlog as users configure it: each set-up writes every event exactly once, with its fields."""

from __future__ import annotations

import logging
import logging.config
import logging.handlers
import os
import queue
from pathlib import Path
from typing import Any

import pytest
import structlog

from codex_logging import CodexHandler, CodexProcessor, configure_structlog
from tests.conftest import read_lines, session_file


def stdlib_recipe_chain(*extra: Any) -> list[Any]:
    """The chain of structlog's "Rendering within logging" recipe, ending in wrap_for_formatter."""
    return [
        structlog.stdlib.filter_by_level,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        *extra,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]


def configure_stdlib_recipe(*extra: Any) -> None:
    structlog.configure(
        processors=stdlib_recipe_chain(*extra),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def add_service(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """A processor that returns a new dict, a common idiom."""
    return {**event, "service": "api"}


@pytest.fixture
def sid(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CODEX_SESSION_ID", "sl")
    return "sl"


class TestStdlibRecipe:
    def test_handler_alone_writes_event_keys_as_fields(self, sid: str) -> None:
        """ProcessorFormatter.wrap_for_formatter + only a CodexHandler: event is message, keys are fields."""
        configure_stdlib_recipe()
        logging.config.dictConfig(
            {
                "version": 1,
                "handlers": {"codex": {"class": "codex_logging.CodexHandler"}},
                "root": {"handlers": ["codex"], "level": "INFO"},
            }
        )
        log = structlog.get_logger("svc.api")
        log.info("user %s logged in", "ann", user_id=7, kind="message", role="tool")
        log.debug("filtered out")
        (rec,) = read_lines(session_file(sid))
        assert rec["message"] == "user ann logged in"
        assert (rec["level"], rec["logger"], rec["session_id"], rec["role"]) == (
            "INFO",
            "svc.api",
            sid,
            "tool",
        )
        assert rec["user_id"] == 7
        assert "timestamp" in rec
        assert "{" not in rec["message"]

    def test_root_logger_with_processor_writes_once(self, sid: str) -> None:
        """A chain wrapping the root logger (a RootLogger, not a Logger): still written once."""
        configure_stdlib_recipe(CodexProcessor())
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.INFO)
        structlog.wrap_logger(logging.getLogger()).info("from the root")
        (rec,) = read_lines(session_file(sid))
        assert (rec["message"], rec["logger"]) == ("from the root", "root")

    def test_exception_lands_in_exc(self, sid: str) -> None:
        """log.exception through the recipe records the traceback in exc."""
        configure_stdlib_recipe()
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.INFO)
        try:
            {}["missing"]
        except KeyError:
            structlog.get_logger("x").exception("failed")
        (rec,) = read_lines(session_file(sid))
        assert (rec["level"], rec["message"]) == ("ERROR", "failed")
        assert rec["exc"].endswith("KeyError: 'missing'")

    def test_processor_then_copying_processor_writes_once(self, sid: str) -> None:
        """CodexProcessor followed by a dict-copying processor and a CodexHandler: one record."""
        configure_stdlib_recipe(CodexProcessor(), add_service)
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.INFO)
        for i in range(5):
            structlog.get_logger("svc").info("event", n=i)
        records = read_lines(session_file(sid))
        assert [r["n"] for r in records] == [0, 1, 2, 3, 4]
        assert {r["service"] for r in records} == {"api"}
        assert list(Path(".codex/sessions").resolve().iterdir()) == [session_file(sid)]

    def test_render_to_log_kwargs_chain_writes_once(self, sid: str) -> None:
        """A chain ending in render_to_log_kwargs with CodexProcessor and a CodexHandler: one record."""
        structlog.configure(
            processors=[
                structlog.stdlib.add_log_level,
                CodexProcessor(),
                structlog.stdlib.render_to_log_kwargs,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.INFO)
        structlog.get_logger("kw").info("once", n=1)
        (rec,) = read_lines(session_file(sid))
        assert (rec["message"], rec["logger"], rec["n"]) == ("once", "kw", 1)

    def test_queue_handler_and_listener(self, sid: str) -> None:
        """QueueHandler -> QueueListener(CodexHandler) with configure_structlog(to_stdlib=True): once each."""
        configure_structlog(to_stdlib=True)
        q: queue.Queue[logging.LogRecord] = queue.Queue()
        listener = logging.handlers.QueueListener(q, CodexHandler())
        root = logging.getLogger()
        root.addHandler(logging.handlers.QueueHandler(q))
        root.setLevel(logging.INFO)
        listener.start()
        try:
            for i in range(3):
                structlog.get_logger("q").info("queued %d", i)
        finally:
            listener.stop()
        records = read_lines(session_file(sid))
        assert [(r["message"], r["logger"]) for r in records] == [
            ("queued 0", "q"),
            ("queued 1", "q"),
            ("queued 2", "q"),
        ]
        assert list(Path(".codex/sessions").resolve().iterdir()) == [session_file(sid)]


class TestQueueHandlerPlainLogging:
    def test_exception_behind_a_queue_keeps_message_and_exc_apart(self, sid: str) -> None:
        """QueueHandler.prepare folds the traceback into the message: the handler takes it back out."""
        q: queue.Queue[logging.LogRecord] = queue.Queue()
        listener = logging.handlers.QueueListener(q, CodexHandler())
        root = logging.getLogger()
        root.addHandler(logging.handlers.QueueHandler(q))
        root.setLevel(logging.INFO)
        listener.start()
        try:
            try:
                1 / 0  # noqa: B018 - the exception is the point
            except ZeroDivisionError:
                logging.getLogger("q").exception("failed %s", "here")
            logging.getLogger("q").info("plain %d", 2)
        finally:
            listener.stop()
        failed, plain = read_lines(session_file(sid))
        assert (failed["message"], failed["level"]) == ("failed here", "ERROR")
        assert failed["exc"].startswith("Traceback (most recent call last):\n")
        assert failed["exc"].endswith("ZeroDivisionError: division by zero")
        assert (plain["message"], "exc" in plain) == ("plain 2", False)


def configure_in_mode(to_stdlib: bool, **kw: Any) -> None:
    """configure_structlog; with to_stdlib, a CodexHandler on the root logger writes."""
    configure_structlog(to_stdlib=to_stdlib, **kw)
    if to_stdlib:
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.DEBUG)


class TestConfigureStructlog:
    def test_printf_arguments(self, sid: str) -> None:
        """log.info("hello %s", "world") works as in plain structlog and stdlib logging."""
        configure_structlog()
        structlog.get_logger().info("hello %s", "world")
        structlog.get_logger().info("%(who)s here", {"who": "ann"})
        structlog.get_logger().info("%d items", "not a number")
        messages = [r["message"] for r in read_lines(session_file(sid))]
        assert messages == ["hello world", "ann here", "%d items ('not a number',)"]

    @pytest.mark.parametrize("to_stdlib", [False, True])
    def test_the_same_fields_in_both_modes(self, sid: str, to_stdlib: bool) -> None:
        """Only the event's own keys become fields: not the timestamp the chain adds for other handlers."""
        configure_in_mode(to_stdlib)
        structlog.get_logger("svc").info("done", step=3)
        (record,) = read_lines(session_file(sid))
        assert set(record) == {
            "ts",
            "session_id",
            "kind",
            "level",
            "logger",
            "message",
            "pid",
            "step",
        }

    @pytest.mark.parametrize("min_level", [logging.INFO, "info", "INFO"])
    @pytest.mark.parametrize("to_stdlib", [False, True])
    def test_min_level_in_both_modes(self, sid: str, to_stdlib: bool, min_level: int | str) -> None:
        """min_level=INFO (or its name, as structlog takes it) drops debug events, in both modes."""
        configure_in_mode(to_stdlib, min_level=min_level)
        log = structlog.get_logger("svc")
        log.debug("hidden")
        log.info("shown")
        log.warning("also")
        records = read_lines(session_file(sid))
        assert [(r["message"], r["logger"]) for r in records] == [("shown", "svc"), ("also", "svc")]

    @pytest.mark.parametrize("to_stdlib", [False, True])
    def test_logger_name_and_levels(self, sid: str, to_stdlib: bool) -> None:
        """get_logger("svc") records logger "svc"; warn, exception and log(level) map to the record's levels."""
        configure_in_mode(to_stdlib)
        log = structlog.get_logger("svc")
        log.warning("w")
        log.error("e")
        log.log(logging.CRITICAL, "c")
        records = read_lines(session_file(sid))
        assert [(r["level"], r["logger"]) for r in records] == [
            ("WARNING", "svc"),
            ("ERROR", "svc"),
            ("CRITICAL", "svc"),
        ]

    def test_a_min_level_of_no_level_is_refused_at_once(self) -> None:
        with pytest.raises(ValueError, match="min_level must be a level number or name"):
            configure_structlog(min_level="loud")

    @pytest.mark.parametrize(("to_stdlib", "name_35"), [(False, "LEVEL 35"), (True, "Level 35")])
    def test_a_level_of_its_own_keeps_its_number(
        self, sid: str, capsys: pytest.CaptureFixture[str], to_stdlib: bool, name_35: str
    ) -> None:
        """log(35) and a name given with addLevelName are written as such, never as INFO.

        With to_stdlib the CodexHandler writes stdlib's name for 35 (as for
        any stdlib record), the processor alone structlog's, upper-cased.
        """
        logging.addLevelName(33, "NOTICE_CODEX_TEST")
        configure_in_mode(to_stdlib, min_level=logging.WARNING)
        log = structlog.get_logger("svc.own-levels")
        log.log(35, "between %s", "warning and error")
        log.log(33, "noticed")
        log.log(29, "dropped")
        if to_stdlib:
            stdlib_logger = logging.getLogger("svc.own-levels")
            stdlib_logger.setLevel(logging.ERROR)
            log.log(35, "below the logger's level")
            stdlib_logger.setLevel(logging.NOTSET)
        records = read_lines(session_file(sid))
        assert [(r["message"], r["level"], r["levelno"]) for r in records] == [
            ("between warning and error", name_35, 35),
            ("noticed", "NOTICE_CODEX_TEST", 33),
        ]
        if not to_stdlib:
            assert "between warning and error" in capsys.readouterr().err  # and on the console

    def test_async_methods(self, sid: str) -> None:
        """await log.ainfo(...) writes like log.info."""
        import asyncio

        configure_structlog()
        asyncio.run(structlog.get_logger("a").ainfo("async %s", "ok"))
        (rec,) = read_lines(session_file(sid))
        assert (rec["message"], rec["logger"]) == ("async ok", "a")

    def test_to_stdlib_without_codex_handler_writes_through_the_processor(self, sid: str) -> None:
        """With to_stdlib=True and no CodexHandler anywhere, the processor still writes once."""
        configure_structlog(to_stdlib=True)
        logging.getLogger().addHandler(logging.NullHandler())
        logging.getLogger().setLevel(logging.INFO)
        structlog.get_logger("svc").info("lone")
        (rec,) = read_lines(session_file(sid))
        assert (rec["message"], rec["logger"]) == ("lone", "svc")


class TestHandBuiltChain:
    def test_codex_processor_in_a_pure_chain(self, sid: str) -> None:
        """A hand-built chain with CodexProcessor before a JSON renderer: once, with fields."""
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                CodexProcessor(),
                add_service,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.ReturnLoggerFactory(),
        )
        structlog.contextvars.bind_contextvars(request="r1")
        try:
            structlog.get_logger().warning("done", n=1)
        finally:
            structlog.contextvars.clear_contextvars()
        (rec,) = read_lines(session_file(sid))
        assert (rec["message"], rec["level"], rec["request"], rec["n"]) == (
            "done",
            "WARNING",
            "r1",
            1,
        )
        assert rec["pid"] == os.getpid()
