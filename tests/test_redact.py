"""Redaction: canary secrets through every path never reach the file or the database."""

from __future__ import annotations

import logging
import logging.config
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from codex_logging import (
    CodexHandler,
    CodexProcessor,
    configure_structlog,
    session_scope,
    sync_to_sqlite,
)
from codex_logging._redact import CLEAN_CACHE_LENGTH, CLEAN_CACHE_SIZE, Redactor
from tests.conftest import db_connection, read_lines, session_file

# Each canary is unique so a grep of the raw bytes proves it absent.
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkxIn0.c2lnbmF0dXJlY2FuYXJ5"
SHAPES = {
    "bearer": ("Authorization: Bearer CANARYbearer0123456789", "CANARYbearer0123456789"),
    "basic": ("Basic Q0FOQVJZYmFzaWM6cGFzcw==", "Q0FOQVJZYmFzaWM6cGFzcw"),
    "jwt": (f"token {JWT} end", "c2lnbmF0dXJlY2FuYXJ5"),
    "openai": ("key sk-CANARYopenai0123456789abcdef", "CANARYopenai"),
    "github": ("ghp_CANARYgithub0123456789abcdefABCDEF", "CANARYgithub"),
    "github_pat": ("github_pat_CANARYpat_0123456789abcdef", "CANARYpat"),
    "aws": ("AKIACANARYAWS0123456", "AKIACANARYAWS0123456"),
    "slack": ("xoxb-CANARYslack-0123456789", "CANARYslack"),
    "pem": (
        "-----BEGIN RSA PRIVATE KEY-----\nCANARYpem0123\n-----END RSA PRIVATE KEY-----",
        "CANARYpem",
    ),
    "url": ("https://bob:CANARYurlpass@example.com/x", "CANARYurlpass"),
}
KEYS = ["password", "Passwd", "token", "API_KEY", "apikey", "Authorization", "cookie", "Set-Cookie", "private_key",
        "access_key", "client_secret", "github_token", "aws_secret", "db_password", "x-api-key", "secret"]  # fmt: skip
HARMLESS = {
    "key": "k1",
    "kind_of": "blue",
    "session_note": "ok",
    "monkey": "banana",
    "token_count": 5,
}


class TestRedactor:
    @pytest.mark.parametrize("name", sorted(SHAPES))
    def test_shapes_in_text(self, name: str) -> None:
        """Each known credential shape is replaced and counted."""
        text, canary = SHAPES[name]
        counter = [0]
        out = Redactor().text(f"before {text} after", counter)
        assert canary not in out
        assert "[REDACTED]" in out
        assert out.startswith("before ")
        assert counter == [1]

    @pytest.mark.parametrize("key", KEYS)
    def test_secret_keys_at_any_depth(self, key: str) -> None:
        """Values under secret-looking keys are replaced in nested dicts and lists."""
        counter = [0]
        out = Redactor().value({"a": [{"b": {key: "CANARYkey"}}]}, counter)
        assert out == {"a": [{"b": {key: "[REDACTED]"}}]}
        assert counter == [1]

    @pytest.mark.parametrize(
        "text",
        [
            "high priority through the night",
            "classic basic check",
            "GET https://example.com/api/v1/items?page=2",
            "mail bob@example.com via https://example.com",
            "https://bob@example.com/x has a user and no password",
            "task-12 and disk-full and high_water",
            "a bearer of bad news",
        ],
    )
    def test_words_that_look_like_a_start_stay(self, text: str) -> None:
        """Text with a pattern's marker but no credential is left as it is."""
        counter = [0]
        assert Redactor().text(text, counter) is text
        assert counter == [0]

    @pytest.mark.parametrize("name", sorted(SHAPES))
    def test_shapes_among_lookalikes(self, name: str) -> None:
        """A credential is still found when harmless markers of other shapes surround it."""
        text, canary = SHAPES[name]
        out = Redactor().text(f"high basic https://example.com task-1 {text} bearer", [0])
        assert canary not in out

    def test_extra_patterns_run_on_every_string(self) -> None:
        """A configured pattern has no marker to wait for: it is tried on any text."""
        r = Redactor(extra_patterns=[r"\d{3}-\d{2}-\d{4}"])
        assert r.text("ssn 123-45-6789", [0]) == "ssn [REDACTED]"
        assert r.text("plain words", [0]) == "plain words"

    def test_harmless_values_untouched(self) -> None:
        """Ordinary keys and text pass through unchanged and uncounted."""
        counter = [0]
        value = {**HARMLESS, "text": "sk is short; Bearer; https://example.com/path?q=1; ghost"}
        assert Redactor().value(value, counter) == value
        assert counter == [0]

    def test_extra_keys_and_patterns(self) -> None:
        """Configured keys and patterns are redacted on top of the defaults."""
        r = Redactor(["customer_ssn"], [r"ACME-\d{4}"])
        counter = [0]
        assert r.value({"customer_ssn": "1", "note": "id ACME-1234 ok"}, counter) == {
            "customer_ssn": "[REDACTED]", "note": "id [REDACTED] ok",
        }  # fmt: skip
        assert counter == [2]

    def test_clean_cache_never_hides_a_secret(self) -> None:
        """Remembering clean strings is bounded and never lets a secret through."""
        r = Redactor()
        secret, canary = SHAPES["bearer"]
        for _ in range(3):  # the same object again and again
            counter = [0]
            assert canary not in r.text(secret, counter)
            assert counter == [1]
        for i in range(CLEAN_CACHE_SIZE * 3):  # more clean strings than it keeps
            text = f"step {i}"
            assert r.text(text, [0]) is text
        assert len(r._clean) <= CLEAN_CACHE_SIZE
        long_text = "x" * (CLEAN_CACHE_LENGTH + 1)
        r.text(long_text, [0])
        assert long_text not in r._clean
        assert canary not in r.text(secret, [0])

    def test_key_verdicts_are_bounded_and_still_decided_past_the_bound(self) -> None:
        """Made-up keys never grow the remembered verdicts without bound; new keys are still judged."""
        r = Redactor()
        assert [r.is_secret_key(f"field_{i}") for i in range(5000)] == [False] * 5000
        assert len(r.secret_keys) <= 4096
        assert (r.is_secret_key("db_password"), r.is_secret_key("X-Api-Key")) == (True, True)
        assert (r.is_secret_key(7), r.is_secret_key(("token",))) == (False, False)

    def test_self_reference_does_not_recurse_forever(self) -> None:
        """A self-referencing structure is cut at the cycle."""
        loop: dict[str, object] = {"password": "x"}
        loop["self"] = loop
        assert Redactor().value(loop, [0]) == {
            "password": "[REDACTED]",
            "self": "<circular reference>",
        }


def all_canaries() -> list[str]:
    return [c for _, c in SHAPES.values()] + ["CANARYkey"]


def assert_no_canary(tmp_path: Path) -> None:
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*.ndjson"))
    assert raw, "nothing was written"
    for canary in all_canaries():
        assert canary.encode() not in raw, canary
    sync_to_sqlite(tmp_path / "m.db", tmp_path / ".codex" / "sessions")
    with db_connection(tmp_path / "m.db") as conn:
        dump = "\n".join(conn.iterdump())
    for canary in all_canaries():
        assert canary not in dump, canary


CHILD = """
import logging, sys
from codex_logging import CodexHandler
logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
logging.getLogger("child").info("child %s", sys.argv[1], extra={"password": "CANARYkey"})
"""


class TestEveryPath:
    def test_stdlib_paths(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """extra, message, % args, nested dicts and exception text are all redacted."""
        monkeypatch.setenv("CODEX_SESSION_ID", "canary")
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "handlers": {"c": {"class": "codex_logging.CodexHandler"}},
                                   "root": {"handlers": ["c"], "level": "INFO"}})  # fmt: skip
        log = logging.getLogger("app")
        for name, (text, _) in SHAPES.items():
            log.info(text, extra={"shape": name})
            log.info("arg %s", text)
            log.info("nested", extra={"deep": {"list": [text, {"api_key": "CANARYkey"}]}})
            try:
                raise RuntimeError(text)  # noqa: TRY301
            except RuntimeError:
                log.exception("failed")
        for key in KEYS:
            log.info("by key", extra={key: "CANARYkey"})
        assert_no_canary(tmp_path)
        counts = [r.get("redacted") for r in read_lines(session_file("canary"))]
        assert all(counts), counts

    def test_structlog_paths_and_scope_meta_and_child(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """structlog keys, bound context, contextvars, scope meta and a child process."""
        configure_structlog(logger_factory=structlog.ReturnLoggerFactory())
        with session_scope("canary", meta={"token": "CANARYkey", "note": SHAPES["jwt"][0]}):
            log = structlog.get_logger().bind(session_token="CANARYkey")
            structlog.contextvars.bind_contextvars(auth=SHAPES["bearer"][0])
            try:
                for text, _ in SHAPES.values():
                    log.info(text, headers={"Authorization": "CANARYkey"})
            finally:
                structlog.contextvars.clear_contextvars()
            subprocess.run(
                [sys.executable, "-c", CHILD, SHAPES["openai"][0]], check=True, timeout=60
            )
        assert_no_canary(tmp_path)
        records = read_lines(session_file("canary"))
        assert records[0]["token"] == "[REDACTED]"
        assert any(r.get("logger") == "child" for r in records)

    def test_harmless_records_pass_through(self, tmp_path: Path) -> None:
        """The same records with harmless values are written exactly as given."""
        handler = CodexHandler(tmp_path, "plain")
        logger = logging.getLogger("plain")
        logger.addHandler(handler)
        logger.warning("nothing secret here: see https://example.com", extra=HARMLESS)
        (rec,) = read_lines(tmp_path / "plain.ndjson")
        assert {k: rec[k] for k in HARMLESS} == HARMLESS
        assert rec["message"] == "nothing secret here: see https://example.com"
        assert "redacted" not in rec

    def test_redact_false_writes_as_given(self, tmp_path: Path) -> None:
        """redact=False on the handler and the processor writes secrets unchanged."""
        handler = CodexHandler(tmp_path, "raw", redact=False)
        logger = logging.getLogger("raw")
        logger.addHandler(handler)
        logger.warning(SHAPES["openai"][0], extra={"password": "CANARYkey"})
        CodexProcessor(tmp_path, "raw", redact=False)(
            None, "info", {"event": SHAPES["aws"][0], "token": "t"}
        )
        first, second = read_lines(tmp_path / "raw.ndjson")
        assert (first["message"], first["password"]) == (SHAPES["openai"][0], "CANARYkey")
        assert (second["message"], second["token"]) == (SHAPES["aws"][0], "t")
