"""Redaction: canary secrets through every path never reach the file or the database."""

from __future__ import annotations

import json
import logging
import logging.config
import re
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
from codex_logging._redaction import secrets
from codex_logging._redaction.names import (
    JOINED_PARTS,
    JOINED_SUFFIXES,
    KEY_NOT_SECRET,
    KEY_QUALIFIERS,
    SECRET_LAST_PARTS,
    SECRET_NAMES,
    TOKEN_NOT_SECRET,
    WEAK_PARTS,
)
from codex_logging._redaction.redactor import (
    CLEAN_CACHE_LENGTH,
    CLEAN_CACHE_SIZE,
    Redactor,
    _unique,
)
from codex_logging._redaction.secrets import (
    GATE_BITS,
    GATE_KEYS,
    GATES,
    NAME_HINTS,
    RULES,
)
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
        assert len(r.clean) <= CLEAN_CACHE_SIZE
        long_text = "x" * (CLEAN_CACHE_LENGTH + 1)
        r.text(long_text, [0])
        assert long_text not in r.clean
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


# Each case: a text holding a secret, a part of the secret that must be gone,
# and the exact redacted text.
NEW_SHAPES = {
    "pgp": (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGCANARYpgp\n-----END PGP PRIVATE KEY BLOCK-----",
        "CANARYpgp",
        "[REDACTED]",
    ),
    "bearer_upper": ("BEARER CANARYupper012345", "CANARYupper", "BEARER [REDACTED]"),
    "bearer_lower": ("bearer CANARYlower012345", "CANARYlower", "bearer [REDACTED]"),
    "stripe_live": ("sk_live_CANARYstripe0123456789", "CANARYstripe", "[REDACTED]"),
    "stripe_restricted": ("rk_live_CANARYrk0123456789ab", "CANARYrk", "[REDACTED]"),
    "stripe_test": ("sk_test_CANARYstest0123456789", "CANARYstest", "[REDACTED]"),
    "gitlab": ("glpat-CANARYgitlab01234567", "CANARYgitlab", "[REDACTED]"),
    "google": ("AIzaSyCANARYgoogle0123456789abcdefghijk", "CANARYgoogle", "[REDACTED]"),
    "npm": ("npm_CANARYnpm0123456789abcdefghijklmnopq", "CANARYnpm", "[REDACTED]"),
    "slack_app": ("xapp-1-A0CANARYapp-1234567890-abcdef", "CANARYapp", "[REDACTED]"),
    "slack_webhook": (
        "https://hooks.slack.com/services/T0001/B0001/CANARYhook0123456789",
        "CANARYhook",
        "https://hooks.slack.com/services/[REDACTED]",
    ),
    "jwe": (
        "eyJhbGciOiJSU0EtT0FFUCJ9.Q0FOQVJZandlS2V5.aXYxMjM0.CANARYjweCipher.dGFnMTIz",
        "CANARYjwe",
        "[REDACTED]",
    ),
    "jwe_empty_key": (
        "eyJhbGciOiJkaXIifQ..aXYxMjM0.CANARYdirCipher.dGFnMTIz",
        "CANARYdir",
        "[REDACTED]",
    ),
    "url_slash": ("https://bob:CANARY/slash+b64=@db.example.com/x", "CANARY/slash", "https://bob:[REDACTED]@db.example.com/x"),
    "url_at": ("https://bob:CANARY@at@db.example.com/x", "CANARY@at", "https://bob:[REDACTED]@db.example.com/x"),
    "url_space": ("https://bob:CANARY space pw@db.example.com", "space pw", "https://bob:[REDACTED]@db.example.com"),
    "url_no_user": ("redis://:CANARYredis@cache:6379/0", "CANARYredis", "redis://:[REDACTED]@cache:6379/0"),
    "url_query_email": (
        "https://bob:CANARYq@db.example.com/x?mail=a@b.com",
        "CANARYq",
        "https://bob:[REDACTED]@db.example.com/x?mail=a@b.com",
    ),
}  # fmt: skip
NEW_KEYS = ["accessToken", "refreshToken", "idToken", "clientSecret", "privateKey", "secretKey", "authToken",
            "DB_PASS", "SMTP_PASS", "MYSQL_PWD", "PGPASSWORD", "STRIPE_APIKEY", "passphrase", "credential",
            "credentials", "creds", "session_cookie", "sessionid", "csrftoken", "auth", " password ", "APIKey",
            "db.password", "X_Auth", "user password"]  # fmt: skip
ORDINARY_KEYS = ["key", "Key", "author", "tokens", "tokens_used", "token_count", "max_tokens", "session_id",
                 "monkey", "auth_method", "password_length", "keyword", "bypass", "compass"]  # fmt: skip


class TestKeysAndShapes:
    @pytest.mark.parametrize("name", sorted(NEW_SHAPES))
    def test_new_shapes(self, name: str) -> None:
        """Each shape real services issue is replaced exactly, counted once."""
        text, canary, expected = NEW_SHAPES[name]
        counter = [0]
        out = Redactor().text(f"a {text} z", counter)
        assert canary not in out
        assert out == f"a {expected} z"
        assert counter == [1]

    @pytest.mark.parametrize("key", NEW_KEYS)
    def test_key_names_real_code_uses(self, key: str) -> None:
        """camelCase, environment-style, spaced and dotted key names are secret keys."""
        counter = [0]
        assert Redactor().value({"a": {key: "CANARYkey"}}, counter) == {"a": {key: "[REDACTED]"}}
        assert counter == [1]

    @pytest.mark.parametrize("key", ORDINARY_KEYS)
    def test_ordinary_key_names_stay(self, key: str) -> None:
        """key alone, token counts, author and session_id are not secret keys."""
        counter = [0]
        assert Redactor().value({key: "v1"}, counter) == {key: "v1"}
        assert counter == [0]

    def test_key_suffix_is_secret_key_alone_is_not(self) -> None:
        """A key ending in _key is secret; key alone, and key as a first part, are not."""
        r = Redactor()
        assert [r.is_secret_key(k) for k in ("api_key", "sort_key", "key", "key_id", "Key")] == [
            True, False, False, False, False,
        ]  # fmt: skip

    def test_pairs_are_read_as_key_and_value(self) -> None:
        """[name, value] items of a list (headers, ASGI scope) are redacted by name."""
        counter = [0]
        value = {"headers": [["X-Api-Key", "CANARY1"], ("authorization", "CANARY2"), ["host", "h"]]}
        assert Redactor().value(value, counter) == {
            "headers": [["X-Api-Key", "[REDACTED]"], ["authorization", "[REDACTED]"], ["host", "h"]]
        }
        assert counter == [2]

    def test_an_argv_list_loses_the_value_after_a_secret_flag(self, tmp_path: Path) -> None:
        """["tool", "--password", x]: x is the flag's value (as in a command line's text)."""
        counter = [0]
        argv = ["tool", "--password", "CANARY1", "--user", "bob", "--api-key", "CANARY2x", "--"]
        assert Redactor().value({"argv": argv}, counter) == {
            "argv": [
                "tool",
                "--password",
                "[REDACTED]",
                "--user",
                "bob",
                "--api-key",
                "[REDACTED]",
                "--",
            ]
        }
        assert counter == [2]
        # A flag after a secret one is a flag: the secret after it is found.
        assert Redactor().value(["--password", "--api-key", "CANARY3x", "--host", "db"], [0]) == [
            "--password", "--api-key", "[REDACTED]", "--host", "db",
        ]  # fmt: skip
        # Written through the handler, and a message that starts with the flag.
        handler = CodexHandler(tmp_path, session_id="argv")
        log = logging.getLogger("redact.argv")
        log.addHandler(handler)
        log.propagate = False
        log.warning("--password CANARY3 --port 1", extra={"argv": ["--token", "CANARY4"]})
        (record,) = read_lines(tmp_path / "argv.ndjson")
        assert (record["message"], record["argv"]) == (
            "--password [REDACTED] --port 1",
            ["--token", "[REDACTED]"],
        )

    def test_dict_keys_are_scanned_and_stay_unique(self) -> None:
        """A credential in a dict key is redacted; a collision gets a #n suffix."""
        counter = [0]
        out = Redactor().value(
            {"AKIACANARYAWS0123456": 1, "[REDACTED]": 2, "ASIACANARYAWS0123456": 3}, counter
        )
        assert out == {"[REDACTED]#2": 1, "[REDACTED]": 2, "[REDACTED]#3": 3}
        assert counter == [2]

    def test_url_in_a_key_keeps_its_value(self) -> None:
        """A key holding a URL password loses the password and keeps its value."""
        counter = [0]
        assert Redactor().mapping({"https://u:CANARYpw@h": 5}, counter) == {
            "https://u:[REDACTED]@h": 5
        }
        assert counter == [1]

    @pytest.mark.parametrize(
        "text",
        [
            "http://localhost:8080 for joe@example.com",
            "https://example.com:443/a?mail=joe@example.com",
            "http://localhost:8080/path then bob@example.com",
            "basic text",
            "npm_config_registry and sk_live_short",
            "task-12 AIza short, glpat-short",
        ],
    )
    def test_lookalikes_of_new_shapes_stay(self, text: str) -> None:
        """Ports, query e-mails and short prefixes are not mistaken for secrets."""
        counter = [0]
        assert Redactor().text(text, counter) is text
        assert counter == [0]

    def test_user_patterns_keep_their_own_flags(self) -> None:
        """Each configured pattern is compiled alone, so an inline flag works."""
        r = Redactor(extra_patterns=[r"(?i)acme-\d{4}", r"(?x) zz \d+ "])
        counter = [0]
        assert r.text("ACME-1234 acme-5678 zz9", counter) == "[REDACTED] [REDACTED] [REDACTED]"
        assert counter == [3]

    def test_one_string_is_one_pattern(self) -> None:
        """A lone string for keys or patterns is one item, not one per character."""
        r = Redactor("customer_ssn", r"ACME-\d+")
        assert r.value({"customer_ssn": "x", "n": "ACME-1 a"}, [0]) == {
            "customer_ssn": "[REDACTED]", "n": "[REDACTED] a",
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("pattern", "message"),
        [
            ("ACME-(", "redact_patterns: invalid regular expression 'ACME-(': missing ), unterminated subpattern at position 5"),
            ("x*", "redact_patterns: 'x*' matches the empty string"),
        ],
    )  # fmt: skip
    def test_bad_user_pattern_is_named(self, pattern: str, message: str) -> None:
        """An invalid or empty-matching pattern raises ValueError naming it."""
        with pytest.raises(ValueError, match=r"^redact_patterns") as info:
            Redactor(extra_patterns=["ok", pattern])
        assert str(info.value) == message

    def test_non_string_pattern_is_refused(self) -> None:
        """A pattern that is not a string raises TypeError naming it."""
        with pytest.raises(TypeError, match=r"^redact_patterns: 5 is not a string$"):
            Redactor(extra_patterns=[5])  # type: ignore[list-item]

    def test_dictconfig_names_the_bad_pattern(self) -> None:
        """dictConfig fails with the pattern's name in its message; an inline flag is accepted."""
        config = {"version": 1, "disable_existing_loggers": False, "handlers": {"c": {"class": "codex_logging.CodexHandler",
                  "session_id": "s", "redact_patterns": ["(?i)ok-\\d+", "bad("]}}}  # fmt: skip
        with pytest.raises(ValueError, match=r"^Unable to configure handler 'c'$") as info:
            logging.config.dictConfig(config)
        assert str(info.value.__cause__) == (
            "redact_patterns: invalid regular expression 'bad(': "
            "missing ), unterminated subpattern at position 3"
        )
        config["handlers"]["c"]["redact_patterns"] = ["(?i)ok-\\d+"]  # type: ignore[index]
        config["root"] = {"handlers": ["c"], "level": "INFO"}
        logging.config.dictConfig(config)
        logging.getLogger("x").info("id OK-123 and ok-4")
        assert [r["message"] for r in read_lines(session_file("s"))] == [
            "id [REDACTED] and [REDACTED]"
        ]


# Adversarial inputs: repetitions of each rule's own prefix (and near misses).
ADVERSARIAL = {
    "private_key": ["-----BEGIN PRIVATE KEY-----", "-----BEGIN PRIVATE KEY", "-----END PRIVATE KEY", "-----BEGIN A PRIVATE KEY-----\n-----END "],
    "bearer": ["bearer ", "Bearer-", "bearer a", "BEARER\t"],
    "basic": ["Basic /basic ", "basic ", "Basic a"],
    "jwt": ["eyJ-", "eyJa.", "eyJaaaa.eyJaaaa.", "eyJaaaa..a."],
    "openai": ["sk-", "-sk-"],
    "stripe": ["sk_live_", "rk_test_a"],
    "github": ["ghp_", "github_pat_", "-ghp_a"],
    "gitlab": ["glpat-", "glpat-a."],
    "aws": ["AKIA", "ASIAA"],
    "google": ["AIza", "AIza-"],
    "npm": ["npm_", "npm_a"],
    "slack": ["xoxb-", "xapp-1-", "-xox"],
    "slack_webhook": ["hooks.slack.com/services/", "hooks.slack.com/"],
    "url": ["a://:@", "https://u:p@", "a://@", "://@", "a://b:c d@", "a://b:c@@", "a://b:c /"],
    "assignment": ["a=key", "a=", "password=", 'password="', "'password': \"", '"key":', "a-a=pwd", "\"password\": '\\",
                   "password: ", "('password', '", "['--password', 'x', '", "Authorization: Token ", "'a', ", "token = ", "password=x=x",
                   "pass" * 30 + ":", "p-" * 50 + "=", "token" + " " * 90 + ":", "a salt: ",
                   "password=[", "('token', [", "password=['x", "salt=[a] "],
    "jwt_spaced": ["eyA-", "eyAaaaa.eyaaaa.", "eyAaaaa."],
    "google_oauth": ["ya29.", "GOCSPX-", "-ya29.a"],
    "huggingface": ["hf_", "api_org_a"],
    "sendgrid": ["SG.", "SG.aaaaaaaaaaaaaaaaaaaa.", "-SG.a"],
    "providers": ["dapi", "hvs.", "key-", "_v1_", "shpat_a", "PMAK-a"],
    "mysql": ["mysql -p", "mysql -pa ", "mysql"],
    "curl_user": ["curl -u a:", "curl -u ", "curl --user=a:b "],
    "login_flag": ["docker login -p ", "docker login a ", "docker a login ", "docker \\\n login -u \\\n", "login -p ", "sshpass -p",
                   "redis-cli -p 1 ", "redis-cli", "sshpass \t"],
    "netrc": ["login a password ", "login ", "login password "],
    "encoded_url": ["a%3A%2F%2F", "https%3a%2f%2fu%3Ap%40", "%3A%2F%2F"],
    "flag": [" --password ", " --a ", "--token x ", " --salt [ab ", " --sig [b", " --salt ('a"],
    "openssl_pass": ["-passin pass:", "-pass pass:a ", "pass:"],
    "telegram": ["123456789:AA", "1234567890:AAa-", ":AA"],
    "argv_list": ["['mysql', '-pa', ", "['mysql', ", '["mysql", "', "['a', '", "['a', 'b']"],
}  # fmt: skip
ADVERSARIAL_CHILD = """
import ast, re, sys
from codex_logging._redaction.redactor import Redactor
from codex_logging._redaction.secrets import RULES, redact_url_passwords
name, prefixes = sys.argv[1], ast.literal_eval(sys.argv[2])
literals = {n: lits for n, lits, _ in RULES} | {"url": ("://",), "assignment": ("=", ":", ", "), "encoded_url": ("%3A", "%3a"), "flag": (" --",), "argv_list": ("', ", '", ')}
sources = {n: source for n, _, source in RULES}
redactor = Redactor()
if name == "url":
    rule = redact_url_passwords
elif name == "assignment":
    rule = redactor._assignments
elif name == "flag":
    rule = redactor._flags
elif name == "encoded_url":
    rule = redactor._encoded_urls
elif name == "argv_list":
    rule = redactor._argv_lists
else:
    rule = lambda text, p=re.compile(sources[name], re.DOTALL): p.subn("[REDACTED]", text)
for prefix in prefixes:
    text = (prefix * (2**20 // len(prefix) + 1))[: 2**20]
    assert any(lit in text for lit in literals[name]), (name, prefix)
    rule(text)  # the rule itself, whatever the quick checks say
    redactor.text(text, [0])  # and the whole redactor
    print(repr(prefix), flush=True)
"""


class TestHostileInput:
    def test_every_rule_has_adversarial_inputs(self) -> None:
        """The adversarial table covers every built-in rule, so a new rule needs its own."""
        assert set(ADVERSARIAL) == {name for name, _, _ in RULES} | {
            "url", "assignment", "encoded_url", "flag", "argv_list",
        }  # fmt: skip

    @pytest.mark.parametrize("name", sorted(ADVERSARIAL))
    def test_each_rule_is_linear_on_a_megabyte_of_its_prefix(self, name: str) -> None:
        """1 MB of a rule's own prefix is redacted in a child that a quadratic rule would hang."""
        # Quadratic at 1 MB costs minutes (the old JWT rule: 11.6 s at 256 KB,
        # so about 3 minutes at 1 MB); linear costs well under a second a case
        # (bench/bench_redact.py), so the timeout only catches a hang.
        prefixes = ADVERSARIAL[name]
        done = subprocess.run(
            [sys.executable, "-c", ADVERSARIAL_CHILD, name, repr(prefixes)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.splitlines() == [repr(p) for p in prefixes]

    def test_a_quadratic_pattern_would_be_caught(self) -> None:
        """On "eyJ-" repeated, the old JWT rule starts at every repetition; the new one once."""
        # The precondition of the test above, counted in starts, not time:
        # each start of the old rule scans the run to its end (quadratic).
        old = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ")
        text = "eyJ-" * 64
        starts = [m.start() for m in re.finditer(r"\beyJ", text)]
        assert len(starts) == 64  # every repetition is a start that scans to the end
        assert old.search(text) is None
        new = re.compile({n: s for n, _, s in RULES}["jwt"])
        assert [
            m.start() for m in re.finditer(new.pattern[: new.pattern.index("eyJ") + 3], text)
        ] == [0]


KEY_BOMB_CHILD = """
import json, logging, sys, time
from pathlib import Path
from codex_logging import CodexHandler, CodexProcessor, sync_to_sqlite
folder, path = Path(sys.argv[1]), sys.argv[2]
# About 1 MiB of keys that all redact to the same text (a token -> owner map).
bomb = {f"sk-{i:024d}abcdefghijklmnop": "o" for i in range(2**20 // 48)}
logger = logging.getLogger("bomb")
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(CodexHandler(folder, "bomb"))
start = time.perf_counter()
logger.info("owners", extra={"owners": bomb})
print("handler", round(time.perf_counter() - start, 2), flush=True)
start = time.perf_counter()
CodexProcessor(folder, "bomb")(None, "info", {"event": "owners", "owners": bomb})
print("processor", round(time.perf_counter() - start, 2), flush=True)
line = {"ts": 1.0, "session_id": "foreign", "kind": "message", "message": "m", "owners": bomb}
(folder / "foreign.ndjson").write_text(json.dumps(line) + "\\n")
start = time.perf_counter()
sync_to_sqlite(path, folder)
print("sync", round(time.perf_counter() - start, 2), flush=True)
"""


class TestKeyBombs:
    def test_keys_that_redact_alike_are_probed_linearly(self) -> None:
        """n keys redacting to one text get #2..#n with O(n) membership tests, not O(n^2)."""

        class Counting(dict[str, int]):
            probes = 0

            def __contains__(self, key: object) -> bool:
                Counting.probes += 1
                return super().__contains__(key)

        original = Counting({f"AKIA{i:016d}": i for i in range(3000)})
        original["[REDACTED]#5"] = -1  # a key already holding a suffix is skipped, kept
        out, suffixes = Counting(), {}
        for key, item in original.items():
            name = "[REDACTED]" if key.startswith("AKIA") else key
            if name != key:
                name = _unique(name, out, original, suffixes)
            out[name] = item
        assert Counting.probes <= 3 * len(original)
        assert out["[REDACTED]"] == 0
        assert out["[REDACTED]#2"] == 1
        assert out["[REDACTED]#5"] == -1
        assert out["[REDACTED]#6"] == 4
        assert len(out) == 3001
        counter = [0]
        assert Redactor().mapping(original, counter) == out
        assert counter == [3000]

    def test_a_megabyte_of_such_keys_through_handler_processor_and_sync(
        self, tmp_path: Path
    ) -> None:
        """1 MiB of token keys in one record is written and mirrored in a child that O(n^2) would hang."""
        # Probing #2, #3, ... from 2 for each key took 33 s for 1 MiB of keys
        # and over a minute for sk- keys, per path; linear takes about a second.
        folder = tmp_path / "s"
        done = subprocess.run(
            [sys.executable, "-c", KEY_BOMB_CHILD, str(folder), str(tmp_path / "m.db")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (0, "")
        assert [line.split()[0] for line in done.stdout.splitlines()] == [
            "handler", "processor", "sync",
        ]  # fmt: skip
        raw = (folder / "bomb.ndjson").read_bytes()
        assert b"sk-0000" not in raw
        records = read_lines(folder / "bomb.ndjson")
        assert [len(r["owners"]) for r in records] == [2**20 // 48] * 2
        with db_connection(tmp_path / "m.db") as conn:
            dump = "\n".join(conn.iterdump())
        assert "sk-0000" not in dump


class TestUrlAndKeyEdges:
    def test_url_inside_a_password_is_not_redacted_twice(self) -> None:
        """A password that itself looks like scheme://user: is replaced once, whole."""
        counter = [0]
        out = Redactor().text("https://u:ab/c://d:CANARYe@host/x", counter)
        assert (out, counter) == ("https://u:[REDACTED]@host/x", [1])

    def test_non_string_keys_are_kept(self) -> None:
        """A mapping key that is not a string is kept as it is and never secret."""
        counter = [0]
        assert Redactor().mapping({1: "one", None: "sk-CANARYnone0123456789abcd"}, counter) == {
            1: "one", None: "[REDACTED]",
        }  # fmt: skip
        assert counter == [1]


class TestAssignments:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("GET /cb?code=1&access_token=CANARY1&x=2", "GET /cb?code=1&access_token=[REDACTED]&x=2"),
            ("user=bob password=CANARY2 ok", "user=bob password=[REDACTED] ok"),
            ("config {'password': 'CANARY3', 'user': 'bob'}", "config {'password': '[REDACTED]', 'user': 'bob'}"),
            ('{"access_token": "CANARY4\\"x", "expires": 3600}', '{"access_token": "[REDACTED]", "expires": 3600}'),
            ("run --db-password=CANARY5 now", "run --db-password=[REDACTED] now"),
            ('DB_PASS="CANARY 6" next', 'DB_PASS="[REDACTED]" next'),
            ('{"token": 123}', '{"token": [REDACTED]}'),
            ("password='CANARY7 unterminated", "password='[REDACTED] unterminated"),
            ("clientSecret=CANARY8", "clientSecret=[REDACTED]"),
            # A list or tuple: every item goes, brackets and quotes inside it too.
            ("secret=['CANARY9','x]y'] ok", "secret=[REDACTED] ok"),
            ("{'password': ['CANARY10', 'b']}", "{'password': [REDACTED]}"),
            ('{"api_key": [\n  "CANARY11",\n  "b"\n]}', '{"api_key": [REDACTED]}'),
            ("[('password', ('CANARY12', 'b')), ('user', 'bob')]", "[('password', [REDACTED]), ('user', 'bob')]"),
            ("token=[CANARY13 never closed\nnext", "token=[REDACTED]\nnext"),
        ],
    )  # fmt: skip
    def test_secret_names_in_text_lose_their_value(self, text: str, expected: str) -> None:
        """name=value, "name": "value" and 'name': 'value' with a secret name are redacted."""
        counter = [0]
        assert Redactor().text(text, counter) == expected
        assert counter == [1]

    @pytest.mark.parametrize(
        "text",
        ["('token', [it's]) password=CANARY15", "('secret', (unclosed password=CANARY15"],
    )
    def test_a_pair_that_is_not_one_hides_no_later_secret(self, text: str) -> None:
        """A bracket after a pair's comma that does not close the pair: the marks after it are read."""
        assert "CANARY15" not in Redactor().text(text, [0])

    def test_a_list_with_an_item_replaced_already_is_redacted_whole(self) -> None:
        """An item an earlier rule replaced does not make the list "already redacted"."""
        text = "api_key=['AKIAIOSFODNN7EXAMPLE', 'CANARY14']"
        assert Redactor().text(text, [0]) == "api_key=[REDACTED]"

    @pytest.mark.parametrize(
        "text",
        [
            "x == y and token==z",
            "max_tokens=5 key=k1 author=me",
            "password=",
            "a=b=c",
            '{"user": "bob", "tokens": 12}',
            "the password is hunter2",
            "password=[] token=()",
            "cache_key=[user, 42] sort_key=(created_at)",
            "[('cache', [1, 2])]",
        ],
    )
    def test_ordinary_assignments_stay(self, text: str) -> None:
        """Comparisons, ordinary names, empty values and prose are left as they are."""
        counter = [0]
        assert Redactor().text(text, counter) is text
        assert counter == [0]

    def test_configured_keys_count_in_text(self) -> None:
        """A redact_keys name is a secret name in text too."""
        assert (
            Redactor(["customer_ssn"]).text("customer_ssn=123-45", [0]) == "customer_ssn=[REDACTED]"
        )

    def test_every_secret_name_holds_a_hint(self) -> None:
        """The quick check before assignments is sound: every secret name contains a hint."""
        names = sorted(
            SECRET_NAMES | SECRET_LAST_PARTS | WEAK_PARTS | set(JOINED_SUFFIXES) | {"key"}
        )
        assert [n for n in names if not any(h in n for h in NAME_HINTS)] == []

    @pytest.mark.parametrize(
        "text", ["p_w=Zq8vL2pR4tX9", "to-ken: Zq8vL2pR4tX9", "'sec.ret': 'Zq8vL2pR4tX9'"]
    )
    def test_a_secret_name_split_by_a_separator_counts(self, text: str) -> None:
        """``p_w`` is a secret name (its parts join into "pw") in a text that passes the quick check."""
        assert Redactor().text(f"token=none {text}", [0]).endswith(("[REDACTED]", "[REDACTED]'"))


def _names() -> list[str]:
    """Names of every kind the name rules decide, secret or not, in the ways code spells them."""
    words = sorted(
        SECRET_NAMES | SECRET_LAST_PARTS | WEAK_PARTS | set(JOINED_SUFFIXES)
        | {f"{q}_key" for q in KEY_QUALIFIERS | KEY_NOT_SECRET}
        | {f"{q}_token" for q in TOKEN_NOT_SECRET} | {"key", "keyboard", "author", "step 5"}
    )  # fmt: skip
    # Each two-part word split in two at every place ("to_ken", "p-w").
    words += [
        word[:i] + sep + word[i:]
        for word in sorted(JOINED_PARTS)
        for i in range(1, len(word))
        for sep in ("_", "-", ".", " ", "__")
    ]
    names = []
    for word in words:
        camel = re.sub(r"[_\-. ]+(\w)", lambda m: m.group(1).upper(), word)
        names += [word, word.upper(), camel, "db_" + word, "X-" + word, "my" + camel, word + "_2"]
    return names


class TestAssignmentSearch:
    """Only the marks after a fragment of a secret name are looked at, and none is missed."""

    def test_the_search_misses_no_secret_name(self) -> None:
        """With the search, a text redacts as when every mark is looked at.

        Each text holds a NAME_HINTS fragment ("token=none"), so it passes the
        quick check before the search; a name split in two (``to_ken``) is
        found beside one.
        """
        hinted = Redactor()
        every_mark = Redactor()
        every_mark._hinted = None
        forms = [
            "{n}=Zq8vL2pR4tX9", "{n}: Zq8vL2pR4tX9", "{n}\t:\tZq8vL2pR4tX9", "{n}        = Zq8vL2pR4tX9",
            "'{n}': 'Zq8vL2pR4tX9'", '"{n}": "Zq8vL2pR4tX9"', "('{n}', 'Zq8vL2pR4tX9')",
            "[b'{n}', b'Zq8vL2pR4tX9']", "'{n}'          : x9", "x=a {n}: Zq8vL2pR4tX9",
            "step 5: ran, {n}=>Zq8vL2pR4tX9 and status: ok", "pwd=x[{n} : Zq8vL2pR4tX9",
        ]  # fmt: skip
        differ = []
        for name in _names():
            for form in forms:
                text = "token=none; " + form.format(n=name)
                if hinted.text(text, [0]) != every_mark.text(text, [0]):
                    differ.append(text)
        assert differ == []

    def test_ordinary_colons_are_not_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A name is read only at a mark after a fragment of a secret name, not at each ``:``."""
        reads = []
        read_name = secrets._read_name
        monkeypatch.setattr(
            secrets, "_read_name", lambda *args: reads.append(args[2]) or read_name(*args)
        )
        # The sync's check over a batch of flat lines, each holding "session" (a fragment).
        line = json.dumps(
            {"ts": 1.5, "session_id": "0f8e", "kind": "message", "level": "INFO",
             "message": "step 5: ran alpha on file_5.py", "pid": 4, "step": 5},
            separators=(",", ":"),
        )  # fmt: skip
        batch = "\n".join([line] * 10_000)
        assert Redactor(flat_json=True).text(batch, [0]) is batch
        assert reads == []
        # A message with one secret name among 10,000 "word: word".
        text = "session 7: " + "step 1: ran alpha, status: ok; " * 5_000 + "token: Zq8vL2pR4tX9"
        counter = [0]
        assert Redactor().text(text, counter).endswith("token: [REDACTED]")
        assert counter == [1]
        assert reads == [len("session 7"), len(text) - len(": Zq8vL2pR4tX9")]


def _every_gate(redactor: Redactor) -> Redactor:
    # The same redactor testing every gate whatever the text holds: the
    # behaviour before the key characters picked the gates.
    full = redactor._plans[(1 << len(GATE_KEYS)) - 1]
    redactor._plans = dict.fromkeys(range(1 << len(GATE_KEYS)), full)
    return redactor


class TestGateKeys:
    def test_every_gate_is_planned_under_its_key(self) -> None:
        """Each gate is tested for texts holding its key character, and only then."""
        redactor = Redactor()
        for gate, _names in GATES:
            plans = [redactor._plans[m] for m in range(1 << len(GATE_KEYS))]
            planned = [m for m, plan in enumerate(plans) if any(gate in gs for gs, _ in plan)]
            assert planned, gate
            assert all(m & GATE_BITS[gate] for m in planned), gate

    def test_plans_are_made_when_first_needed(self) -> None:
        """A Redactor makes no plan up front (all of them cost 18 ms; a sync makes two Redactors)."""
        redactor = Redactor()
        assert len(redactor._plans) == 0
        redactor.text("a-b_c", [0])
        assert len(redactor._plans) == 1

    def test_the_same_verdicts_as_testing_every_gate(self) -> None:
        """Texts built from every shape, prefix and gate give the same text and count either way."""
        pieces = [text for text, _ in SHAPES.values()]
        pieces += [text for text, _, _ in NEW_SHAPES.values()]
        pieces += [item for items in ADVERSARIAL.values() for item in items]
        pieces += [gate for gate, _ in GATES] + ["password=hunter2", '"token": "t0ken"', "plain"]
        texts = pieces + [f"{a} {b}" for a in pieces for b in pieces[::7]]
        texts += [f"{a}{b}" for a in pieces[::3] for b in pieces[::5]]
        keyed, every = Redactor(), _every_gate(Redactor())
        for text in texts:
            got, expected = [0], [0]
            assert keyed.text(text, got) == every.text(text, expected), text
            assert got == expected, text


# The shapes of the attack on the redaction (fakes, built from parts so no
# scanner flags this file): each text, and the part that must be gone.
_T = "Zq3" + "x9KpL2mW8vR4tY6uB1nC5"
ISSUE_SHAPES = {
    "google access token": (f"token ya29.{_T}{_T}", _T),
    "google client secret": (f"secret GOCSPX-{_T}abcdefg", _T),
    "gitlab runner": (f"glrt-{_T}", _T),
    "stripe webhook": (f"whsec_{_T}{_T}", _T),
    "hugging face": (f"hf_{'abcdefghij' * 3}{_T}", _T),
    "sendgrid": (f"SG.{_T}.{_T}{_T}", _T),
    "azure sas": (f"https://a.blob.core.windows.net/c?sv=2022&sig={_T}%2B{_T}%3D", _T),
    "aws credentials": (f"[default]\naws_secret_access_key = {_T}{_T}", _T),
    "yaml": (f"db:\n  DB_PASSWORD: {_T}\n  host: x", _T),
    "toml": (f'password = "{_T}"', _T),
    "netrc": (f"machine h login bob password {_T}", _T),
    "joined env name": (f"NGROK_AUTHTOKEN={_T}", _T),
    "curl -u": (f"curl -u bob:{_T} https://x", _T),
    "mysql -p": (f"mysql -u root -p{_T} db", _T),
    "docker login -p": (f"docker login -u ci -p {_T} registry", _T),
    "helm registry login -p": (f"helm registry login -u ci -p {_T} r.example.com", _T),
    "redis-cli -a after -p": (f"redis-cli -h cache -p 6380 -a {_T} ping", _T),
    "sshpass -p": (f"sshpass -p {_T} ssh deploy@10.0.0.4", _T),
    "docker login, line continued": (f"docker login -u ci \\\n  -p {_T} registry", _T),
    "docker login, a tab": (f"docker login -u ci\t-p {_T}", _T),
    "redis-cli, a tab": (f"redis-cli\t-a {_T} ping", _T),
    "sshpass, two spaces": (f"sshpass  -p {_T} ssh h", _T),
    "docker, options before login": (f"docker --config /x login -p {_T}", _T),
    "cf login, many words": (
        f"cf login -a https://api.example.com -u user -o org -s space --skip-ssl-validation --origin uaa -p {_T}",
        _T,
    ),
    "--password value": (f"app --password {_T} --port 1", _T),
    "--password first": (f"--password {_T} --port 1", _T),
    "--token after a tab": (f"run\t--token {_T}", _T),
    "--api-key on a new line": (f"app \\\n--api-key {_T}", _T),
    "cookie": (f"Cookie: sessionid={_T}; theme=dark", _T),
    "set-cookie": (f"Set-Cookie: session={_T}; Path=/; HttpOnly", _T),
    "authorization token": (f"Authorization: Token {_T}", _T),
    "header tuples": (f"[('Authorization', 'Token {_T}'), ('Accept', '*/*')]", _T),
    "asgi bytes pairs": (f"[(b'x-api-key', b'{_T}')]", _T),
    "pretty json": (f'{{\n  "password" : "{_T}"\n}}', _T),
    "url password with #": (f"postgresql://u:p#{_T}@db/app", _T),
    "url password with ?": (f"amqp://u:p?{_T}@rabbit/", _T),
    "encoded url": (f"GET /login?next=https%3A%2F%2Fbob%3A{_T}%40h.example.com%2Fcb", _T),
    "pw": (f"pw={_T}", _T),
    "passPhrase": (f"passPhrase={_T}", _T),
    "SECRET_KEY_BASE": (f"SECRET_KEY_BASE={_T}", _T),
    "passcode": (f"passcode: {_T}", _T),
    "pem as a list": (f"['-----BEGIN RSA PRIVATE KEY-----', '{_T}', '-----END RSA PRIVATE KEY-----']", _T),
    "jwt with a spaced header": ("eyAiYWxnIjogIkhTMjU2In0.eyJzdWIiOiIxIn0." + _T, _T),
    "traceback source line": (f'  File "app.py", line 3, in <module>\n    client = Client(api_key="{_T}")', _T),
    "mysql -p'quoted'": (f"mysql -uroot -p'{_T}' appdb", _T),
    "openssl -passin pass:": (f"openssl pkcs12 -in c.p12 -passin pass:{_T} -nodes", _T),
    "telegram bot token": (f"GET https://api.telegram.org/bot7123456789:AAHk3vGz-Q1pW8yXr5tLmN0bC2dE4fG6hIj/getMe {_T}", "AAHk3vGz-Q1pW8yXr5tLmN0bC2dE4fG6hIj"),
    "CalledProcessError: mysql": (f"Command '['mysql', '-uroot', '-p{_T}', 'appdb']' returned non-zero exit status 1.", _T),
    "CalledProcessError: docker login": (f"Command '['docker', 'login', '-u', 'ci', '-p', '{_T}', 'ghcr.io']' returned", _T),
    "CalledProcessError: curl -u": (f"Command '['curl', '-u', 'bob:{_T}', 'https://x']' returned", _T),
    "argv as JSON: sshpass": (f'["sshpass", "-p", "{_T}", "ssh", "h"]', _T),
    "API_KEYS plural": (f"API_KEYS={_T}", _T),
    # Passwords that look like names: one word, digits, mixed case.
    "password=secret": ("password=secret", "secret"),
    "password=mypassword": ("password=mypassword", "mypassword"),
    "password=Password123": ("password=Password123", "Password123"),
    "password=superSecret": ("password=superSecret", "superSecret"),
    # Names that are values in settings, not code.
    "password=password in logfmt": ("user=admin password=password", "=password"),
    "DB_PASSWORD: root_password": ("DB_PASSWORD: root_password", "root_password"),
    "token=token": ("token=token", "=token"),
    "a property file's default": ("spring.datasource.password=password", "=password"),
    "attribute of no known object": ("password=Welcome.Pass1", "Welcome.Pass1"),
    # PASS that is no test's result.
    "PASS in JSON": ('{"PASS": "Zq8mmLp2x"}', "Zq8mmLp2x"),
    "PASS in YAML": ("environment:\n  USER: admin\n  PASS: Zq8mmLp2x\n", "Zq8mmLp2x"),
    "PASS: at a line's start": ("PASS: hunter2", "hunter2"),
    # A command whose other items hold spaces.
    "CalledProcessError: mysql -e": (f"Command '['mysql', '-uroot', '-p{_T}', '-e', 'SELECT 1']' returned", _T),
    "CalledProcessError: curl -H": (f"Command '['curl', '-u', 'bob:{_T}', '-H', 'X-A: b', 'https://x']' returned", _T),
    "github token glued to a word": ("token" + "ghp_" + "abcdefghijklmnopqrstuvwxyz0123" + "2LolCm", "abcdefghijklmnopqrstuvwxyz0123"),
}  # fmt: skip
STAY = [
    "running basic validation",
    "deploy/sk-learn-worker-7d9f8b6c4",
    "job xoxo-party-planner",
    "auth=none",
    "cache_key=user:42:profile routing_key=orders.created sort_key=created_at",
    "partition_key=tenant-17 primary_key=id foreign_key=user_id",
    "idempotency_key=5f0c6b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f object_key=uploads/a/b.png",
    "public_key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx bob@laptop",
    "next_page_token=CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA0 page_token=abc123def456",
    "token: ${API_TOKEN} password = %s api_key: none",
    "https://h:443?m=a@b",
    "commit=3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
    # A flag of another command than the login one (redis-cli's -p is a port).
    "redis-cli -h cache.internal -p 6380 INFO",
    "login ok; then ran ssh -p 2222 deploy@host",
    "user login failed, retrying: ls -a /var/log",
    "after login, run pg_dump -p 5432 -a mydb",
    "docker login -u ci --password-stdin && ssh -p 2222 host",
    # Said by tools everybody runs: not secrets under a secret-looking name.
    "--- PASS: TestLogin (0.01s)",
    "PASS: tests/unit.test",
    "docker login --username AWS --password-stdin 123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "PWD=/home/runner/work/app/app OLDPWD=/home/runner",
    "GITHUB_TOKEN Permissions\n  Contents: read\n  IdToken: write\n  Metadata: read",
    "permissions:\n  id-token: write\n  contents: read",
    "GET http://[::1]:8080/api/users/@me 200",
    "Command '['mysql', '-uroot', '-p', 'appdb']' returned non-zero exit status 1.",
    "Command '['git', 'push', 'origin', 'main']' returned non-zero exit status 1.",
    # Source code an agent read: names for a value, not a value.
    "def login(user: str, password: str) -> bool:",
    "    self.token = token",
    'api_key = os.environ["OPENAI_API_KEY"]',
    "  password: process.env.DB_PASSWORD,",
    "conn = connect(host=h, password=password)",
    "    api_key: Optional[str] = None",
    "api_key=config.api_key",
    "_IncompatibleKeys(missing_keys=['fc.weight', 'fc.bias'], unexpected_keys=[])",
]


class TestScannerShapes:
    @pytest.mark.parametrize("name", sorted(ISSUE_SHAPES))
    def test_shape_is_redacted(self, name: str) -> None:
        """Each shape the attack found in clear is redacted, and counted."""
        text, secret = ISSUE_SHAPES[name]
        counter = [0]
        out = Redactor().text(f"x {text} y", counter)
        assert secret not in out
        assert counter[0] >= 1

    @pytest.mark.parametrize("text", STAY)
    def test_ordinary_text_stays(self, text: str) -> None:
        """Words, names that are not secrets and values that are plainly not secrets stay."""
        counter = [0]
        assert Redactor().text(text, counter) == text
        assert counter == [0]

    @pytest.mark.parametrize(
        ("key", "secret"),
        [("api_key", True), ("secret_key", True), ("private_key", True), ("access_key", True),
         ("auth_token", True), ("session_token", True), ("NGROK_AUTHTOKEN", True), ("passPhrase", True),
         ("SECRET_KEY_BASE", True), ("pw", True), ("passcode", True), ("stripe-secret-key", True),
         ("cache_key", False), ("sort_key", False), ("routing_key", False), ("partition_key", False),
         ("primary_key", False), ("foreign_key", False), ("idempotency_key", False), ("object_key", False),
         ("public_key", False), ("page_token", False), ("next_page_token", False), ("nextPageToken", False),
         ("max_tokens", False), ("secret_name", False), ("private_key_path", False)],
    )  # fmt: skip
    def test_names_are_judged_whole(self, key: str, secret: bool) -> None:
        assert Redactor().is_secret_key(key) is secret

    def test_values_under_names_that_tools_print(self) -> None:
        """A workflow's token template, a permission and the shell's PWD stay; a password under PWD goes."""
        fields = {
            "token": "${{ secrets.GITHUB_TOKEN }}",
            "id-token": "write",
            "environ": {"PWD": "/home/runner/work/app/app", "HOME": "/home/runner"},
        }
        counter = [0]
        assert Redactor().value(fields, counter) == fields
        assert counter == [0]
        secret = {"pwd": _T, "PWD": "hunter2", "pwd_path": "/x", "db_pwd": "/abc"}
        assert Redactor().value(secret, [0]) == {
            "pwd": "[REDACTED]", "PWD": "[REDACTED]", "pwd_path": "/x", "db_pwd": "[REDACTED]",
        }  # fmt: skip

    def test_a_mapping_that_names_its_value(self) -> None:
        """{"name": "DB_PASSWORD", "value": x}: a container's environment, a parameter store's answer."""
        env = [{"name": "DB_PASSWORD", "value": _T}, {"name": "LOG_LEVEL", "value": "debug"}]
        ssm = {"Parameter": {"Name": "/prod/db/password", "Type": "SecureString", "Value": _T}}
        tags = [{"Key": "api_token", "Value": _T}, {"Key": "team", "Value": "infra"}]
        counter = [0]
        out = Redactor().value({"env": env, "ssm": ssm, "tags": tags}, counter)
        assert _T not in json.dumps(out)
        assert counter == [3]
        assert out["env"][1] == {"name": "LOG_LEVEL", "value": "debug"}
        assert out["ssm"]["Parameter"]["Name"] == "/prod/db/password"
        assert out["tags"][1] == {"Key": "team", "Value": "infra"}

    def test_plural_names(self) -> None:
        """A list of passwords or API keys is secret as one is; a count of tokens is not."""
        counter = [0]
        fields = {
            "api_keys": [_T, _T],
            "passwords": {"db": _T},
            "generated_tokens": 512,
            "keys": ["a"],
            "missing_keys": ["fc.weight"],
        }
        assert Redactor().value(fields, counter) == {
            "api_keys": "[REDACTED]", "passwords": "[REDACTED]", "generated_tokens": 512, "keys": ["a"],
            "missing_keys": ["fc.weight"],
        }  # fmt: skip
        assert counter == [2]

    def test_an_argv_list_read_as_its_command_line(self) -> None:
        """["mysql", "-pX"], ["docker", "login", "-p", X]...: each item stays in its place."""
        cases = [
            (["mysql", "-uroot", f"-p{_T}", "appdb"], ["mysql", "-uroot", "-p[REDACTED]", "appdb"]),
            (
                ["curl", "-u", f"bob:{_T}", "https://x"],
                ["curl", "-u", "bob:[REDACTED]", "https://x"],
            ),
            (
                ["docker", "login", "-u", "ci", "-p", _T, "r"],
                ["docker", "login", "-u", "ci", "-p", "[REDACTED]", "r"],
            ),
            (["sshpass", "-p", _T, "ssh", "h"], ["sshpass", "-p", "[REDACTED]", "ssh", "h"]),
            (
                ["redis-cli", "-a", _T, "-p", "6380"],
                ["redis-cli", "-a", "[REDACTED]", "-p", "6380"],
            ),
            # Items with spaces stay items, whole.
            (["mysql", "-e", "select 1", "db"], ["mysql", "-e", "select 1", "db"]),
            (
                ["mysql", f"-p{_T}", "-e", "SELECT 1 FROM t"],
                ["mysql", "-p[REDACTED]", "-e", "SELECT 1 FROM t"],
            ),
            (
                ["curl", "-u", f"bob:{_T}", "-H", "Accept: */*"],
                ["curl", "-u", "bob:[REDACTED]", "-H", "Accept: */*"],
            ),
            (
                ["sshpass", "-p", _T, "ssh", "h", "ls -la"],
                ["sshpass", "-p", "[REDACTED]", "ssh", "h", "ls -la"],
            ),
            (["mysql", "-pmy pass", "db"], ["mysql", "-p[REDACTED]", "db"]),
            (["ssh", "-p", "2222", "host"], ["ssh", "-p", "2222", "host"]),
        ]
        for argv, expected in cases:
            counter = [0]
            assert Redactor().value({"argv": argv}, counter) == {"argv": expected}, argv
            assert counter == [int(argv != expected)], argv

    def test_weak_names_keep_plain_values(self) -> None:
        """Under a weak name (signing key of unknown kind, sig) only a random-looking value goes."""
        counter = [0]
        out = Redactor().value({"widget_key": "blue", "hook_key": _T, "sig": "none"}, counter)
        assert out == {"widget_key": "blue", "hook_key": "[REDACTED]", "sig": "none"}
        assert counter == [1]
        # Words between blanks and punctuation, in any script: an e-mail signature.
        words = ("Dr. Smith", "Jane Doe, CFO", "Best regards, Bob", "José Martínez (CTO)")
        for value in words:
            assert Redactor().value({"signature": value, "email_signature": value}, [0]) == {
                "signature": value,
                "email_signature": value,
            }
        assert Redactor().value({"signature": "q8Zk2+Lw9/xY0aP3="}, [0]) == {
            "signature": "[REDACTED]"
        }

    def test_a_stores_own_keys_stay_and_its_secret_goes(self) -> None:
        """redis_key, storage_key, db_key, server_key name a store's keys as often as its secret: weak."""
        counter = [0]
        azure = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
        plain = {"redis_key": "rl:ip:10.0.0.1", "storage_key": "uploads/2024/a.png", "db_key": "users",
                 "database_key": "orders", "server_key": "eu-west-1a"}  # fmt: skip
        out = Redactor().value({**plain, "AZURE_STORAGE_KEY": azure}, counter)
        assert out == {**plain, "AZURE_STORAGE_KEY": "[REDACTED]"}
        assert counter == [1]
        text = f"SET redis_key=rl:ip:10.0.0.1 storage_key={azure}"
        assert Redactor().text(text, [0]) == "SET redis_key=rl:ip:10.0.0.1 storage_key=[REDACTED]"

    def test_dict_template_through_the_handler(self, tmp_path: Path) -> None:
        """A %(password)s template filled from a dict is judged by the dict's names."""
        handler = CodexHandler(tmp_path, "tpl")
        logger = logging.getLogger("tpl")
        logger.addHandler(handler)
        logger.warning("login %(user)s with %(password)s", {"user": "bob", "password": "hunter2"})
        (rec,) = read_lines(tmp_path / "tpl.ndjson")
        assert rec["message"] == "login bob with [REDACTED]"
        assert rec["redacted"] == 1

    def test_secret_in_a_traceback_source_line(self, tmp_path: Path) -> None:
        """A literal in the source line a traceback shows is redacted like a message."""
        handler = CodexHandler(tmp_path, "tb")
        logger = logging.getLogger("tb")
        logger.addHandler(handler)

        def connect(api_key: str) -> None:
            raise ValueError(len(api_key))

        try:
            connect(api_key="Zq3x9KpL2mW8vR4tY6uB1nC5")  # the source line the traceback shows
        except ValueError:
            logger.exception("failed")
        (rec,) = read_lines(tmp_path / "tb.ndjson")
        assert "connect(api_key=" in rec["exc"]
        assert "Zq3x9KpL2mW8vR4tY6uB1nC5" not in json.dumps(rec)

    def test_pem_lines_in_a_field(self) -> None:
        """A private key logged as a list of lines loses every line of the block."""
        lines = [
            "x",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            _T,
            _T,
            "-----END OPENSSH PRIVATE KEY-----",
            "y",
        ]
        counter = [0]
        assert Redactor().value({"lines": lines}, counter) == {
            "lines": ["x"] + ["[REDACTED]"] * 4 + ["y"]
        }
        assert counter == [1]

    def test_a_failed_command_through_every_path(self, tmp_path: Path) -> None:
        """subprocess's CalledProcessError, an argv field and a container's env: each path redacts them."""
        argv = ["docker", "login", "-u", "ci", "-p", _T, "ghcr.io"]
        fields = {"argv": argv, "env": [{"name": "DB_PASSWORD", "value": _T}]}
        error = subprocess.CalledProcessError(1, ["mysql", "-uroot", f"-p{_T}", "appdb"])
        handler = CodexHandler(tmp_path, "cmd")
        logger = logging.getLogger("redact.cmd")
        logger.addHandler(handler)
        try:
            raise error
        except subprocess.CalledProcessError:
            logger.exception("deploy failed", extra=fields)
        CodexProcessor(tmp_path, "cmd")(None, "error", {"event": str(error), **fields})
        # The mirror, of a line another tool wrote as it was.
        folder = tmp_path / "foreign"
        folder.mkdir()
        line = {"ts": 1.0, "message": str(error), **fields}
        (folder / "f.ndjson").write_text(json.dumps(line) + "\n")
        sync_to_sqlite(tmp_path / "m.db", folder)
        with db_connection(tmp_path / "m.db") as conn:
            (data,) = conn.execute("SELECT data FROM session_events").fetchone()
        first, second = read_lines(tmp_path / "cmd.ndjson")
        for record in (first, second, json.loads(data)):
            assert _T not in json.dumps(record)
            assert record["argv"] == ["docker", "login", "-u", "ci", "-p", "[REDACTED]", "ghcr.io"]
            assert record["env"] == [{"name": "DB_PASSWORD", "value": "[REDACTED]"}]
        assert "'-p[REDACTED]', 'appdb'" in first["exc"]
        assert "'-p[REDACTED]', 'appdb'" in second["message"]

    def test_foreign_line_header_field_in_the_mirror(self, tmp_path: Path) -> None:
        """The mirror runs the new rules on a foreign line's other fields too."""
        folder = tmp_path / "s"
        folder.mkdir()
        line = {
            "ts": 1.0,
            "message": "m",
            "detail": f"Authorization: Token {_T}",
            "cmd": f"mysql -p{_T}",
        }
        (folder / "f.ndjson").write_text(json.dumps(line) + "\n")
        sync_to_sqlite(tmp_path / "m.db", folder)
        with db_connection(tmp_path / "m.db") as conn:
            (data,) = conn.execute("SELECT data FROM session_events").fetchone()
        assert _T not in data
