"""The OTLP export against a real OTLP/HTTP receiver on 127.0.0.1.

The receiver decodes every request with the OpenTelemetry project's own
messages (``opentelemetry-proto``) and each record is compared field by field
with its NDJSON line. Faults come from the receiver (503 with Retry-After, a
dropped connection, 400, partial success) and from kill -9 of the exporter.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from codex_logging import (
    CodexHandler,
    OtlpConfigError,
    OtlpExportError,
    UnknownSessionError,
    sync_to_otlp,
)
from codex_logging._otlp import transport
from codex_logging._otlp.mapping import severity, time_unix_nano
from codex_logging._otlp.sync import STATE_FILE
from codex_logging._otlp.transport import _status_type

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

CLI = [
    sys.executable,
    "-c",
    "import sys; from codex_logging._cli.main import main; sys.exit(main())",
]


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The exporter's pauses between tries, recorded instead of slept."""
    found: list[float] = []
    monkeypatch.setattr(transport, "sleep", lambda seconds, _stop: found.append(seconds))
    return found


class Receiver:
    """An OTLP/HTTP logs receiver: decodes, keeps every request, injects faults."""

    def __init__(self) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        #: One per coming request: ("ok",), ("status", code, headers, body),
        #: ("drop",), ("partial", rejected, message), ("hold",).
        self.faults: list[tuple[Any, ...]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                fault = receiver.faults.pop(0) if receiver.faults else ("ok",)
                if fault[0] == "status":
                    self.send_response(fault[1])
                    for key, value in fault[2].items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(fault[3])))
                    self.end_headers()
                    self.wfile.write(fault[3])
                    return
                receiver.requests.append(request)
                receiver.headers.append(dict(self.headers))
                receiver.paths.append(self.path)
                if fault[0] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault[0] == "hold":
                    receiver.held.set()
                    receiver.release.wait(30)
                    return
                answer = ExportLogsServiceResponse()
                if fault[0] == "partial":
                    answer.partial_success.rejected_log_records = fault[1]
                    answer.partial_success.error_message = fault[2]
                data = answer.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/logs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def records(self) -> list[tuple[Any, Any, Any, Any]]:
        """Every record received: (resource, scope, record, its attributes as a dict)."""
        return [
            (logs.resource, scope.scope, record, attrs(record.attributes))
            for request in self.requests
            for logs in request.resource_logs
            for scope in logs.scope_logs
            for record in scope.log_records
        ]

    def uids(self) -> list[str]:
        return [a["log.record.uid"] for _res, _scope, _rec, a in self.records()]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def value(any_value: AnyValue) -> Any:
    """An OTLP AnyValue back into JSON data."""
    which = any_value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, which)


def attrs(pairs: Any) -> dict[str, Any]:
    found = {}
    for pair in pairs:
        assert pair.key not in found, pair.key
        found[pair.key] = value(pair.value)
    return found


LINES = [
    {
        "ts": "1765000000.123456789",
        "session_id": "s1",
        "kind": "start",
        "level": "INFO",
        "logger": "codex_logging",
        "message": "session start",
        "pid": 41,
    },
    {
        "ts": "1765000001.5",
        "session_id": "s1",
        "kind": "message",
        "level": "WARNING",
        "logger": "app.db",
        "message": "slow",
        "pid": 41,
        "role": "tool",
        "n": 3,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "tags": ["a", 2, {"b": False}],
        "nested": {"x": [1.5]},
        "big": 123456789012345678901234567890,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "trace_flags": "01",
    },
    {
        "ts": "1765000002",
        "session_id": "s1",
        "kind": "message",
        "level": "SUCCESS",
        "levelno": 25,
        "logger": "app",
        "message": "done",
        "pid": 42,
    },
    {
        "ts": "1765000003.000000001",
        "session_id": "s1",
        "kind": "message",
        "level": "ERROR",
        "logger": "app",
        "message": "boom",
        "pid": 42,
        "exc": 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "ValueError: bad value\n",
    },
    {
        "ts": "1765000004.25",
        "session_id": "s1",
        "kind": "end",
        "level": "INFO",
        "logger": "codex_logging",
        "message": "session end",
        "pid": 41,
        "status": "ok",
    },
]
LEVELS = {"INFO": 9, "WARNING": 13, "ERROR": 17}


def write_session(folder: Path, sid: str, lines: list[dict[str, Any]], extra: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sid}.ndjson"
    # ts written as the digits given (a float would lose some)
    text = "".join(
        re.sub(r'^\{"ts": "([^"]+)"', r'{"ts": \1', json.dumps({**line, "session_id": sid})) + "\n"
        for line in lines
    )
    with path.open("ab") as f:
        f.write(text.encode() + extra)
    return path


def test_round_trip_field_by_field(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every record arrives once and matches its NDJSON line field by field; rerun sends none."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agent-runner")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=a%2Cb")
    folder = tmp_path / ".codex" / "sessions"
    path = write_session(folder, "s1", LINES, extra=b"{not json\n")
    report = sync_to_otlp(receiver.url, folder)
    assert (report.rows_inserted, report.lines_quarantined, report.warnings) == (5, 1, [])
    source = (folder / ".codex-source-id").read_text().strip()
    raw_lines = path.read_text().splitlines()[:5]
    got = {a["codex.seq"]: (res, scope, rec, a) for res, scope, rec, a in receiver.records()}
    assert sorted(got) == [1, 2, 3, 4, 5]
    for seq, raw in enumerate(raw_lines, 1):
        line = json.loads(raw, parse_float=Decimal)
        resource, scope, record, attributes = got[seq]
        res = attrs(resource.attributes)
        assert res["service.name"] == "agent-runner"
        assert res["deployment.environment"] == "ci"
        assert res["team"] == "a,b"
        assert res["host.name"] == socket.gethostname()
        assert res["codex.source_id"] == source
        assert res["process.pid"] == line["pid"]
        assert scope.name == line["logger"]
        assert record.time_unix_nano == int(line["ts"] * 1_000_000_000)
        assert record.observed_time_unix_nano > 0
        assert record.severity_text == line["level"]
        assert record.body.string_value == line["message"]
        assert attributes["session.id"] == "s1"
        assert attributes["log.record.uid"] == f"{source}/s1/{seq}"
        assert record.event_name == {"start": "session.start", "end": "session.end"}.get(
            line["kind"], ""
        )
        rest = {
            k: v
            for k, v in attributes.items()
            if not k.startswith(("session.", "log.", "codex.", "exception."))
        }
        expected = {
            k: (float(v) if isinstance(v, Decimal) else v)
            for k, v in line.items()
            if k
            not in {
                "ts",
                "level",
                "message",
                "logger",
                "session_id",
                "trace_id",
                "span_id",
                "trace_flags",
                "exc",
            }
        }
        if "big" in expected:
            expected["big"] = str(expected["big"])  # past int64: its digits as text
        if "nested" in expected:
            expected["nested"] = {"x": [1.5]}
            expected["tags"] = ["a", 2, {"b": False}]
        assert rest == expected
    # the exact nanoseconds, from the digits, not a float times 1e9
    assert got[1][2].time_unix_nano == 1765000000123456789
    assert got[4][2].time_unix_nano == 1765000003000000001
    assert [got[s][2].severity_number for s in (1, 2, 3, 4)] == [9, 13, 11, 17]
    traced = got[2][2]
    assert traced.trace_id.hex() == LINES[1]["trace_id"]
    assert traced.span_id.hex() == LINES[1]["span_id"]
    assert traced.flags == 1
    assert got[1][2].trace_id == b""
    boom = got[4][3]
    assert boom["exception.type"] == "ValueError"
    assert boom["exception.message"] == "bad value"
    assert boom["exception.stacktrace"] == LINES[3]["exc"]
    # the watermark is the export's own: a rerun sends nothing, new lines only
    assert sync_to_otlp(receiver.url, folder).rows_inserted == 0
    write_session(folder, "s1", LINES[1:2])
    again = sync_to_otlp(receiver.url, folder)
    assert again.rows_inserted == 1
    assert receiver.uids()[-1] == f"{source}/s1/7"
    assert os.stat(tmp_path / ".codex" / STATE_FILE).st_mode & 0o777 == 0o600


def test_a_second_endpoint_has_its_own_watermark(tmp_path: Path, receiver: Receiver) -> None:
    """Each destination is acknowledged on its own: another endpoint gets every line."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    other = Receiver()
    try:
        assert sync_to_otlp(receiver.url, folder).rows_inserted == 5
        assert sync_to_otlp(other.url, folder).rows_inserted == 5
        assert sync_to_otlp(other.url, folder).rows_inserted == 0
        assert sorted(other.uids()) == sorted(receiver.uids())
    finally:
        other.close()


def test_environment_headers_gzip_and_base_endpoint(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/logs; headers are sent; gzip when asked."""
    base = receiver.url.removesuffix("/v1/logs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20sekrit,x-team=a")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    assert sync_to_otlp(sessions_dir=folder).rows_inserted == 5
    assert receiver.paths == ["/v1/logs"]
    sent = {k.lower(): v for k, v in receiver.headers[0].items()}
    assert sent["authorization"] == "Bearer sekrit"
    assert sent["x-team"] == "a"
    assert sent["content-encoding"] == "gzip"
    # the logs endpoint wins, used as it is
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", base + "/custom")
    write_session(folder, "s2", LINES)
    sync_to_otlp(sessions_dir=folder)
    assert receiver.paths[-1] == "/custom"


def test_a_lone_surrogate_goes_as_its_escape(tmp_path: Path, receiver: Receiver) -> None:
    """A file name os.fsdecode made (the library writes \\udce9), in a value or a key.

    protobuf strings are UTF-8: the export failed on it, every run, and no file
    after it was sent.
    """
    folder = tmp_path / "sessions"
    handler = CodexHandler(folder, session_id="a-lone")
    log = logging.getLogger("otlp.lone")
    log.addHandler(handler)
    log.propagate = False
    log.warning("opened %s", os.fsdecode(b"caf\xe9.txt"))
    handler.close()
    (folder / "b-other.ndjson").write_text(
        '{"ts":1796600005.5,"message":"k","k\\ud83d":"x","pair":"\\ud83d\\ude00"}\n'
    )
    report = sync_to_otlp(receiver.url, folder)
    assert report.rows_inserted == 2
    got = {a["session.id"]: (record.body.string_value, a) for _, _, record, a in receiver.records()}
    assert got["a-lone"][0] == "opened caf\\udce9.txt"
    assert got["b-other"][1]["k\\ud83d"] == "x"
    assert got["b-other"][1]["pair"] == "\U0001f600"  # a pair is a character: as it is


def test_503_with_retry_after_then_success(
    tmp_path: Path, receiver: Receiver, waits: list[float]
) -> None:
    """A 503 and a 429 are tried again after their Retry-After; nothing lost, nothing doubled."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    receiver.faults = [("status", 503, {"Retry-After": "2"}, b""), ("status", 429, {}, b"")]
    assert sync_to_otlp(receiver.url, folder).rows_inserted == 5
    assert waits[0] == 2
    assert 0.8 <= waits[1] <= 1.2  # no Retry-After: the second backoff (1 s), with jitter
    assert len(receiver.uids()) == len(set(receiver.uids())) == 5


def test_dropped_connection_is_tried_again(
    tmp_path: Path, receiver: Receiver, waits: list[float]
) -> None:
    """A connection closed without an answer: sent again; at most that batch is doubled."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    receiver.faults = [("drop",)]
    assert sync_to_otlp(receiver.url, folder).rows_inserted == 5
    assert len(waits) == 1
    assert sorted(set(receiver.uids())) == sorted(receiver.uids()[:5])
    assert len(receiver.uids()) == 10  # the batch in flight, twice: at least once


def test_400_is_reported_not_retried_and_the_watermark_stays(
    tmp_path: Path, receiver: Receiver, waits: list[float]
) -> None:
    """A 400 stops that session's file with the endpoint's message; other files go on."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    write_session(folder, "s2", LINES)
    status = _status_type()(code=3, message="bad\nrecord").SerializeToString()
    receiver.faults = [("status", 400, {}, status)]
    report = sync_to_otlp(receiver.url, folder)
    assert waits == []
    assert report.rows_inserted == 5
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("s1: stopped, the OTLP endpoint")
    assert "HTTP 400: bad record" in report.warnings[0]
    assert {u.split("/")[1] for u in receiver.uids()} == {"s2"}
    assert sync_to_otlp(receiver.url, folder).rows_inserted == 5  # s1, from where it stood


def test_partial_success_is_reported_and_acknowledged(tmp_path: Path, receiver: Receiver) -> None:
    """A 200 with rejected records: said in the report; the watermark moves."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    receiver.faults = [("partial", 2, "two too old")]
    report = sync_to_otlp(receiver.url, folder)
    assert report.warnings == ["s1: the OTLP endpoint rejected 2 of 5 records: two too old"]
    assert sync_to_otlp(receiver.url, folder).rows_inserted == 0


def test_unreachable_endpoint_raises_and_keeps_the_watermark(
    tmp_path: Path, receiver: Receiver, waits: list[float]
) -> None:
    """Retries are bounded: then OtlpExportError, the URL's password hidden; nothing marked sent."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OtlpExportError) as caught:
        sync_to_otlp(f"http://user:hunter22@127.0.0.1:{port}/v1/logs", folder)
    assert "hunter22" not in str(caught.value)
    assert len(waits) == transport.ATTEMPTS - 1
    assert waits[-1] <= transport.MAX_WAIT * 1.2
    assert sync_to_otlp(receiver.url, folder).rows_inserted == 5
    # a 401 is the configuration's fault: the export stops, whatever the file
    write_session(folder, "s2", LINES)
    receiver.faults = [("status", 401, {}, b"")]
    with pytest.raises(OtlpExportError, match="HTTP 401"):
        sync_to_otlp(receiver.url, folder)


def test_bad_settings_are_named_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    with pytest.raises(OtlpConfigError, match=r"ftp://u:\*\*\*@h"):
        sync_to_otlp("ftp://u:pw@h/x", folder)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    with pytest.raises(OtlpConfigError, match="milliseconds"):
        sync_to_otlp("http://127.0.0.1:9/v1/logs", folder)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
    with pytest.raises(OtlpConfigError, match="gzip or none"):
        sync_to_otlp("http://127.0.0.1:9/v1/logs", folder)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "novalue")
    with pytest.raises(OtlpConfigError, match="key=value"):
        sync_to_otlp("http://127.0.0.1:9/v1/logs", folder)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS")
    with pytest.raises(UnknownSessionError):
        sync_to_otlp("http://127.0.0.1:9/v1/logs", folder, session_id="nope")


def test_mapping_rules() -> None:
    assert time_unix_nano(Decimal("1765000000.1234567891")) == 1765000000123456789
    assert time_unix_nano(Decimal("15e8")) == 1_500_000_000_000_000_000
    assert time_unix_nano(Decimal(-1)) == 0
    assert time_unix_nano(Decimal("NaN")) == 0
    assert time_unix_nano("1765000000") == 0
    assert time_unix_nano(True) == 0
    assert [severity(name, None) for name in ("DEBUG", "info", "WARN", "CRITICAL", "FATAL")] == [
        5,
        9,
        13,
        21,
        21,
    ]
    assert severity("TRACE", 5) == 3
    assert severity("Level 15", 15) == 7
    assert severity("X", 99) == 24
    assert severity("X", None) == 0
    assert severity("X", True) == 0


def test_cli_dry_run_json_sends_nothing(tmp_path: Path, receiver: Receiver) -> None:
    """--dry-run --json prints OTLP/JSON LogsData lines; no request, no watermark file."""
    folder = tmp_path / ".codex" / "sessions"
    write_session(folder, "s1", LINES)
    done = subprocess.run(
        [
            *CLI,
            "export",
            "otlp",
            "--endpoint",
            receiver.url,
            "--sessions-dir",
            str(folder),
            "--dry-run",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert receiver.requests == []
    assert not (tmp_path / ".codex" / STATE_FILE).exists()
    data = [json.loads(line) for line in done.stdout.splitlines()]
    records = [
        r
        for d in data
        for res in d["resourceLogs"]
        for sc in res["scopeLogs"]
        for r in sc["logRecords"]
    ]
    assert len(records) == 5
    first = next(r for r in records if r.get("eventName") == "session.start")
    assert first["timeUnixNano"] == "1765000000123456789"
    traced = next(r for r in records if "traceId" in r)
    assert traced["traceId"] == LINES[1]["trace_id"]
    assert traced["spanId"] == LINES[1]["span_id"]
    assert traced["severityNumber"] == 13


def test_cli_sends_and_reports(tmp_path: Path, receiver: Receiver) -> None:
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    done = subprocess.run(
        [*CLI, "export", "otlp", "--endpoint", receiver.url, "--sessions-dir", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == "exported 1 file: sent 5 records, 0 lines quarantined\n"
    done = subprocess.run(
        [
            *CLI,
            "export",
            "otlp",
            "--endpoint",
            receiver.url,
            "--sessions-dir",
            str(folder),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout)["records_sent"] == 0


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--endpoint", "ftp://u:topsecret@h/"], {}, "http:// or https://"),
        (["--watch", "0"], {}, "number of seconds"),
        (["--session-id", "../x"], {}, "session"),
        ([], {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=topsecret,broken"}, "key=value"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path, argv: list[str], env: dict[str, str], needle: str
) -> None:
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    done = subprocess.run(
        [*CLI, "export", "otlp", "--sessions-dir", str(folder), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert needle in done.stderr
    assert "topsecret" not in done.stderr


def test_cli_unreachable_endpoint_hides_the_token(tmp_path: Path) -> None:
    """The endpoint down: one line, exit 2, neither header value nor password printed."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20topsecret"}
    code = (
        "import sys; from codex_logging._otlp import transport;"
        " transport.sleep = lambda s, stop: None;"
        " from codex_logging._cli.main import main; sys.exit(main())"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "export",
            "otlp",
            "--sessions-dir",
            str(folder),
            "--endpoint",
            f"http://me:topsecret@127.0.0.1:{port}/v1/logs",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "cannot send" in done.stderr
    assert "topsecret" not in done.stderr


def test_kill_9_mid_batch_then_rerun_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    """kill -9 while a request is in flight; rerun: every line arrives, repeats only that batch."""
    folder = tmp_path / "sessions"
    lines = [
        {
            "ts": f"{1765000000 + i / 1000}",
            "kind": "message",
            "level": "INFO",
            "logger": "app",
            "message": f"line {i}",
            "pid": 7,
        }
        for i in range(12_000)
    ]
    write_session(folder, "big", lines)
    # the third request is held unanswered: the engine's first batch (5000
    # lines, three requests) is in flight when the exporter is killed
    receiver.faults = [("ok",), ("ok",), ("hold",)]
    argv = [*CLI, "export", "otlp", "--endpoint", receiver.url, "--sessions-dir", str(folder)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            assert receiver.held.wait(60)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    receiver.release.set()
    before = len(receiver.uids())
    assert 0 < before <= 5000
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    assert "sent 12,000 records" in done.stdout
    uids = receiver.uids()
    seqs = sorted({int(u.rsplit("/", 1)[1]) for u in uids})
    assert seqs == list(range(1, 12_001))
    assert len(uids) - 12_000 == before  # only the batch in flight went twice
    # and a third run sends nothing
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert "sent 0 records" in again.stdout


def test_docs_example(tmp_path: Path, receiver: Receiver) -> None:
    """The OTLP export example of docs/scale-out.md prints what the page says."""
    page = (Path(__file__).parent.parent / "docs" / "scale-out.md").read_text()
    section = page.split("\n## OTLP export\n", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]
    assert "`3 records sent []`" in section
    (tmp_path / "example.py").write_text(
        "import logging\n"
        "from codex_logging import CodexHandler, session_scope\n"
        "logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])\n"
        "with session_scope('ci-build-42'):\n"
        "    logging.getLogger('build').info('compiled %d files', 12)\n"
        + code.replace("http://localhost:4318/v1/logs", receiver.url)
    )
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout == "3 records sent []\n"
    assert len(receiver.uids()) == 3


def test_otlp_json_file_at_least_once(tmp_path: Path) -> None:
    """--format otlp-json: JSON lines of LogsData, parsed by the proto definitions; its own watermark."""
    from google.protobuf import json_format
    from opentelemetry.proto.logs.v1.logs_pb2 import LogsData

    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    out = tmp_path / "out" / "logs.jsonl"
    out.parent.mkdir()
    report = sync_to_otlp(sessions_dir=folder, output=out)
    assert report.rows_inserted == 5
    assert sync_to_otlp(sessions_dir=folder, output=out).rows_inserted == 0
    write_session(folder, "s1", LINES[:1])
    argv = [
        *CLI,
        "export",
        "otlp",
        "--sessions-dir",
        str(folder),
        "--format",
        "otlp-json",
        "--output",
        str(out),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    assert "sent 1 records" in done.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    seqs = []
    for line in out.read_text().splitlines():
        tree = json.loads(line)
        for res in tree["resourceLogs"]:
            for scope in res["scopeLogs"]:
                for record in scope["logRecords"]:
                    seqs.append(
                        int(
                            next(
                                a["value"]["intValue"]
                                for a in record["attributes"]
                                if a["key"] == "codex.seq"
                            )
                        )
                    )
                    if "traceId" in record:
                        assert record["traceId"] == LINES[1]["trace_id"]
                        # OTLP/JSON ids are hex; protobuf's JSON reader wants base64
                        record["traceId"] = base64.b64encode(
                            bytes.fromhex(record["traceId"])
                        ).decode()
                        record["spanId"] = base64.b64encode(
                            bytes.fromhex(record["spanId"])
                        ).decode()
        data = json_format.ParseDict(tree, LogsData())
        assert data.resource_logs
    assert sorted(seqs) == [1, 2, 3, 4, 5, 6]
    # an HTTP endpoint keeps its own watermark: everything still to send there
    assert sync_to_otlp("http://127.0.0.1:9/v1/logs", folder, dry_run=True).rows_inserted == 6


@pytest.mark.parametrize(
    "argv",
    [
        ["--format", "otlp-json"],
        ["--output", "x.jsonl"],
        ["--format", "otlp-json", "--output", "x", "--endpoint", "http://h/"],
    ],
)
def test_cli_file_options_go_together(tmp_path: Path, argv: list[str]) -> None:
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    done = subprocess.run(
        [*CLI, "export", "otlp", "--sessions-dir", str(folder), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1


def test_retry_after_forms() -> None:
    """Seconds or an HTTP date, capped; anything else: the backoff."""
    from email.utils import formatdate

    from codex_logging._otlp.transport import MAX_WAIT, _retry_after

    assert _retry_after("3") == 3
    assert _retry_after("9999") == MAX_WAIT
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    later = _retry_after(formatdate(time.time() + 5, usegmt=True))
    assert later is not None
    assert 3 < later <= 5
    assert _retry_after(formatdate(time.time() - 60, usegmt=True)) == 0


def test_cli_watch_sends_new_lines_and_outlives_a_down_endpoint(
    tmp_path: Path, receiver: Receiver
) -> None:
    """--watch: each round sends what is new; an endpoint refusing is said once, then resumed."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    argv = [
        *CLI,
        "export",
        "otlp",
        "--endpoint",
        receiver.url,
        "--sessions-dir",
        str(folder),
        "--watch",
        "0.1",
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 60
            while len(receiver.uids()) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            receiver.faults = [("status", 401, {}, b"")] * 3
            write_session(folder, "s1", LINES[:1])
            while len(receiver.uids()) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(receiver.uids()) == 6
    assert err.count("HTTP 401") == 1
    assert "export resumed" in err
    assert out.startswith("exported 1 file: sent 5 records")


def watch_then_ctrl_c(
    argv: list[str], until: Callable[[], bool], wait: float = 60
) -> tuple[int, str, str]:
    """Run ``argv --watch 0.1`` until ``until()`` holds, then Ctrl-C it; wait ``wait`` s for its end."""
    with subprocess.Popen(
        [*argv, "--watch", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            while not until() and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=wait)
    return proc.returncode, out, err


def test_cli_watch_outlives_an_endpoint_down_from_the_start(
    tmp_path: Path, receiver: Receiver
) -> None:
    """--watch started before its collector answers: said once, sent once it does."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    receiver.faults = [("status", 401, {}, b"")] * 2
    argv = [*CLI, "export", "otlp", "--endpoint", receiver.url, "--sessions-dir", str(folder)]
    returncode, out, err = watch_then_ctrl_c(argv, lambda: len(receiver.uids()) >= 5)
    assert returncode == 0, err
    assert len(receiver.uids()) == 5
    assert err.count("HTTP 401") == 1
    assert "export resumed" in err
    assert out == "exported 1 file: sent 5 records, 0 lines quarantined\n"


def test_cli_watch_ends_at_ctrl_c_while_an_endpoint_is_retried(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Ctrl-C during a round's tries and waits (about 15 s of them) ends --watch at once, exit 0;
    the batch's watermark is unmoved, so the next export sends it."""
    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    receiver.faults = [("status", 503, {}, b"")] * 10
    argv = [*CLI, "export", "otlp", "--endpoint", receiver.url, "--sessions-dir", str(folder)]
    # Ctrl-C once the first try was answered 503; without the interruption the
    # round goes on trying for 15 s.
    returncode, out, err = watch_then_ctrl_c(argv, lambda: len(receiver.faults) < 10, wait=8)
    assert (returncode, out) == (0, ""), err
    (line,) = err.splitlines()
    assert "HTTP 503" in line
    assert line.endswith("after 1 tries: HTTP 503 (interrupted: no further try)")
    assert len(receiver.faults) >= 8  # one or two tries, not six
    receiver.faults = []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("exported 1 file: sent 5 records")


def test_ts_not_first_and_long_integers_keep_their_digits() -> None:
    """Lines another tool wrote (ts anywhere, big integers) are read digit for digit."""
    from codex_logging._otlp.mapping import Resource, build_request

    rows = [
        ("s", 1, '{"message": "x", "ts": 1765000000.000000007, "n": 123456789012345678901}'),
        ("s", 2, '{"ts":1765000000.25,"n":12345678901234567890123,"f":0.5}'),
        ("s", 3, '["not", "an", "object"]'),
    ]
    request = build_request(Resource("src"), rows, observed=1)
    records = [r for res in request.resource_logs for sc in res.scope_logs for r in sc.log_records]
    assert [r.time_unix_nano for r in records] == [1765000000000000007, 1765000000250000000, 0]
    assert attrs(records[0].attributes)["n"] == "123456789012345678901"
    assert attrs(records[1].attributes)["n"] == "12345678901234567890123"
    assert attrs(records[1].attributes)["f"] == 0.5
    assert records[2].body.string_value == '["not", "an", "object"]'


def test_exception_forms_and_odd_trace_fields() -> None:
    """Structured exceptions, stack-only texts, and trace fields of another shape."""
    from codex_logging._otlp.mapping import Resource, build_request

    lines = [
        {
            "ts": 1,
            "exc": "Traceback...\nKeyError: 'k'\nStack (most recent call last):\n  f()\n",
            "exception": [{"exc_type": "KeyError", "exc_value": "'k'"}],
        },
        {"ts": 2, "exc": "Stack (most recent call last):\n  File x\n"},
        {"ts": 3, "exc": "Traceback (most recent call last):\n  File x\n    ^^^\n"},
        {"ts": 4, "exc": "pkg.Boom\n"},
        {"ts": 5, "trace_id": "xyz", "span_id": 7, "trace_flags": 3},
        {"ts": 6, "trace_flags": [1], "kind": ["odd"]},
    ]
    rows = [("s", i, json.dumps(line)) for i, line in enumerate(lines, 1)]
    request = build_request(Resource("src"), rows, observed=1)
    got = {
        attrs(r.attributes)["codex.seq"]: (r, attrs(r.attributes))
        for res in request.resource_logs
        for sc in res.scope_logs
        for r in sc.log_records
    }
    assert got[1][1]["exception.type"] == "KeyError"
    assert got[1][1]["exception.message"] == "'k'"
    assert "exception.type" not in got[2][1]
    assert "exception.stacktrace" in got[2][1]
    assert "exception.type" not in got[3][1]
    assert (got[4][1]["exception.type"], got[4][1].get("exception.message")) == ("pkg.Boom", None)
    record, found = got[5]
    assert (record.trace_id, record.span_id, record.flags) == (b"", b"", 3)
    assert (found["trace_id"], found["span_id"]) == ("xyz", 7)
    assert got[6][1]["trace_flags"] == [1]
    assert got[6][0].event_name == ""


def test_exception_type_and_message_are_the_raised_exceptions_whole() -> None:
    """A message of several lines, a chain, a note, a group, a scope's end: as Python says them."""
    import traceback

    from codex_logging._otlp.mapping import Resource, build_request

    def throw(error: BaseException) -> None:
        raise error

    def text(error: BaseException) -> str:
        try:
            throw(error)
        except BaseException as caught:
            return "".join(traceback.format_exception(caught)).rstrip("\n")
        return ""

    def chain() -> None:
        try:
            {}["inner"]  # the KeyError raised
        except KeyError as exc:
            raise RuntimeError("git failed:\nfatal: not a git repository") from exc

    def chained() -> str:
        try:
            chain()
        except RuntimeError as caught:
            return "".join(traceback.format_exception(caught)).rstrip("\n")
        return ""

    noted = ValueError("with a note")
    noted.add_note("see above")
    group = ExceptionGroup("two failed", [ValueError("v"), KeyError("k")])  # noqa: F821 - 3.11+
    lines = [
        {"ts": 1, "exc": text(ValueError("line1\nline2 has spaces"))},
        {"ts": 2, "exc": chained()},
        {"ts": 3, "exc": text(noted)},
        {"ts": 4, "exc": text(group)},
        {"ts": 5, "kind": "end", "exc": "x", "error_type": "RuntimeError", "error": "a\nb"},
        {
            "ts": 6,
            "exc": chained(),
            "exception": [{"exc_type": "RuntimeError", "exc_value": "v"}, {"exc_type": "KeyError"}],
        },
    ]
    rows = [("s", i, json.dumps(line)) for i, line in enumerate(lines, 1)]
    request = build_request(Resource("src"), rows, observed=1)
    got = {
        (a := attrs(r.attributes))["codex.seq"]: (
            a.get("exception.type"),
            a.get("exception.message"),
        )
        for res in request.resource_logs
        for sc in res.scope_logs
        for r in sc.log_records
    }
    assert got == {
        1: ("ValueError", "line1\nline2 has spaces"),
        2: ("RuntimeError", "git failed:\nfatal: not a git repository"),
        3: ("ValueError", "with a note\nsee above"),
        4: ("ExceptionGroup", "two failed (2 sub-exceptions)"),
        5: ("RuntimeError", "a\nb"),
        6: ("RuntimeError", "v"),
    }


def test_an_older_hooks_lines_as_the_mirrors_read_them() -> None:
    """An ISO ts is the time it names; "type": "session_start" is the session.start event."""
    from codex_logging._otlp.mapping import Resource, build_request

    lines = [
        {"ts": "2026-11-24T10:00:00.123456Z", "type": "session_start", "message": "m"},
        {"ts": "2026-11-24T11:00:00", "type": "session_end", "message": "m", "n": [1]},
        {"ts": "not a time", "type": "other", "message": "m"},
    ]
    rows = [("s", i, json.dumps(line)) for i, line in enumerate(lines, 1)]
    request = build_request(Resource("src"), rows, observed=1)
    got = [
        (r.time_unix_nano, r.event_name)
        for res in request.resource_logs
        for sc in res.scope_logs
        for r in sc.log_records
    ]
    assert got == [
        (1795514400123456000, "session.start"),
        (1795518000000000000, "session.end"),
        (0, ""),
    ]


def test_watermark_file_that_cannot_be_made_is_a_database_error(tmp_path: Path) -> None:
    """The folder beside the sessions is not writable (a file stands in the way): a named error."""
    from codex_logging import DatabaseError

    folder = tmp_path / "sessions"
    write_session(folder, "s1", LINES)
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(DatabaseError, match="watermarks"):
        sync_to_otlp("http://127.0.0.1:9/v1/logs", folder)


def test_an_interrupted_export_makes_no_further_try(tmp_path: Path, waits: list[float]) -> None:
    """cancel() (Ctrl-C in the engine) ends the retries of the batch in flight."""
    event = threading.Event()
    event.set()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = transport.settings(f"http://127.0.0.1:{port}/v1/logs")
    with pytest.raises(OtlpExportError, match=r"after 1 tries: .*interrupted"):
        transport.post(config, b"", event)
    assert waits == []
