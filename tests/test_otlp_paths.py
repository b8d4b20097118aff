"""OTLP export failures: an output file that cannot be written, 5xx, timeouts, bad settings, bad state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_logging import DatabaseError, sync_to_otlp
from codex_logging._errors import OtlpConfigError, OtlpExportError
from codex_logging._otlp import transport
from tests.test_otlp import LINES, STATE_FILE, Receiver, write_session


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture(name="waits")
def _waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The exporter's pauses between tries, recorded instead of slept."""
    found: list[float] = []
    monkeypatch.setattr(transport, "sleep", lambda seconds, _stop: found.append(seconds))
    return found


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    found = tmp_path / "sessions"
    write_session(found, "s1", LINES)
    return found


class TestOutputFile:
    def test_a_folder_in_the_way_is_an_export_error(self, folder: Path, tmp_path: Path) -> None:
        out = tmp_path / "logs.jsonl"
        out.mkdir()
        with pytest.raises(OtlpExportError, match=f"cannot write the OTLP/JSON file {out}: "):
            sync_to_otlp(sessions_dir=folder, output=out)
        assert sync_to_otlp(sessions_dir=folder, output=tmp_path / "ok.jsonl").rows_inserted == 5

    @pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
    def test_a_full_device_is_an_export_error(self, folder: Path) -> None:
        with pytest.raises(OtlpExportError, match="No space left on device"):
            sync_to_otlp(sessions_dir=folder, output="/dev/full")


class TestEndpointAnswers:
    def test_a_500_is_not_tried_again(
        self, folder: Path, receiver: Receiver, waits: list[float]
    ) -> None:
        """A 5xx outside 502-504 stops the export; a body that is not a Status adds no text."""
        receiver.faults = [("status", 500, {}, b"\xff\x00 not a protobuf")]
        with pytest.raises(OtlpExportError) as caught:
            sync_to_otlp(receiver.url, folder)
        assert str(caught.value) == f"the OTLP endpoint {receiver.url} answered HTTP 500"
        assert waits == []
        assert sync_to_otlp(receiver.url, folder).rows_inserted == 5  # the watermark stayed

    def test_an_endpoint_that_never_answers_times_out(
        self, folder: Path, receiver: Receiver, waits: list[float], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "150")
        receiver.faults = [("hold",)] * transport.ATTEMPTS
        try:
            with pytest.raises(OtlpExportError) as caught:
                sync_to_otlp(receiver.url, folder)
        finally:
            receiver.release.set()
        assert str(caught.value).endswith(
            f"after {transport.ATTEMPTS} tries: no answer within 0.15 s"
        )
        assert len(waits) == transport.ATTEMPTS - 1

    def test_a_redirect_is_not_followed(
        self, folder: Path, receiver: Receiver, waits: list[float]
    ) -> None:
        """A 302 is an error naming where it points: urllib would resend it as a GET, no logs in it."""
        where = "http://127.0.0.1:9/elsewhere"
        receiver.faults = [("status", 302, {"Location": where}, b"")]
        with pytest.raises(OtlpExportError) as caught:
            sync_to_otlp(receiver.url, folder)
        assert str(caught.value) == (
            f"the OTLP endpoint {receiver.url} answered HTTP 302:"
            f" a redirect to {where}, not followed (set the endpoint to it)"
        )
        assert waits == []
        assert sync_to_otlp(receiver.url, folder).rows_inserted == 5  # the watermark stayed

    def test_user_info_is_basic_authentication(self, folder: Path, receiver: Receiver) -> None:
        """http://user:password@host/: the host is connected to, the pair sent as Basic auth."""
        url = receiver.url.replace("http://", "http://agent:pa%40ss@")
        assert sync_to_otlp(url, folder).rows_inserted == 5
        assert receiver.headers[0]["Authorization"] == "Basic YWdlbnQ6cGFAc3M="  # agent:pa@ss


class TestSettings:
    @pytest.mark.parametrize(
        ("endpoint", "env", "match"),
        [
            (
                "http://127.0.0.1:9/v1/logs",
                {"OTEL_EXPORTER_OTLP_HEADERS": "auth=a%0Ab"},
                "OTEL_EXPORTER_OTLP_HEADERS: the value of 'auth' holds a line break",
            ),
            (
                "http://127.0.0.1:9/v1/logs",
                {"OTEL_EXPORTER_OTLP_LOGS_HEADERS": "auth=Bearer%20s%C3%A9cret%E2%82%AC"},
                (
                    "^OTEL_EXPORTER_OTLP_LOGS_HEADERS: the value of 'auth' is not Latin-1 text,"
                    " which HTTP cannot send$"
                ),
            ),
            (
                "http://127.0.0.1:9/v1/logs",
                {"OTEL_EXPORTER_OTLP_HEADERS": "auth=%ff"},
                "the value of 'auth' is not Latin-1 text",
            ),
            (
                "http://127.0.0.1:9/v1/logs",
                {"OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "1e-9"},
                "^OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: expected milliseconds",
            ),
            ("http://127.0.0.1:99999/v1/logs", {}, "http"),
            ("http://127.0.0.1:9/v1/lögs", {}, "percent-encode it"),
            ("http://127.0.0.1:9/v1 logs", {}, "percent-encode it"),
        ],
    )
    def test_refused_before_anything_is_sent(
        self,
        folder: Path,
        monkeypatch: pytest.MonkeyPatch,
        endpoint: str,
        env: dict[str, str],
        match: str,
    ) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(OtlpConfigError, match=match):
            sync_to_otlp(endpoint, folder)


class TestState:
    def test_a_watermark_file_that_is_not_a_database(
        self, folder: Path, tmp_path: Path, receiver: Receiver
    ) -> None:
        (tmp_path / STATE_FILE).write_bytes(b"this is not SQLite at all\n" * 100)
        with pytest.raises(DatabaseError, match="watermarks"):
            sync_to_otlp(receiver.url, folder)
        assert receiver.requests == []
