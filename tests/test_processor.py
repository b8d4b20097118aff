"""CodexProcessor and configure_structlog."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import sys
import time
from pathlib import Path

import pytest
import structlog

from codex_logging import CodexHandler, CodexProcessor, configure_structlog, session_scope
from tests.conftest import read_lines, session_file


@dataclasses.dataclass
class Credentials:
    password: str


class TestProcessor:
    def test_returns_the_event_dict_unchanged(self, tmp_path: Path) -> None:
        """The processor hands back the very same dict with the same contents."""
        proc = CodexProcessor(tmp_path, "p1")
        event = {"event": "hello", "level": "info", "token": "secret-value"}
        out = proc(None, "info", event)
        assert out is event
        assert event == {"event": "hello", "level": "info", "token": "secret-value"}
        (rec,) = read_lines(tmp_path / "p1.ndjson")
        assert rec["token"] == "[REDACTED]"

    def test_every_field_whatever_its_place_in_the_event(self, tmp_path: Path) -> None:
        """Bound keys, call keys and keys added after add_log_level are all written, in order."""
        log = structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(key="stamp"),
                CodexProcessor(tmp_path, "p"),
                lambda *_: "",
            ],
        )
        bound = log.bind(request="r-1", password="hunter2")
        for n in range(2):  # the second event runs on warm caches
            bound.info("step", n=n, note=None)
            bound.info(None, only=n)
        lines = read_lines(tmp_path / "p.ndjson")
        core = {"ts", "session_id", "kind", "level", "message", "pid", "redacted"}
        fields = [{k: v for k, v in rec.items() if k not in core} for rec in lines]
        assert [list(rec) for rec in fields] == [
            ["request", "password", "n", "note", "stamp"],
            ["request", "password", "only", "stamp"],
        ] * 2
        assert [(rec["n"], rec["note"]) for rec in fields[::2]] == [(0, None), (1, None)]
        assert {rec["password"] for rec in fields} == {"[REDACTED]"}
        assert [rec["message"] for rec in lines] == ["step", "", "step", ""]

    def test_keys_it_reads_itself_after_ordinary_fields(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """session_id, logger, kind, role and stack found after other fields: read, written once."""
        monkeypatch.delenv("CODEX_SESSION_ID", raising=False)
        proc = CodexProcessor(tmp_path)  # no session of its own: the event names it
        for n in range(2):  # the second event runs on warm caches
            proc(None, "info", {"a": n, "b": "x", "session_id": "named", "logger": "app.x",
                                "role": "tool", "stack": "my own stack", "event": "e",
                                "level": "warning"})  # fmt: skip
            proc(None, "info", {"a": n, "event": "plain", "level": "info", "session_id": "named"})
        lines = read_lines(tmp_path / "named.ndjson")
        assert [list(rec) for rec in lines] == [
            ["ts", "session_id", "kind", "level", "logger", "message", "pid", "role", "a", "b",
             "stack"],
            ["ts", "session_id", "kind", "level", "message", "pid", "a"],
        ] * 2  # fmt: skip
        assert [(r["a"], r["level"], r.get("logger"), r.get("stack")) for r in lines] == [
            (0, "WARNING", "app.x", "my own stack"),
            (0, "INFO", None, None),
            (1, "WARNING", "app.x", "my own stack"),
            (1, "INFO", None, None),
        ]
        assert proc.dropped == 0

    def test_a_subclass_with_its_own_call(self, tmp_path: Path) -> None:
        """A subclass's three-argument __call__ runs once per event, own keys or not."""
        calls = []

        class Tagged(CodexProcessor):
            __slots__ = ()

            def __call__(self, logger: object, name: str, event: dict) -> dict:  # type: ignore[override]
                calls.append(event["event"])
                event.setdefault("app", "demo")
                return super().__call__(logger, name, event)  # type: ignore[return-value]

        proc = Tagged(tmp_path, "own")
        proc(None, "info", {"event": "first", "n": 1})
        proc(None, "info", {"event": "routed", "n": 2, "session_id": "other"})
        proc(None, "info", {"event": "third", "n": 3})
        assert calls == ["first", "routed", "third"]
        assert proc.dropped == 0
        own = [(r["message"], r["app"]) for r in read_lines(tmp_path / "own.ndjson")]
        assert own == [("first", "demo"), ("third", "demo")]
        (other,) = read_lines(tmp_path / "other.ndjson")
        assert (other["message"], other["n"], other["app"]) == ("routed", 2, "demo")

    def test_secret_names_and_numbers_json_cannot_hold(self, tmp_path: Path) -> None:
        """A bytes key with a secret name is redacted; NaN and infinities are written as str()."""
        proc = CodexProcessor(tmp_path, "p")
        for _ in range(2):
            proc(None, "info", {"event": "e", b"password": "hunter2", "r": float("nan"),
                                "d": {"v": float("inf")}})  # fmt: skip
        lines = read_lines(tmp_path / "p.ndjson")
        assert [(r["password"], r["r"], r["d"]) for r in lines] == [
            ("[REDACTED]", "nan", {"v": "inf"})
        ] * 2

    @pytest.mark.parametrize(
        ("method", "level_key", "expected"),
        [("warn", "warn", "WARNING"), ("exception", "exception", "ERROR"), ("info", None, "INFO"),
         ("warning", None, "WARNING"), ("critical", "critical", "CRITICAL")],
    )  # fmt: skip
    def test_level_names(
        self, tmp_path: Path, method: str, level_key: str | None, expected: str
    ) -> None:
        """structlog's level names become upper-case stdlib names (warn -> WARNING)."""
        event = {"event": "x"} if level_key is None else {"event": "x", "level": level_key}
        CodexProcessor(tmp_path, "p")(None, method, event)
        assert read_lines(tmp_path / "p.ndjson")[0]["level"] == expected

    def test_exc_info_in_every_form_structlog_accepts(self, tmp_path: Path) -> None:
        """exc_info as True, an exception, a sys.exc_info() tuple or False, without format_exc_info."""
        proc = CodexProcessor(tmp_path, "e")
        try:
            raise KeyError("boom")  # noqa: TRY301 - the exception under test
        except KeyError as error:
            caught = error
            proc(None, "error", {"event": "as true", "exc_info": True})
            proc(None, "error", {"event": "as tuple", "exc_info": sys.exc_info()})
        proc(None, "error", {"event": "as exception", "exc_info": caught})
        proc(None, "error", {"event": "as false", "exc_info": False})
        proc(None, "error", {"event": "no exception now", "exc_info": True})
        recs = read_lines(tmp_path / "e.ndjson")
        for rec in recs[:3]:
            assert rec["exc"].startswith("Traceback (most recent call last):"), rec
            assert rec["exc"].endswith("KeyError: 'boom'"), rec
        assert ["exc" in rec for rec in recs[3:]] == [False, False]

    def test_failure_is_one_stderr_line_and_a_count(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A failing write is one stderr line per cause, counted, and the event flows on."""
        (tmp_path / "f").write_text("")
        proc = CodexProcessor(tmp_path / "f" / "s", "p")
        for _ in range(3):
            assert proc(None, "info", {"event": "x"}) == {"event": "x"}
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"codex_logging: dropped a record for {tmp_path / 'f' / 's'}: ")
        assert proc.dropped == 3

    def test_invalid_routed_id_reported_and_writes_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An invalid session_id key writes nothing anywhere and says what to set."""
        CodexProcessor(tmp_path, "p")(None, "info", {"event": "x", "session_id": "a/b"})
        assert list(tmp_path.iterdir()) == []
        (line,) = capsys.readouterr().err.splitlines()
        assert "invalid session id 'a/b'" in line
        assert "(set CODEX_SESSION_ID, or session_id=, to a valid id)" in line


class TestConfigureStructlog:
    def test_every_field_with_no_other_setup(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """structlog.get_logger().info(kind="message") lands with every field."""
        monkeypatch.setenv("CODEX_SESSION_ID", "st")
        configure_structlog()
        before = time.time()
        structlog.get_logger("svc").warning(
            "step B", kind="message", role="tool", n=3, data={"a": [1]}
        )
        (rec,) = read_lines(session_file("st"))
        assert before <= rec.pop("ts") <= time.time()
        assert rec == {
            "session_id": "st", "kind": "message", "level": "WARNING", "logger": "svc",
            "message": "step B", "pid": os.getpid(), "role": "tool", "n": 3, "data": {"a": [1]},
        }  # fmt: skip
        assert "step B" in capsys.readouterr().err

    def test_empty_event_and_exception(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No event is an empty message; log.exception records the traceback."""
        monkeypatch.setenv("CODEX_SESSION_ID", "st")
        configure_structlog()
        log = structlog.get_logger()
        log.info(kind="message")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("div")
        empty, failed = read_lines(session_file("st"))
        assert empty["message"] == ""
        assert (failed["level"], failed["exc"].splitlines()[-1]) == (
            "ERROR",
            "ZeroDivisionError: division by zero",
        )

    def test_bound_and_context_values_and_routing(self) -> None:
        """Bound values and contextvars become fields; a session_id key routes the event."""
        configure_structlog()
        log = structlog.get_logger().bind(step="b")
        structlog.contextvars.bind_contextvars(request="r1")
        try:
            with session_scope("scoped"):
                log.info("in scope")
                log.info("routed", session_id="elsewhere")
        finally:
            structlog.contextvars.clear_contextvars()
        scoped = read_lines(session_file("scoped"))
        assert (scoped[1]["message"], scoped[1]["step"], scoped[1]["request"]) == (
            "in scope",
            "b",
            "r1",
        )
        assert read_lines(session_file("elsewhere"))[0]["message"] == "routed"

    def test_one_processor_for_a_plain_logger_then_a_bridged_one(self, tmp_path: Path) -> None:
        """After events from a PrintLogger, a stdlib logger reaching a CodexHandler still defers."""
        processor = CodexProcessor(tmp_path, "mixed")
        processor(structlog.PrintLogger(io.StringIO()), "info", {"event": "plain"})
        bridged = logging.getLogger("mixed-bridge")
        bridged.propagate = False
        bridged.handlers[:] = [CodexHandler(tmp_path, "mixed")]
        try:
            processor(bridged, "info", {"event": "to the handler"})
            processor(structlog.PrintLogger(io.StringIO()), "info", {"event": "plain again"})
        finally:
            bridged.handlers[:] = []
        lines = read_lines(tmp_path / "mixed.ndjson")
        assert [r["message"] for r in lines] == ["plain", "plain again"]

    def test_stdlib_bridge_writes_each_event_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """structlog through stdlib to a root CodexHandler: one record per event, not two."""
        monkeypatch.setenv("CODEX_SESSION_ID", "bridge")
        handler = CodexHandler()
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
        )
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        configure_structlog(to_stdlib=True)
        structlog.get_logger("bridged").info("via structlog")
        logging.getLogger("plain").info("via logging")
        records = read_lines(session_file("bridge"))
        assert [(r["message"], r.get("logger")) for r in records] == [
            ("via structlog", "bridged"), ("via logging", "plain"),
        ]  # fmt: skip

    @pytest.mark.parametrize("redact", [True, False])
    def test_console_output_is_redacted_too(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *, redact: bool
    ) -> None:
        """Secrets stay off stderr as well as out of the file; redact=False shows them."""
        monkeypatch.setenv("CODEX_SESSION_ID", "con")
        configure_structlog(redact=redact)
        log = structlog.get_logger()
        log.info("login", password="hunter2-canary", header="Bearer CANARYconsole0123456789")
        # Values the console shows by their repr: bytes and a dataclass, nested too.
        log.info(
            "objects",
            body=b"api_key=CANARYbytes0123456789abcdef",
            cfg=Credentials("hunter3-canary"),
            items=[{"deep": Credentials("hunter4-canary")}],
        )
        log.info("plain", n=1)
        err = capsys.readouterr().err
        secrets = (
            "hunter2-canary",
            "CANARYconsole0123456789",
            "CANARYbytes0123456789abcdef",
            "hunter3-canary",
            "hunter4-canary",
        )
        assert all((s in err) is not redact for s in secrets), err
        assert "plain" in err
        raw = session_file("con").read_text()
        assert all((s in raw) is not redact for s in secrets)

    def test_stdlib_bridge_redacted_and_still_written_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With to_stdlib, other handlers get the redacted event; CodexHandler still skips it."""
        monkeypatch.setenv("CODEX_SESSION_ID", "bridge")
        stream = io.StringIO()
        console = logging.StreamHandler(stream)
        console.setFormatter(
            structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
        )
        root = logging.getLogger()
        root.addHandler(CodexHandler())
        root.addHandler(console)
        root.setLevel(logging.INFO)
        configure_structlog(to_stdlib=True)
        structlog.get_logger("bridged").info("login", api_key="CANARYbridge")
        assert "CANARYbridge" not in stream.getvalue()
        assert '"api_key": "[REDACTED]"' in stream.getvalue()
        (rec,) = read_lines(session_file("bridge"))
        assert (rec["message"], rec["api_key"], rec["redacted"]) == ("login", "[REDACTED]", 1)

    def test_a_kind_of_its_own_is_a_message_keeping_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """kind is start, message or end: another is kept as extra.kind, redacted as any text."""
        monkeypatch.setenv("CODEX_SESSION_ID", "knd")
        configure_structlog(logger_factory=structlog.ReturnLoggerFactory())
        log = structlog.get_logger()
        log.info("x", kind="tool_call")
        log.info("y", kind="start")
        log.info("z", kind="password=hunter2-canary")
        records = read_lines(session_file("knd"))
        assert [(r["kind"], r.get("extra.kind")) for r in records] == [
            ("message", "tool_call"),
            ("start", None),
            ("message", "password=[REDACTED]"),
        ]

    def test_stack_info_ends_at_the_call(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """stack_info=True: the stack ends at the program's call, as logging's does."""
        monkeypatch.setenv("CODEX_SESSION_ID", "stk")
        configure_structlog(logger_factory=structlog.ReturnLoggerFactory())
        structlog.get_logger().info("where", stack_info=True)
        (rec,) = read_lines(session_file("stk"))
        assert rec["exc"].endswith('structlog.get_logger().info("where", stack_info=True)'), rec
        assert "codex_logging" not in rec["exc"]

    def test_min_level_drops_events(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Events below min_level are neither written nor printed."""
        monkeypatch.setenv("CODEX_SESSION_ID", "lv")
        configure_structlog(min_level=logging.WARNING)
        structlog.get_logger().info("quiet")
        structlog.get_logger().error("loud")
        assert [r["message"] for r in read_lines(session_file("lv"))] == ["loud"]
