"""No password in any error: hide_secrets over every URL shape, the API and the command line."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codex_logging._errors import HIDDEN, SECRET_PARAMETERS, DatabaseError, hide_secrets

BIN = Path(sys.executable).parent
#: The secret of every case: no piece of it may survive (each piece is a word
#: that occurs in no message of the driver or of this package).
WORDS = ("TOPSECRET", "QUUXWORD", "ZEBRA9")


def leaked(text: str) -> list[str]:
    return [word for word in WORDS if word in text]


#: (URL or connection string, how it is shown).
SHAPES = [
    ("postgresql://app:TOPSECRET@db/logs", "postgresql://app:***@db/logs"),
    ("postgres://app:TOPSECRET@db:5432/logs?sslmode=require", None),
    ("postgresql://app:TOPSECRET%ZZ@/logs", "postgresql://app:***@/logs"),
    ("postgresql://app:TOPSECRET%00@/logs", "postgresql://app:***@/logs"),
    ("postgresql://u:TOPSECRET%@/d", "postgresql://u:***@/d"),
    ("postgresql://u:TOP%SECRET@h/d", "postgresql://u:***@h/d"),
    ("postgresql://u:TOPSECRET@[::1/d", "postgresql://u:***@[::1/d"),
    ("postgresql://u:TOPSECRET#QUUXWORD@/d", "postgresql://u:***@/d"),
    ("postgresql://u:TOPSECRET?QUUXWORD@h/d", "postgresql://u:***@h/d"),
    ("postgresql://u:TOPSECRET?x=QUUXWORD@h/d", "postgresql://u:***@h/d"),
    ("postgresql://u:TOPSECRET@QUUXWORD@/d", "postgresql://u:***@/d"),
    ("postgresql://u:TOPSECRET/QUUXWORD@h/d", "postgresql://u:***@h/d"),
    ("postgresql://u:TOPSECRET:QUUXWORD@h/d", "postgresql://u:***@h/d"),
    ("postgresql://u:TOPSECRET QUUXWORD@h/d", "postgresql://u:***@h/d"),
    (
        "postgresql://u:TOPSECRET@h/d?application_name=a@b",
        "postgresql://u:***@h/d?application_name=a@b",
    ),
    ("postgresql:///logs?password=TOPSECRET", "postgresql:///logs?password=***"),
    (
        "postgresql:///logs?host=/run&password=TOPSECRET&port=5",
        "postgresql:///logs?host=/run&password=***&port=5",
    ),
    ("postgresql:///d?password=TOPSECRET&QUUXWORD", "postgresql:///d?password=***"),
    ("postgresql:///d?PassWord=TOPSECRET", "postgresql:///d?PassWord=***"),
    ("postgresql:///d?pass%77ord=TOPSECRET&port=1", "postgresql:///d?pass%77ord=***&port=1"),
    # "x" is no libpq parameter: "&x=1" may be part of the password, and is hidden with it
    ("postgresql:///d?pass%77ord=TOPSECRET&x=1", "postgresql:///d?pass%77ord=***"),
    ("postgresql:///d?password=TOPSECRET?QUUXWORD=ZEBRA9", "postgresql:///d?password=***"),
    (
        "postgresql://u:TOPSECRET@QUUXWORD?QUUXWORD=ZEBRA9@/d?host=/x",
        "postgresql://u:***@/d?host=/x",
    ),
    ("host=h password=TOPSECRET#QUUXWORD%ZEBRA9:/@/ port=5", "host=h password=*** port=5"),
    ("postgresql:///d?sslpassword=TOPSECRET", "postgresql:///d?sslpassword=***"),
    ("postgresql:///d?oauth_client_secret=TOPSECRET", "postgresql:///d?oauth_client_secret=***"),
    ("postgresql:///d?scram_client_key=TOPSECRET", "postgresql:///d?scram_client_key=***"),
    (
        "postgresql://u:TOPSECRET@h/d?sslpassword=QUUXWORD&sslmode=x",
        "postgresql://u:***@h/d?sslpassword=***&sslmode=x",
    ),
    ("host=db password=TOPSECRET dbname=logs", "host=db password=*** dbname=logs"),
    ("host=db password = TOPSECRET", "host=db password = ***"),
    ("host=db PASSWORD=TOPSECRET", "host=db PASSWORD=***"),
    ("host=db password='TOPSECRET QUUXWORD' port=1", "host=db password=*** port=1"),
    ("host=db password='TOPSECRET\\' QUUXWORD' port=1", "host=db password=*** port=1"),
    ("host=db password='TOPSECRET QUUXWORD", "host=db password=***"),
    ("host=db password=TOPSECRET\\ QUUXWORD port=1", "host=db password=*** port=1"),
    ("host=db sslpassword=TOPSECRET", "host=db sslpassword=***"),
]
#: What must stay as it is: no password, nothing hidden.
CLEAN = [
    "postgresql://app@db/logs",
    "postgresql://db:5432/logs?sslmode=require&application_name=x",
    "postgresql:///logs?host=%2Ftmp%2Fpg",
    "postgresql:///logs?passfile=/home/me/.pgpass",
    "host=db dbname=logs passfile=/home/me/.pgpass",
    "/var/lib/app/.codex/session_logs.db",
    'no password here: password authentication failed for user "app"',
]


class TestHideSecrets:
    @pytest.mark.parametrize(("url", "shown"), SHAPES)
    def test_every_shape(self, url: str, shown: str | None) -> None:
        """Each shape of URL and connection string is shown with its password(s) hidden."""
        result = hide_secrets(url, url)
        assert leaked(result) == []
        if shown is not None:
            assert result == shown
        # Found from the text alone too, where the message quotes the URL whole.
        assert leaked(hide_secrets(f"cannot use database {url}: refused")) == []

    @pytest.mark.parametrize("text", CLEAN)
    def test_nothing_else_is_hidden(self, text: str) -> None:
        """A URL or path without a secret, and a driver message without one, stay as they are."""
        assert hide_secrets(text, text) == text

    @pytest.mark.parametrize(
        ("url", "message", "shown"),
        [
            (
                "postgresql://app:TOPSECRET%ZZ@/logs",
                'invalid percent-encoded token: "TOPSECRET%ZZ"',
                'invalid percent-encoded token: "***"',
            ),
            (
                "postgresql://app:TOPSECRET%00@/logs",
                'forbidden value %00 in percent-encoded value: "TOPSECRET%00"',
                'forbidden value %00 in percent-encoded value: "***"',
            ),
            (
                "postgresql://u:TOPSECRET@QUUXWORD@/d",
                "failed to resolve host 'QUUXWORD@': [Errno -2] Name or service not known",
                "failed to resolve host '***@': [Errno -2] Name or service not known",
            ),
            (
                "postgresql:///d?password=TOPSECRET&QUUXWORD",
                'missing key/value separator "=" in URI query parameter: "QUUXWORD"',
                'missing key/value separator "=" in URI query parameter: "***"',
            ),
            (
                "postgresql://u:TOPSECRET QUUXWORD@h/d",
                'unexpected spaces found in "TOPSECRET QUUXWORD", use percent-encoded spaces',
                'unexpected spaces found in "***", use percent-encoded spaces',
            ),
            (
                "postgresql://u:TOPSECRET%41@h/d",
                'password for "TOPSECRETA" refused',
                'password for "***" refused',
            ),
            # A short password is hidden where it stands alone, not in every word.
            (
                "postgresql://u:pw@h/d",
                "host 'pw' refused: see pwd",
                "host '***' refused: see pwd",
            ),
        ],
    )
    def test_driver_text_quoting_the_password(self, url: str, message: str, shown: str) -> None:
        """The password, decoded or not, or a piece libpq cut from it, is hidden in the driver's text."""
        assert hide_secrets(message, url) == shown
        combined = f"cannot use database {url}: {message}"
        assert leaked(hide_secrets(combined)) == []
        assert leaked(hide_secrets(combined, url)) == []

    def test_a_message_quoting_the_url_twice(self) -> None:
        """libpq's message quoting the URL: both copies hidden, the rest of the message kept."""
        message = (
            "cannot use database postgresql://u:pw@[bad/x: end of string reached when looking"
            ' for matching "]" in IPv6 host address in URI: "postgresql://u:pw@[bad/x"'
        )
        assert hide_secrets(message) == message.replace(":pw@", ":***@")

    def test_every_secret_parameter_of_libpq(self) -> None:
        """Every parameter libpq shows as a password, and its SCRAM keys, is in the list."""
        psycopg = pytest.importorskip("psycopg")
        hidden = {
            option.keyword.decode()
            for option in psycopg.pq.Conninfo.get_defaults()
            if option.dispchar == b"*" or option.keyword.startswith(b"scram_")
        }
        assert hidden <= SECRET_PARAMETERS
        assert "password" in hidden

    @settings(max_examples=300, deadline=None)
    @given(
        template=st.sampled_from(
            [
                "postgresql://u:{}@h/d",
                "postgres://me:{}@/d",
                "postgresql://u:{}@[::1/d",
                "postgresql:///d?password={}",
                "postgresql:///d?x=1&sslpassword={}&y=2",
                "postgresql://u:{}@h/d?password={}",
                "host=h password={} port=5",
                "host=h password='{}' port=5",
                "password={}",
            ]
        ),
        glue=st.lists(
            st.sampled_from([*list("@#?/&=:%'\" \\[],;\t\n"), "%ZZ", "%00", "%", "%4", "@/"]),
            max_size=6,
        ),
        words=st.permutations(WORDS),
    )
    def test_any_malformed_password(self, template: str, glue: list[str], words: list[str]) -> None:
        """Passwords built of the secret words and libpq's delimiters never show, wherever cut."""
        password = "".join(a + b for a, b in itertools.zip_longest(words, glue, fillvalue=""))
        url = template.replace("{}", password)
        result = hide_secrets(url, url)
        if template.startswith(("host=", "password=")) and any(c in password for c in " \t\n'\\"):
            # libpq ends an unquoted value at whitespace, a quoted one at its
            # quote: what follows is no longer the password (libpq refuses it).
            return
        assert leaked(result) == [], (url, result)
        assert HIDDEN in result


# -- the driver and the command line ---------------------------------------

#: URLs whose password libpq or psycopg quotes, or a piece of it, and others.
MALFORMED = [
    "postgresql://app:TOPSECRET%ZZ@/logs",
    "postgresql://app:TOPSECRET%00@/logs",
    "postgresql://u:TOPSECRET%@/d",
    "postgresql://u:TOPSECRET@QUUXWORD@/d",
    "postgresql://u:TOPSECRET/QUUXWORD@/d",
    "postgresql://u:TOPSECRET#QUUXWORD@/d?host=/nonexistent-socket-dir",
    "postgresql://u:TOPSECRET?QUUXWORD@/d?host=/nonexistent-socket-dir",
    "postgresql://u:TOPSECRET QUUXWORD@/d",
    "postgresql://u:TOPSECRET@[::1/d",
    "postgresql://u:TOPSECRET:QUUXWORD@/d?host=/nonexistent-socket-dir",
    "postgresql:///logs?password=TOPSECRET&host=/nonexistent-socket-dir",
    "postgresql:///logs?password=TOPSECRET&QUUXWORD",
    "postgresql:///logs?password=TOPSECRET&port=abc",
    "postgresql:///logs?sslpassword=TOPSECRET&sslmode=bogus",
    "postgresql:///logs?password",
]


def _messages(exc: BaseException) -> str:
    """Every message of the exception's chain, as a traceback prints them."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A sessions folder with one session, so that a sync connects."""
    sessions = tmp_path / "sessions"
    sessions.mkdir(mode=0o700)
    (sessions / "s.ndjson").write_text('{"ts": 1, "kind": "message", "message": "m"}\n')
    return sessions


class TestTheApi:
    @pytest.mark.parametrize("url", MALFORMED)
    def test_sync_to_postgres_says_no_password(self, url: str, folder: Path) -> None:
        """sync_to_postgres with a bad URL raises DatabaseError; no message of the chain holds the password."""
        pytest.importorskip("psycopg")
        from codex_logging import sync_to_postgres

        with pytest.raises(DatabaseError) as info:
            sync_to_postgres(url, folder)
        assert str(info.value).startswith("cannot use database ")
        assert leaked(_messages(info.value)) == []
        chained = info.value.__cause__ or info.value.__context__
        assert chained is None or leaked(str(chained)) == []

    @settings(max_examples=40, deadline=None)
    @given(
        glue=st.lists(
            st.sampled_from([*list("@#?/&=:%' \\[],"), "%ZZ", "%00", "%4"]), min_size=1, max_size=4
        )
    )
    def test_reads_say_no_password(self, glue: list[str]) -> None:
        """Reads with a malformed password built of delimiters: DatabaseError, no piece of it shown."""
        pytest.importorskip("psycopg")
        from codex_logging._postgres.read import sessions_postgres

        password = "TOPSECRET" + "QUUXWORD".join(glue) + "ZEBRA9"
        url = f"postgresql://u:{password}@/d?host=/nonexistent-socket-dir"
        with pytest.raises(DatabaseError) as info:
            sessions_postgres(url)
        assert leaked(_messages(info.value)) == [], str(info.value)

    def test_database_errors_hide_what_they_quote(self, tmp_path: Path) -> None:
        """A SQLite database named by a mistyped URL: the error hides its password (path normalised or not)."""
        from codex_logging._errors import DatabaseLockedError, DatabaseNotFoundError
        from codex_logging.query_logs import query, sessions

        mistyped = f"{tmp_path}/postgresq://u:{WORDS[0]}@h/d"  # the traceback quotes this line
        for read in (query, sessions):
            with pytest.raises(DatabaseNotFoundError) as info:
                read(mistyped)
            assert "postgresq:/u:***@h/d" in str(info.value)
            assert leaked(_messages(info.value)) == []
        for error in (DatabaseError, DatabaseLockedError, DatabaseNotFoundError):
            assert (
                str(error("at host=h password=TOPSECRET port=1")) == "at host=h password=*** port=1"
            )

    def test_a_refusal_from_the_server(self, pg_url: str, folder: Path) -> None:
        """The real server's refusal (no such database) names the URL with its password hidden."""
        from codex_logging import sync_to_postgres

        base, _, query = pg_url.partition("?")
        url = f"{base.rpartition('/')[0]}/no_such_db?{query}&password=TOPSECRET"
        with pytest.raises(DatabaseError, match="password=\\*\\*\\*") as info:
            sync_to_postgres(url, folder)
        assert "no_such_db" in str(info.value)
        assert leaked(_messages(info.value)) == []
        # The same URL shape with the right database works: the password is only hidden.
        report = sync_to_postgres(f"{pg_url}&password=TOPSECRET", folder)
        assert report.rows_inserted == 1


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "codex-logs"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


class TestTheCommandLine:
    @pytest.mark.parametrize("url", MALFORMED)
    @pytest.mark.parametrize(
        "command",
        [
            ("sync",),
            ("sync", "--watch", "1"),
            ("query",),
            ("query", "--follow"),
            ("sessions",),
            ("prune", "--older-than", "1d"),
        ],
        ids=" ".join,
    )
    def test_stderr_never_holds_the_password(
        self, url: str, command: tuple[str, ...], folder: Path
    ) -> None:
        """Every command given a bad URL by --db: one line on stderr, exit 2, no password."""
        pytest.importorskip("psycopg")
        extra = ["--sessions-dir", str(folder)] if command[0] in ("sync", "prune") else []
        out = run(*command, *extra, "--db", url)
        assert out.returncode == 2, out.stderr
        (line,) = out.stderr.splitlines()
        assert line.startswith(f"codex-logs {command[0]}: error: cannot use database ")
        assert leaked(out.stderr + out.stdout) == []

    @pytest.mark.parametrize("command", [("query",), ("sessions",)], ids=" ".join)
    def test_from_the_environment_too(self, command: tuple[str, ...]) -> None:
        """A URL from CODEX_LOG_DB_PATH is hidden as one from --db."""
        pytest.importorskip("psycopg")
        for url in MALFORMED:
            out = run(*command, env={"CODEX_LOG_DB_PATH": url})
            assert out.returncode == 2, out.stderr
            assert leaked(out.stderr) == [], out.stderr

    def test_a_connection_string_as_a_path(self, tmp_path: Path) -> None:
        """A libpq connection string given as --db (a SQLite path then) is not printed with its password."""
        out = run("query", "--db", str(tmp_path / "host=db password=TOPSECRET"))
        assert out.returncode == 2
        assert "password=***" in out.stderr
        assert leaked(out.stderr) == []

    @pytest.mark.parametrize(
        "args",
        [
            ("query", "postgresql://u:TOPSECRET@h/d"),
            ("sync", "--watch", "postgresql://u:TOPSECRET QUUXWORD@h/d"),
            ("query", "--tail", "postgresql:///d?password=TOPSECRET"),
            ("sessions", "host=h password=TOPSECRET"),
        ],
        ids=["url-without-db", "url-as-watch", "url-as-tail", "conninfo-without-db"],
    )
    def test_a_url_in_the_wrong_place(self, args: tuple[str, ...]) -> None:
        """argparse's own error, quoting a URL given where it does not belong, hides its password."""
        out = run(*args)
        assert out.returncode == 2
        (line,) = out.stderr.splitlines()
        assert "***" in line
        assert leaked(line) == []
