"""The held canary corpus: no secret reaches the file, the database or the console.

Every case goes through the public API only (``CodexHandler``,
``CodexProcessor``, ``configure_structlog``, ``session_scope(meta=...)``) and is
looked for in the raw NDJSON bytes, in a dump of the database after
``sync_to_sqlite``, and in the console output. Each canary is unique, so its
absence from the raw bytes proves it was not written, in any encoding the
JSON encoder could choose for plain ASCII.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import logging.config
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from codex_logging import (
    CodexHandler,
    CodexProcessor,
    configure_structlog,
    session_scope,
    sync_to_sqlite,
)
from tests.conftest import db_connection, read_lines

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkxIn0.CANARYjwtSignature"
# (text holding a secret, the canary that must not be written)
TEXTS: dict[str, tuple[str, str]] = {
    "bearer": ("Authorization: Bearer CANARYbearer0123456789", "CANARYbearer"),
    "bearer_upper": ("AUTHORIZATION: BEARER CANARYbup0123456789", "CANARYbup"),
    "bearer_lower": ("bearer CANARYblow0123456789", "CANARYblow"),
    "basic": ("Basic Q0FOQVJZYmFzaWM6cGFzcw==", "Q0FOQVJZYmFzaWM6cGFzcw"),
    "jwt": (f"token {JWT} end", "CANARYjwt"),
    "jwe": ("eyJhbGciOiJSU0EtT0FFUCJ9.a2V5.aXYxMjM0.CANARYjweCipher.dGFnMTIz", "CANARYjwe"),
    "openai": ("key sk-CANARYopenai0123456789abcdef", "CANARYopenai"),
    "github": ("ghp_CANARYgithub0123456789abcdefABCDEF", "CANARYgithub"),
    "github_pat": ("github_pat_CANARYpat_0123456789abcdef", "CANARYpat"),
    "aws": ("AKIACANARYAWS0123456", "AKIACANARYAWS0123456"),
    "slack": ("xoxb-CANARYslack-0123456789", "CANARYslack"),
    "slack_app": ("xapp-1-A0CANARYxapp-1234567890-abcdef", "CANARYxapp"),
    "slack_webhook": ("https://hooks.slack.com/services/T01/B01/CANARYhook012345", "CANARYhook"),
    "stripe_live": ("sk_live_CANARYstripe0123456789", "CANARYstripe"),
    "stripe_restricted": ("rk_live_CANARYrkey0123456789", "CANARYrkey"),
    "stripe_test": ("sk_test_CANARYstest0123456789", "CANARYstest"),
    "gitlab": ("glpat-CANARYgitlab01234567", "CANARYgitlab"),
    "google": ("AIzaSyCANARYgoogle0123456789abcdefghijk", "CANARYgoogle"),
    "npm": ("npm_CANARYnpm0123456789abcdefghijklmnopq", "CANARYnpm"),
    "pem": ("-----BEGIN RSA PRIVATE KEY-----\nCANARYpem0123\n-----END RSA PRIVATE KEY-----", "CANARYpem"),
    "pgp": ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nCANARYpgp01\n-----END PGP PRIVATE KEY BLOCK-----", "CANARYpgp"),
    "url": ("https://bob:CANARYurlpass@example.com/x", "CANARYurlpass"),
    "url_slash": ("https://bob:CANARYus/lash+b64=@db.example.com/x", "CANARYus"),
    "url_at": ("https://bob:CANARYuat@x@db.example.com/x", "CANARYuat"),
    "url_space": ("https://bob:CANARYusp and more@db.example.com", "CANARYusp"),
    "query_token": ("GET /callback?state=1&access_token=CANARYquery&x=2", "CANARYquery"),
    "logfmt": ("user=bob DB_PASS=CANARYlogfmt host=db", "CANARYlogfmt"),
    "json_body": ('{"refresh_token": "CANARYjson", "expires_in": 3600}', "CANARYjson"),
    "dict_repr": ("{'clientSecret': 'CANARYrepr', 'id': 7}", "CANARYrepr"),
}  # fmt: skip
# Keys real code uses; the value under each is its own canary.
KEYS = ["password", "Passwd", "token", "API_KEY", "apikey", "Authorization", "cookie", "Set-Cookie",
        "private_key", "access_key", "client_secret", "github_token", "aws_secret", "db_password",
        "x-api-key", "secret", "accessToken", "refreshToken", "idToken", "clientSecret", "privateKey",
        "secretKey", "authToken", "DB_PASS", "SMTP_PASS", "MYSQL_PWD", "PGPASSWORD", "STRIPE_APIKEY",
        "passphrase", "credential", "credentials", "creds", "session_cookie", "sessionid", "csrftoken",
        "auth", " password ", "user.password"]  # fmt: skip


@pytest.fixture(autouse=True)
def _forget_loggers() -> Iterator[None]:
    """Take this module's handlers off the named loggers it used, so no other test sees them."""
    yield
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name.startswith("canary") or "CANARY" in name):
            for handler in logger.handlers[:]:
                logger.removeHandler(handler)
                handler.close()
            logger.propagate = True


def key_canary(key: str) -> str:
    return "CANARYkey" + "".join(c for c in key if c.isalnum())


ALL_CANARIES = [c for _, c in TEXTS.values()] + [key_canary(k) for k in KEYS]


def leaks(data: str) -> list[str]:
    """Return the canaries found in ``data``."""
    return [c for c in ALL_CANARIES if c in data]


def file_and_db(root: Path) -> tuple[str, str]:
    """Return every session file's text and a dump of the mirrored database."""
    files = sorted((root / ".codex" / "sessions").glob("*.ndjson"))
    raw = "".join(p.read_text(encoding="utf-8") for p in files)
    sync_to_sqlite(root / "mirror.db", root / ".codex" / "sessions")
    with db_connection(root / "mirror.db") as conn:
        dump = "\n".join(conn.iterdump())
    return raw, dump


def assert_written_and_clean(root: Path, records: int) -> None:
    """The expected number of records was written, and no canary is in the file or the database."""
    raw, dump = file_and_db(root)
    assert raw.count("\n") == records
    assert "[REDACTED]" in raw
    assert (leaks(raw), leaks(dump)) == ([], [])


def stdlib_calls(log: logging.Logger) -> int:
    """Log every case every way the stdlib allows; return the number of records."""
    n = 0
    for name, (text, _) in TEXTS.items():
        log.info(text)
        log.info("arg %s", text)
        log.info("extra", extra={"shape": name, "f": text, "deep": {"l": [text, {text: 1}]}})
        try:
            raise RuntimeError(text)  # noqa: TRY301
        except RuntimeError:
            log.exception("failed")
        n += 4
    for key in KEYS:
        canary = key_canary(key)
        log.info(
            "by key", extra={key: canary, "deep": {"l": [{key: canary}], "h": [[key, canary]]}}
        )
        n += 1
    return n


def structlog_calls(log: Any) -> int:
    """Log every case through a structlog-style callable; return the number of events."""
    n = 0
    for text, _ in TEXTS.values():
        log.info(text, f=text, deep={"l": [text, {text: 1}]})
        n += 1
    for key in KEYS:
        canary = key_canary(key)
        log.info("by key", **{key: canary}, deep={"l": [{key: canary}], "h": [(key, canary)]})
        n += 1
    return n


class _Direct:
    """Calls a CodexProcessor as structlog would, with a method name."""

    def __init__(self, processor: CodexProcessor) -> None:
        self.processor = processor

    def info(self, event: str, **kw: Any) -> None:
        self.processor(None, "info", {"event": event, **kw})


META: dict[str, Any] = {
    **{key: key_canary(key) for key in KEYS},
    **{f"text_{name}": text for name, (text, _) in TEXTS.items()},
    "nested": {"l": [text for text, _ in TEXTS.values()]},
}


class TestCorpus:
    def test_codex_handler(self, tmp_path: Path) -> None:
        """Every case through CodexHandler: message, % argument, extra, nested, traceback."""
        log = logging.getLogger("canary.handler")
        log.addHandler(CodexHandler(tmp_path / ".codex" / "sessions", "h1"))
        log.setLevel(logging.INFO)
        assert_written_and_clean(tmp_path, stdlib_calls(log))

    def test_codex_handler_from_dictconfig(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same corpus with the handler built by dictConfig and extra keys and patterns."""
        monkeypatch.setenv("CODEX_SESSION_ID", "h2")
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"c": {"class": "codex_logging.CodexHandler",
                               "redact_keys": ["customer_ssn"], "redact_patterns": [r"(?i)acme-\d+"]}},
            "root": {"handlers": ["c"], "level": "INFO"},
        })  # fmt: skip
        log = logging.getLogger("canary.dict")
        n = stdlib_calls(log)
        log.info("ACME-1 acme-2", extra={"Customer-SSN": "CANARYkeyssn"})
        assert_written_and_clean(tmp_path, n + 1)
        raw, _ = file_and_db(tmp_path)
        assert "CANARYkeyssn" not in raw
        assert '"message":"[REDACTED] [REDACTED]"' in raw

    def test_codex_processor(self, tmp_path: Path) -> None:
        """Every case through CodexProcessor called with an event dict."""
        log = _Direct(CodexProcessor(tmp_path / ".codex" / "sessions", "p1"))
        assert_written_and_clean(tmp_path, structlog_calls(log))

    def test_configure_structlog_file_and_console(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every case through configure_structlog: the file, the database and stderr."""
        configure_structlog(sessions_dir=tmp_path / ".codex" / "sessions", session_id="s1")
        log = structlog.get_logger("canary.structlog")
        structlog.contextvars.bind_contextvars(auth=TEXTS["bearer"][0])
        try:
            n = structlog_calls(log)
        finally:
            structlog.contextvars.clear_contextvars()
        console = capsys.readouterr()
        assert console.err.count("\n") >= n
        assert "[REDACTED]" in console.err
        assert (leaks(console.err), leaks(console.out)) == ([], [])
        assert_written_and_clean(tmp_path, n)

    def test_session_scope_meta(self, tmp_path: Path) -> None:
        """Every case as session_scope meta, in the start record."""
        with session_scope("m1", meta=META):
            pass
        assert_written_and_clean(tmp_path, 2)
        (start, _end) = read_lines(tmp_path / ".codex" / "sessions" / "m1.ndjson")
        assert [start[k] for k in KEYS] == ["[REDACTED]"] * len(KEYS)

    def test_free_text_mention_is_not_caught(self, tmp_path: Path) -> None:
        """A password merely mentioned in free text has no shape: it is written (documented)."""
        log = logging.getLogger("canary.free")
        log.addHandler(CodexHandler(tmp_path, "free"))
        log.warning("the password is hunter2")
        (rec,) = read_lines(tmp_path / "free.ndjson")
        assert rec["message"] == "the password is hunter2"
        assert "redacted" not in rec


class TestRedactFalse:
    def test_handler_processor_and_structlog_write_as_given(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """redact=False writes every case exactly as given, on every path; the mirror still redacts."""
        sessions = tmp_path / ".codex" / "sessions"
        log = logging.getLogger("canary.raw")
        log.addHandler(CodexHandler(sessions, "raw", redact=False))
        processor = CodexProcessor(sessions, "raw", redact=False)
        configure_structlog(sessions_dir=sessions, session_id="raw", redact=False)
        slog = structlog.get_logger()
        for name, (text, _) in TEXTS.items():
            log.warning(text, extra={"shape": name, "f": text})
            processor(None, "info", {"event": text, "shape": name, "f": text})
            slog.info(text, shape=name, f=text)
        for key in KEYS:
            log.warning("k", extra={"shape": key, key: key_canary(key)})
            processor(None, "info", {"event": "k", "shape": key, key: key_canary(key)})
        records = read_lines(sessions / "raw.ndjson")
        assert len(records) == 3 * len(TEXTS) + 2 * len(KEYS)
        for rec in records:
            if rec["shape"] in TEXTS:
                text = TEXTS[rec["shape"]][0]
                assert (rec["message"], rec["f"]) == (text, text)
            else:
                assert rec[rec["shape"]] == key_canary(rec["shape"])
            assert "redacted" not in rec
        assert sorted(leaks(capsys.readouterr().err)) == sorted(c for _, c in TEXTS.values())
        raw, dump = file_and_db(tmp_path)
        assert sorted(leaks(raw)) == sorted(ALL_CANARIES)
        # The mirror cannot tell these lines from another tool's: it redacts them.
        assert leaks(dump) == []


# --- Cases that depend on the single write pipeline (normalise, then redact) ---


@dataclasses.dataclass
class Login:
    user: str
    password: str


Creds = collections.namedtuple("Creds", ["user", "token"])  # noqa: PYI024


class Shown:
    def __str__(self) -> str:
        return "object holding sk-CANARYstrobj0123456789abcdef"


SINK_VALUES: dict[str, Any] = {
    "set": {"sk-CANARYset0123456789abcdefgh"},
    "frozenset": frozenset({"ghp_CANARYfrozen0123456789abcdefABCD"}),
    "tuple": ("AKIACANARYTUPLE01234",),
    "bytes": b"Authorization: Bearer CANARYbytes0123456789",
    "path": Path("/tmp/keys/sk-CANARYpathpw0123456789abcdef"),
    "dataclass": Login("bob", "CANARYdataclass"),
    "namespace": types.SimpleNamespace(user="bob", password="CANARYnamespace"),
    "exception": ValueError("failed with key sk-CANARYexcval0123456789abcdef"),
    "object": Shown(),
    "namedtuple": Creds("bob", "CANARYnamedtuple"),
    "pairs": [("X-Api-Key", "CANARYpairs")],
    "asgi_headers": [(b"authorization", b"Bearer CANARYasgi0123456789")],
    "dict_key": {"AKIACANARYDICTKEY012": 1},
    "set_in_dict": {"nested": {"xoxb-CANARYsetdict-0123456789"}},
}
SINK_CANARIES = {
    "set": "CANARYset", "frozenset": "CANARYfrozen", "tuple": "CANARYTUPLE", "bytes": "CANARYbytes",
    "path": "CANARYpathpw", "dataclass": "CANARYdataclass", "namespace": "CANARYnamespace",
    "exception": "CANARYexcval", "object": "CANARYstrobj", "namedtuple": "CANARYnamedtuple",
    "pairs": "CANARYpairs", "asgi_headers": "CANARYasgi", "dict_key": "CANARYDICTKEY",
    "set_in_dict": "CANARYsetdict",
}  # fmt: skip
# Fields the record builder writes itself: role, kind and the logger name.
SINK_FIELDS = {
    "logger_name": "https://bob:CANARYloggername@host",
    "role": "tool https://bob:CANARYrole@host",
    "kind": "message sk-CANARYkind0123456789abcdef",
    "top_level_key": "AKIACANARYTOPKEY0123",
}
SINK_FIELD_CANARIES = {"logger_name": "CANARYloggername", "role": "CANARYrole",
                       "kind": "CANARYkind", "top_level_key": "CANARYTOPKEY"}  # fmt: skip


def _sink_paths(root: Path) -> Iterator[tuple[str, Callable[[str, Any], None]]]:
    sessions = root / ".codex" / "sessions"
    log = logging.getLogger("canary.sink")
    log.addHandler(CodexHandler(sessions, "sink"))
    processor = CodexProcessor(sessions, "sink")

    def scope(name: str, value: Any) -> None:
        with session_scope(f"sink-{name}", meta={"v": value}):
            pass

    yield "handler", lambda _name, value: log.warning("v", extra={"v": value})
    yield "processor", lambda _name, value: processor(None, "info", {"event": "v", "v": value})
    yield "scope", scope


class TestNeedsSink:
    """Cases that pass once values are normalised before redaction (the write pipeline)."""

    @pytest.mark.parametrize("case", sorted(SINK_VALUES))
    def test_non_string_values(self, tmp_path: Path, case: str) -> None:
        """A non-string value holding a secret is scanned, with field names kept as keys."""
        for _, write in _sink_paths(tmp_path):
            write(case, SINK_VALUES[case])
        raw, dump = file_and_db(tmp_path)
        assert raw.count("\n") == 4  # handler, processor, scope start and end
        canary = SINK_CANARIES[case]
        assert (canary in raw, canary in dump) == (False, False)

    @pytest.mark.parametrize("case", sorted(SINK_FIELDS))
    def test_role_kind_logger_and_field_names(self, tmp_path: Path, case: str) -> None:
        """role, kind, the logger name and a top-level field name are redacted too."""
        sessions = tmp_path / ".codex" / "sessions"
        text = SINK_FIELDS[case]
        processor = CodexProcessor(sessions, "fields")
        name = text if case == "logger_name" else "canary.fields"
        log = logging.getLogger(name)
        log.addHandler(CodexHandler(sessions, "fields"))
        log.propagate = False
        if case in {"role", "kind"}:
            log.warning("v", extra={case: text})
            processor(None, "info", {"event": "v", case: text})
        elif case == "top_level_key":
            log.warning("v", extra={text: 1})
            processor(None, "info", {"event": "v", text: 1})
        else:
            log.warning("v")
            # A structlog logger with that name (a stdlib logger reaching the
            # CodexHandler above would leave the writing to the handler).
            processor(types.SimpleNamespace(name=text), "info", {"event": "v"})
        raw, dump = file_and_db(tmp_path)
        assert raw.count("\n") == 2
        canary = SINK_FIELD_CANARIES[case]
        assert (canary in raw, canary in dump) == (False, False)
