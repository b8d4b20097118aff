"""session_scope off its main path: a rejected inherited id, signals, contexts, queue listeners."""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import os
import queue
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import FrameType

import pytest

from codex_logging import CodexHandler, session_scope
from codex_logging._write.scope import child_env
from codex_logging._write.session import current_session
from tests.conftest import read_lines, session_file


class TestRejectedId:
    def test_a_bad_inherited_id_runs_under_a_fresh_one_and_says_it_once(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bad = f"../bad-{uuid.uuid4()}"  # once per process and value: a value of this test only
        monkeypatch.setenv("CODEX_SESSION_ID", bad)
        with session_scope() as first:
            pass
        with session_scope() as second:
            pass
        assert first != second
        for sid in (first, second):
            uuid.UUID(sid)
            start, end = read_lines(session_file(sid))
            assert (start["kind"], start["rejected_session_id"], end["status"]) == (
                "start",
                bad,
                "ok",
            )
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("codex_logging: CODEX_SESSION_ID is not used: invalid session id")
        assert os.environ["CODEX_SESSION_ID"] == bad


class TestSignals:
    def test_a_program_handler_that_returns_ends_no_scope(self) -> None:
        """SIGHUP with the program's reload handler: it runs, the scope goes on and ends ok."""
        seen: list[int] = []

        def reload(signum: int, _frame: FrameType | None) -> None:
            seen.append(signum)

        previous = signal.signal(signal.SIGHUP, reload)
        try:
            with session_scope("hup"):
                os.kill(os.getpid(), signal.SIGHUP)
                logging.getLogger("x").warning("still here")
            assert signal.getsignal(signal.SIGHUP) is reload  # put back on exit
        finally:
            signal.signal(signal.SIGHUP, previous)
        assert seen == [signal.SIGHUP]
        assert [(r["kind"], r.get("status")) for r in read_lines(session_file("hup"))] == [
            ("start", None),
            ("end", "ok"),
        ]

    def test_a_program_handler_that_raises_ends_the_scope_terminated(self) -> None:
        class StopError(Exception):
            pass

        def stop(_signum: int, _frame: FrameType | None) -> None:
            raise StopError

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            with pytest.raises(StopError), session_scope("term"):
                os.kill(os.getpid(), signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, previous)
        records = read_lines(session_file("term"))
        assert [(r["kind"], r.get("status")) for r in records] == [
            ("start", None),
            ("end", "terminated"),
        ]


class TestContexts:
    def test_exited_in_another_context_restores_by_value(self) -> None:
        """Entered in one context, exited in a copy of it (a task it started): the id is reset."""

        def body() -> tuple[str | None, str | None]:
            scope = session_scope("moved")
            scope.__enter__()
            inner = contextvars.copy_context()
            inner.run(scope.__exit__, None, None, None)
            return current_session.get(), inner.run(current_session.get)

        # In a context of its own: the entering one is left as the task left it.
        assert contextvars.copy_context().run(body) == ("moved", None)
        assert current_session.get() is None
        assert [r["kind"] for r in read_lines(session_file("moved"))] == ["start", "end"]

    def test_a_task_that_outlived_its_scope_passes_on_the_enclosing_one(self) -> None:
        with session_scope("outer"):
            with session_scope("inner"):
                context = contextvars.copy_context()
            env = context.run(child_env, {})
        assert env["CODEX_SESSION_ID"] == "outer"
        assert context.run(child_env, {"A": "1"}) == {"A": "1"}  # none open at all


class TestQueueListener:
    def test_scope_records_reach_a_handler_behind_a_queue_listener(self, tmp_path: Path) -> None:
        codex = CodexHandler(tmp_path / "s")
        records: queue.Queue[logging.LogRecord] = queue.Queue()
        front = logging.handlers.QueueHandler(records)
        front.listener = logging.handlers.QueueListener(records, codex)  # type: ignore[attr-defined]
        logging.getLogger().addHandler(front)
        with session_scope("q"):
            pass
        assert [r["kind"] for r in read_lines(tmp_path / "s" / "q.ndjson")] == ["start", "end"]
        assert not session_file("q").exists()

    def test_basic_config_of_a_queue_handler_keeps_the_message(self, tmp_path: Path) -> None:
        """basicConfig(handlers=[QueueHandler(q)]): the message is the message, not BASIC_FORMAT's."""
        script = """
import logging, logging.handlers, queue, sys
from codex_logging import CodexHandler
q = queue.Queue()
logging.basicConfig(level=logging.INFO, handlers=[logging.handlers.QueueHandler(q)])
listener = logging.handlers.QueueListener(q, CodexHandler(sys.argv[1], "basic"))
listener.start()
logging.getLogger("app.db").info("plain message")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("app").exception("failed %s", "hard")
logging.info("INFO:app:not a prefix of the root's")
listener.stop()
"""
        subprocess.run(
            [sys.executable, "-W", "error", "-c", script, str(tmp_path / "s")],
            check=True,
            timeout=30,
        )
        records = read_lines(tmp_path / "s" / "basic.ndjson")
        assert [r["message"] for r in records] == [
            "plain message",
            "failed hard",
            "INFO:app:not a prefix of the root's",
        ]
        assert records[1]["exc"].startswith("Traceback (most recent call last):")
        assert records[1]["exc"].endswith("ZeroDivisionError: division by zero")

    def test_sigterm_while_the_queue_is_held_still_ends_the_process(self, tmp_path: Path) -> None:
        """SIGTERM lands while this thread holds the queue's lock (inside QueueHandler's put): the
        scope's end is written and the process dies of the signal, instead of waiting on that lock."""
        script = """
import logging, logging.handlers, os, queue, signal, sys
from codex_logging import CodexHandler, session_scope
q = queue.Queue()
listener = logging.handlers.QueueListener(q, CodexHandler(sys.argv[1]))
logging.getLogger().addHandler(logging.handlers.QueueHandler(q))
listener.start()
with session_scope("held"):
    logging.getLogger("app").warning("before")
    with q.mutex:  # as QueueHandler.enqueue -> put holds it
        os.kill(os.getpid(), signal.SIGTERM)
"""
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "s")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == -signal.SIGTERM, done.stderr
        kinds = [r["kind"] for r in read_lines(tmp_path / "s" / "held.ndjson")]
        assert kinds[0] == "start"
        assert kinds[-1] == "end"

    def test_a_listener_made_by_hand_is_found_and_drained_before_the_end(
        self, tmp_path: Path
    ) -> None:
        """QueueHandler -> QueueListener(CodexHandler) built by hand (no .listener): the scope's start
        and end go to that handler's folder, redacted by it, and the end follows every record logged
        in the scope, though the listener writes them on its own thread."""
        codex = CodexHandler(tmp_path / "s", redact_keys=["customer_ref"])
        records: queue.Queue[logging.LogRecord] = queue.Queue()
        listener = logging.handlers.QueueListener(records, codex, respect_handler_level=True)
        front = logging.handlers.QueueHandler(records)
        logger = logging.getLogger("test.queue.byhand")
        logger.setLevel(logging.INFO)
        logger.addHandler(front)
        listener.start()
        try:
            with session_scope("byhand", meta={"customer_ref": "c-19"}):
                for n in range(300):
                    logger.info("inside %d", n, extra={"customer_ref": "c-19"})
        finally:
            listener.stop()
            logger.removeHandler(front)
        lines = read_lines(tmp_path / "s" / "byhand.ndjson")
        assert [r["kind"] for r in lines] == ["start", *["message"] * 300, "end"]
        assert [r["message"] for r in lines[1:-1]] == [f"inside {n}" for n in range(300)]
        assert {r["customer_ref"] for r in lines[:-1]} == {"[REDACTED]"}
        assert not session_file("byhand").exists()
