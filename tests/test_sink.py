"""The one write pipeline: normalise before redaction, failures once per cause, trace context."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import subprocess
import sys
import types
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import structlog

from codex_logging import CodexHandler, CodexProcessor, configure_structlog, session_scope
from codex_logging._redaction.redactor import Redactor
from codex_logging._write.sink import Sink
from tests.conftest import read_lines

TOKEN = "ghp_" + "A" * 36  # a GitHub token shape
SK = "sk-" + "b" * 40  # an OpenAI key shape


@dataclasses.dataclass
class Login:
    user: str
    password: str


Pair = namedtuple("Pair", "name api_key")  # noqa: PYI024 - the point is a plain namedtuple


class Wrapper:
    def __str__(self) -> str:
        return f"Wrapper(token={TOKEN})"


NOT_STRINGS: dict[str, Any] = {
    "a_set": {TOKEN},
    "a_frozenset": frozenset({SK}),
    "bytes": f"Authorization: Bearer {TOKEN}".encode(),
    "bytearray": bytearray(SK.encode()),
    "path": pathlib.Path(f"/tmp/{TOKEN}/x"),
    "object": Wrapper(),
    "an_error": ValueError(f"bad key {SK}"),
    "tuple": ("x", TOKEN),
    "dataclass": Login("ann", "hunter2"),
    "namespace": types.SimpleNamespace(password="hunter2", user="ann"),
    "namedtuple": Pair("svc", "k-123"),
}


def _writers(tmp_path: Path) -> list[Any]:
    handler = CodexHandler(tmp_path, "h")
    logger = logging.getLogger("sink-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    processor = CodexProcessor(tmp_path, "p")

    def via_handler(fields: dict[str, Any]) -> None:
        logger.info("m", extra=fields)

    def via_processor(fields: dict[str, Any]) -> None:
        processor(None, "info", {"event": "m", **fields})

    return [("h", via_handler), ("p", via_processor)]


class TestNormaliseThenRedact:
    @pytest.mark.parametrize("name", sorted(NOT_STRINGS))
    def test_secrets_inside_values_that_are_not_strings(self, tmp_path: Path, name: str) -> None:
        """A secret in a set, bytes, path, object, dataclass or namedtuple never reaches the file."""
        for sid, write in _writers(tmp_path):
            write({name: NOT_STRINGS[name]})
            data = (tmp_path / f"{sid}.ndjson").read_text()
            for secret in (TOKEN, SK, "hunter2", "k-123"):
                assert secret not in data, (sid, name, data)
            assert '"redacted":' in data

    def test_shapes_of_normalised_values(self, tmp_path: Path) -> None:
        """Values become JSON data with their names kept: fields, sorted sets, decoded bytes."""
        processor = CodexProcessor(tmp_path, "p", redact=False)
        processor(
            None,
            "info",
            {
                "event": "m",
                "login": Login("ann", "pw"),
                "ns": types.SimpleNamespace(a=1),
                "pair": Pair("svc", "k"),
                "nums": {3, 1, 2},
                "raw": b"caf\xc3\xa9 \xff",
                "where": pathlib.Path("/a/b"),
                "keys": {1: "one", None: "none", 2.5: "x"},
            },
        )
        (rec,) = read_lines(tmp_path / "p.ndjson")
        assert rec["login"] == {"user": "ann", "password": "pw"}
        assert rec["ns"] == {"a": 1}
        assert rec["pair"] == {"name": "svc", "api_key": "k"}
        assert rec["nums"] == [1, 2, 3]
        assert rec["raw"] == "café \\xff"
        assert rec["where"] == "/a/b"
        assert rec["keys"] == {"1": "one", "null": "none", "2.5": "x"}

    def test_kind_role_and_logger_name_are_redacted(self, tmp_path: Path) -> None:
        """A credential in the logger name, kind or role is redacted like any text."""
        handler = CodexHandler(tmp_path, "h")
        logger = logging.getLogger("https://user:pa55word@db.example")
        logger.addHandler(handler)
        logger.warning("m", extra={"role": f"tool {TOKEN}", "kind": f"message {SK}"})
        data = (tmp_path / "h.ndjson").read_text()
        assert "pa55word" not in data
        assert TOKEN not in data
        assert SK not in data

    def test_secret_field_names_are_redacted_every_time(self, tmp_path: Path) -> None:
        """A field name holding a secret shape is redacted and counted in every record, not cached."""
        processor = CodexProcessor(tmp_path, "p")
        for _ in range(3):
            processor(None, "info", {"event": "m", TOKEN: 1, "plain": 2})
        records = read_lines(tmp_path / "p.ndjson")
        assert [(r["[REDACTED]"], r["plain"], r["redacted"]) for r in records] == [(1, 2, 1)] * 3

    def test_unhashable_kind_and_role_are_written(self, tmp_path: Path) -> None:
        """A kind or role that is a list is written as text, never dropped (a kind as extra.kind)."""
        processor = CodexProcessor(tmp_path, "p")
        processor(None, "info", {"event": "m", "kind": ["a"], "role": {"r": 1}})
        (rec,) = read_lines(tmp_path / "p.ndjson")
        assert (rec["kind"], rec["extra.kind"], rec["role"]) == ("message", "['a']", "{'r': 1}")
        assert processor.dropped == 0

    def test_redact_false_writes_values_as_given(self, tmp_path: Path) -> None:
        """With redact=False the normalised values keep every secret."""
        CodexProcessor(tmp_path, "p", redact=False)(
            None, "info", {"event": "m", "s": {TOKEN}, "login": Login("a", "hunter2")}
        )
        (rec,) = read_lines(tmp_path / "p.ndjson")
        assert (rec["s"], rec["login"]["password"]) == ([TOKEN], "hunter2")


#: Records the three write paths must write alike: text that is clean, secret
#: by shape or by name, fields named like core fields or by secrets, values
#: that are not text, odd kinds, roles and logger names.
SAME_RECORDS: list[dict[str, Any]] = [
    {"message": "plain", "fields": {"step": 1}},
    {"message": f"token {TOKEN}", "fields": {"note": f"key {SK}", "n": 2.5, "ok": True}},
    {"message": "m", "fields": {"password": "hunter2", "api_key": 7, "nothing": None}},
    {"message": "m", "fields": {"ts": "mine", "pid": "theirs", "redacted": "x"}},
    {"message": "m", "fields": {TOKEN: 1, "nested": {"token": "t", "list": [SK, 1]}}},
    {"message": "m", "fields": dict(NOT_STRINGS)},
    {"message": "m", "kind": "start", "role": "tool", "fields": {}},
    {"message": "m", "kind": f"message {SK}", "role": f"tool {TOKEN}", "fields": {}},
    {"message": "m", "kind": 3, "role": ["r"], "fields": {"step": 2}},
    {"message": "m", "logger": "https://user:pa55word@db.example", "fields": {"a": "b"}},
    {"message": "m", "logger": "svc.worker", "session_id": "named", "fields": {}},
]


class TestOneRecordWhateverThePath:
    @pytest.mark.parametrize("redact", [True, False])
    def test_handler_processor_and_sink_write_the_same_lines(
        self, tmp_path: Path, redact: bool
    ) -> None:
        """CodexHandler, CodexProcessor and Sink.write each write every record alike, twice over."""
        folders = {path: tmp_path / path for path in ("handler", "processor", "sink")}
        handler = CodexHandler(folders["handler"], "s", redact=redact)
        processor = CodexProcessor(folders["processor"], "s", redact=redact)
        sink = Sink(str(folders["sink"]), "s", "never", Redactor() if redact else None)
        for case in SAME_RECORDS * 2:  # the second round runs on warm caches
            name = case.get("logger", "same")
            logger = logging.getLogger(name)
            logger.handlers[:] = [handler]
            logger.propagate = False
            logger.setLevel(logging.INFO)
            marks = {key: case[key] for key in ("kind", "role", "session_id") if key in case}
            logger.warning(case["message"], extra={**case["fields"], **marks})
            structlog_logger = types.SimpleNamespace(name=name)
            event = {"event": case["message"], "level": "warning", **case["fields"], **marks}
            processor(structlog_logger, "warning", event)
            sink.write(
                case["message"],
                ts=1.0,
                level="WARNING",
                pid=1,
                session=case.get("session_id"),
                kind=case.get("kind"),
                logger=name,
                role=case.get("role"),
                extra=case["fields"].items(),
            )
        for sid in ("s", "named"):
            written = {
                path: [
                    {k: v for k, v in rec.items() if k not in ("ts", "pid")}
                    for rec in read_lines(folder / f"{sid}.ndjson")
                ]
                for path, folder in folders.items()
            }
            assert written["handler"] == written["sink"]
            assert written["processor"] == written["sink"]
        assert len(written["sink"]) == 2
        assert handler.dropped == processor.dropped == sink.dropped == 0


class TestFailuresReportedOnce:
    def test_invalid_env_session_id_is_one_line_for_200_records(self) -> None:
        """An invalid CODEX_SESSION_ID gives one stderr line and a count, not 200 tracebacks."""
        code = (
            "import logging, sys\n"
            "from codex_logging import CodexHandler\n"
            "h = CodexHandler()\n"
            "logging.getLogger().addHandler(h)\n"
            "for i in range(200): logging.getLogger('app').warning('r%d', i)\n"
            "print(h.dropped)\n"
        )
        env = {**os.environ, "CODEX_SESSION_ID": "../escape"}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0
        assert done.stdout == "200\n"
        (line,) = done.stderr.splitlines()
        assert line.startswith("codex_logging: dropped a record for ")
        assert "invalid session id '../escape'" in line
        assert "set CODEX_SESSION_ID" in line
        assert not Path(".codex").exists()

    def test_each_cause_reported_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two causes are two lines, however many records fail for each."""
        processor = CodexProcessor(tmp_path, "p")
        for _ in range(5):
            processor(None, "info", {"event": "x", "session_id": "a/b"})
            processor(None, "info", {"event": "x", "session_id": "c/d"})
        lines = capsys.readouterr().err.splitlines()
        assert [("'a/b'" in line, "'c/d'" in line) for line in lines] == [
            (True, False),
            (False, True),
        ]
        assert processor.dropped == 10

    def test_raise_exceptions_false_only_counts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With logging.raiseExceptions off (production), failures are counted silently."""
        monkeypatch.setattr(logging, "raiseExceptions", False)
        handler = CodexHandler(tmp_path)
        handler.handle(logging.makeLogRecord({"msg": "x", "session_id": "../x"}))
        assert (capsys.readouterr().err, handler.dropped) == ("", 1)


class TestTraceContext:
    def test_active_span_fields(self, tmp_path: Path) -> None:
        """Inside an active OpenTelemetry span, records carry trace_id, span_id and trace_flags."""
        from opentelemetry import trace

        context = trace.SpanContext(
            trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
        )
        processor = CodexProcessor(tmp_path, "t")
        with trace.use_span(trace.NonRecordingSpan(context)):
            processor(None, "info", {"event": "inside"})
        processor(None, "info", {"event": "outside"})
        inside, outside = read_lines(tmp_path / "t.ndjson")
        assert (inside["trace_id"], inside["span_id"], inside["trace_flags"]) == (
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "01",
        )
        assert "trace_id" not in outside

    def test_not_imported_costs_nothing(self, tmp_path: Path) -> None:
        """A program that never imports OpenTelemetry does not import it by logging."""
        code = (
            "import sys, logging\n"
            "from codex_logging import CodexHandler\n"
            f"logging.getLogger().addHandler(CodexHandler({str(tmp_path)!r}, 's'))\n"
            "logging.getLogger().warning('x')\n"
            "print('opentelemetry' in sys.modules)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert done.stdout == "False\n"


class TestScopeFollowsTheSink:
    def test_scope_writes_where_the_handler_writes(self) -> None:
        """start/end land in the handler's folder with its redact_keys, not in .codex/."""
        handler = CodexHandler(sessions_dir="logs/sessions", redact_keys=["customer"])
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        with session_scope("s1", meta={"customer": "ACME"}):
            logging.getLogger("app").info("inside")
        records = read_lines(Path("logs/sessions/s1.ndjson"))
        assert [r["kind"] for r in records] == ["start", "message", "end"]
        assert records[0]["customer"] == "[REDACTED]"
        assert not Path(".codex").exists()

    def test_scope_writes_where_structlog_writes(self) -> None:
        """With only configure_structlog, start/end land in its folder."""
        configure_structlog(sessions_dir="st")
        with session_scope("s2"):
            structlog.get_logger().info("inside")
        assert [r["kind"] for r in read_lines(Path("st/s2.ndjson"))] == ["start", "message", "end"]
        assert not Path(".codex").exists()
