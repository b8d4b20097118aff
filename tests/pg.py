"""A throwaway PostgreSQL server for the tests (a pytest plugin, see conftest.py).

``initdb`` into a temporary folder, unix socket only (``listen_addresses=''``),
fsync off; as root the server runs as the ``postgres`` user, since PostgreSQL
refuses to run as root. It starts once per test session and is stopped after
it. Each test that asks for ``pg_url`` gets a database of its own.

Where the server binaries or psycopg are missing, the tests that need them are
skipped with the reason, except under CI (``CI`` set), where that is a failure:
``make test`` installs both.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote

import pytest

SERVER_USER = "postgres"


@dataclass(frozen=True)
class Server:
    """A running throwaway cluster."""

    socket_dir: str
    bin_dir: str

    def url(self, dbname: str = "postgres") -> str:
        """Return the ``postgresql://`` URL of a database over the unix socket."""
        return f"postgresql://{SERVER_USER}@/{dbname}?host={quote(self.socket_dir, safe='')}"


def find_bin_dir() -> str | None:
    """Return the folder of the newest ``initdb``/``pg_ctl`` pair, or None."""

    def version(path: str) -> tuple[int, ...]:
        name = os.path.basename(os.path.dirname(os.path.dirname(path)))
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(os.path.realpath(found))
    for initdb in candidates:
        folder = os.path.dirname(initdb)
        if os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    return None


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (make test installs it)")


def _run(args: list[str], *, as_user: str | None) -> None:
    result = subprocess.run(
        args, user=as_user, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"{args[0]} failed: {result.stdout}{result.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """Start a throwaway PostgreSQL cluster for the test session."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")
    as_user = SERVER_USER if os.geteuid() == 0 else None
    # In /tmp itself: not under pytest's 0700 folder, which the postgres user
    # could not enter, and short, as a unix socket path must be (107 bytes).
    base = tempfile.mkdtemp(prefix="codex-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    if as_user is not None:
        entry = pwd.getpwnam(as_user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data = os.path.join(base, "data")
    _run(
        [
            os.path.join(bin_dir, "initdb"),
            "--pgdata",
            data,
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ],
        as_user=as_user,
    )
    options = (
        f"-c listen_addresses='' -c unix_socket_directories='{base}' -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    log = os.path.join(base, "server.log")
    _run([pg_ctl, "--pgdata", data, "--wait", "-o", options, "-l", log, "start"], as_user=as_user)
    try:
        yield Server(socket_dir=base, bin_dir=bin_dir)
    finally:
        subprocess.run(
            [pg_ctl, "--pgdata", data, "--wait", "--mode", "immediate", "stop"],
            user=as_user,
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


_numbers = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: Server) -> Iterator[str]:
    """Return the URL of a new, empty database, dropped after the test."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
