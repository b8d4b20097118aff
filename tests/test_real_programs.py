"""Real programs: each test runs real subprocesses and reads both the NDJSON files and the synced mirror."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import db_connection, read_lines

BIN = Path(sys.executable).parent
TIMEOUT = 120


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any CODEX_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    env.update(extra)
    return env


def run_python(
    code: str, cwd: Path, env: dict[str, str] | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script file in ``cwd``; the completed process (not checked)."""
    script = cwd / f"prog_{abs(hash(code))}.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def codex_logs(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``codex-logs`` command (not checked)."""
    return subprocess.run(
        [str(BIN / "codex-logs"), *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def mirror(db: Path, session_id: str) -> list[dict[str, Any]]:
    """The mirrored records of one session, in file order."""
    with db_connection(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT data FROM session_events WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()
    return [json.loads(row["data"]) for row in rows]


# ---------------------------------------------------------------------------
# Hosts: which folder, folders of ours, children, termination, torn files
# ---------------------------------------------------------------------------

HOOK = """
    import logging, sys
    from codex_logging import CodexHandler
    logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
    logging.getLogger("hook").info("hook ran in %s", sys.argv[1])
"""


class TestOneRuleFindsTheProject:
    def test_hook_from_a_subfolder_writes_into_the_projects_session(self, tmp_path: Path) -> None:
        """``cd src && python ../hook.py``: one session file at the root; sync and query from anywhere see it."""
        root = tmp_path / "proj"
        (root / ".git").mkdir(parents=True)
        (root / "src" / "deep").mkdir(parents=True)
        (root / "hook.py").write_text(textwrap.dedent(HOOK))
        env = clean_env(CODEX_SESSION_ID="ci-7", HOME=str(tmp_path))
        for where, arg in ((root, "root"), (root / "src", "src")):
            done = subprocess.run(
                [sys.executable, str(root / "hook.py"), arg],
                cwd=where, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True,
            )  # fmt: skip
            assert done.stderr == ""
        assert not (root / "src" / ".codex").exists()
        lines = read_lines(root / ".codex" / "sessions" / "ci-7.ndjson")
        assert [r["message"] for r in lines] == ["hook ran in root", "hook ran in src"]
        env.pop("CODEX_SESSION_ID")
        done = codex_logs("sync", cwd=root / "src" / "deep", env=env)
        assert (done.returncode, done.stdout) == (
            0,
            "synced 1 file: 2 rows inserted, 0 lines quarantined\n",
        )
        assert [r["message"] for r in mirror(root / ".codex" / "session_logs.db", "ci-7")] == [
            "hook ran in root",
            "hook ran in src",
        ]
        out = codex_logs("query", "--session-id", "ci-7", "--json", cwd=root / "src", env=env)
        assert [json.loads(x)["message"] for x in out.stdout.splitlines()] == [
            "hook ran in root",
            "hook ran in src",
        ]
        assert not (root / "src" / ".codex").exists()

    def test_the_search_stops_at_git_and_never_takes_the_homes_codex(self, tmp_path: Path) -> None:
        """Above a ``.git`` nothing is looked at; ``~/.codex`` (Codex CLI's) is never found; else ``./.codex``."""
        home = tmp_path / "home"
        (home / ".codex" / "sessions").mkdir(parents=True)  # OpenAI's Codex CLI keeps its own here
        (home / ".codex" / "session_logs.db").write_bytes(b"")
        (home / "outer" / ".codex" / "sessions").mkdir(parents=True)
        (home / "outer" / "repo" / ".git").mkdir(parents=True)
        (home / "outer" / "repo" / "pkg").mkdir()
        (home / "notes").mkdir()
        env = clean_env(CODEX_SESSION_ID="s", HOME=str(home))
        for where in (home / "outer" / "repo" / "pkg", home / "notes"):
            run_python(HOOK, where, env, where.name).check_returncode()
        assert [p.name for p in (home / ".codex" / "sessions").iterdir()] == []
        assert list((home / "outer" / ".codex" / "sessions").iterdir()) == []
        for where in (home / "outer" / "repo" / "pkg", home / "notes"):
            (record,) = read_lines(where / ".codex" / "sessions" / "s.ndjson")
            assert record["message"] == f"hook ran in {where.name}"
        # The commands take the same folder as the writer did.
        for where in (home / "outer" / "repo" / "pkg", home / "notes"):
            assert codex_logs("sync", cwd=where, env=env).returncode == 0
            assert [r["message"] for r in mirror(where / ".codex" / "session_logs.db", "s")] == [
                f"hook ran in {where.name}"
            ]

    def test_the_environment_still_wins(self, tmp_path: Path) -> None:
        """``CODEX_SESSIONS_DIR`` and ``CODEX_LOG_DB_PATH`` are used as given, by the writer and the commands."""
        (tmp_path / ".codex" / "sessions").mkdir(parents=True)
        named = tmp_path / "named"
        env = clean_env(
            CODEX_SESSION_ID="s",
            HOME=str(tmp_path),
            CODEX_SESSIONS_DIR=str(named / "sessions"),
            CODEX_LOG_DB_PATH=str(named / "m.db"),
        )
        (tmp_path / "sub").mkdir()
        run_python(HOOK, tmp_path / "sub", env, "sub").check_returncode()
        assert list((tmp_path / ".codex" / "sessions").iterdir()) == []
        assert codex_logs("sync", cwd=tmp_path / "sub", env=env).returncode == 0
        assert [r["message"] for r in mirror(named / "m.db", "s")] == ["hook ran in sub"]


class TestFoldersOfOursAreRepaired:
    def test_codex_made_under_umask_002_is_tightened_and_used(self, tmp_path: Path) -> None:
        """``mkdir .codex`` under umask 002: one stderr line, mode 0700, every record kept and mirrored."""
        old = os.umask(0o002)
        try:
            (tmp_path / ".codex").mkdir()
        finally:
            os.umask(old)
        assert (tmp_path / ".codex").stat().st_mode & 0o777 == 0o775
        code = """
            import logging
            from codex_logging import CodexHandler
            handler = CodexHandler()
            logging.basicConfig(level=logging.INFO, handlers=[handler])
            for n in range(3):
                logging.getLogger("app").info("record %d", n)
            print("dropped:", handler.dropped)
        """
        done = run_python(code, tmp_path, clean_env(CODEX_SESSION_ID="u", HOME=str(tmp_path / "h")))
        assert (done.returncode, done.stdout) == (0, "dropped: 0\n")
        assert done.stderr == (
            f"codex_logging: {tmp_path / '.codex'} was writable by group or other (mode 0775);"
            " tightened it to 0700\n"
        )
        assert (tmp_path / ".codex").stat().st_mode & 0o777 == 0o700
        assert len(read_lines(tmp_path / ".codex" / "sessions" / "u.ndjson")) == 3
        synced = codex_logs("sync", cwd=tmp_path, env=clean_env(HOME=str(tmp_path / "h")))
        assert synced.returncode == 0, synced.stderr
        assert [r["message"] for r in mirror(tmp_path / ".codex" / "session_logs.db", "u")] == [
            "record 0",
            "record 1",
            "record 2",
        ]

    @pytest.mark.parametrize("how", ["another user's", "a symlink"])
    def test_refused_codex_is_one_line_and_sync_fails(self, tmp_path: Path, how: str) -> None:
        """A ``.codex`` of another user, or a symlink: the writer says why once; sync exits 2 naming it."""
        codex = tmp_path / ".codex"
        if how == "a symlink":
            (tmp_path / "real").mkdir(mode=0o700)
            codex.symlink_to(tmp_path / "real")
        else:
            if os.geteuid() != 0:
                pytest.skip("only root can give a folder to another user")
            codex.mkdir(mode=0o755)
            os.chown(codex, 65534, 65534)
        env = clean_env(CODEX_SESSION_ID="r", HOME=str(tmp_path / "h"))
        done = run_python(HOOK, tmp_path, env, "x")
        assert done.returncode == 0
        (line,) = done.stderr.splitlines()
        assert f"refusing {codex}: " in line
        synced = codex_logs("sync", cwd=tmp_path, env=env)
        assert synced.returncode == 2
        (line,) = synced.stderr.splitlines()
        assert line.startswith(f"codex-logs sync: error: refusing {codex}: ")
        assert "no sessions folder" not in synced.stderr


CHILD = """
    import logging, sys
    from codex_logging import CodexHandler
    logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
    logging.getLogger("child").info("child of %s", sys.argv[1])
"""

ASYNC_PARENT = """
    import asyncio, sys
    import codex_logging
    from codex_logging import session_scope

    HELP = sys.argv[1] == "child_env"

    async def job(n, gate):
        with session_scope(f"task-{n}"):
            await gate.wait()  # all six scopes are open when the children start
            env = codex_logging.child_env() if HELP else None
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "child.py", f"task-{n}", env=env
            )
            assert await proc.wait() == 0

    async def six():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(job(n, gate)) for n in range(6)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*tasks)

    async def main():
        if sys.argv[2] == "outer":
            with session_scope("outer"):
                await six()
        else:
            await six()

    asyncio.run(main())
"""


def _children_by_session(folder: Path) -> dict[str, list[str]]:
    """Each session file's child messages (its start and end records left out)."""
    return {
        path.stem: sorted(r["message"] for r in read_lines(path) if r["logger"] == "child")
        for path in sorted(folder.glob("*.ndjson"))
    }


class TestChildrenJoinTheirScope:
    @pytest.mark.parametrize(
        ("helped", "around", "expected"),
        [
            ("child_env", "none", {f"task-{n}": [f"child of task-{n}"] for n in range(6)}),
            ("child_env", "outer", {f"task-{n}": [f"child of task-{n}"] for n in range(6)}),
            ("bare", "outer", {"outer": sorted(f"child of task-{n}" for n in range(6))}),
            ("bare", "none", {"program": sorted(f"child of task-{n}" for n in range(6))}),
        ],
    )
    def test_six_asyncio_tasks_each_start_a_child(
        self, tmp_path: Path, helped: str, around: str, expected: dict[str, list[str]]
    ) -> None:
        """With child_env() each child joins its task's scope; without, the scope enclosing all (or the program's)."""
        (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
        env = clean_env(CODEX_SESSION_ID="program", HOME=str(tmp_path / "h"))
        done = run_python(ASYNC_PARENT, tmp_path, env, helped, around)
        assert (done.returncode, done.stderr) == (0, "")
        found = {
            sid: msgs
            for sid, msgs in _children_by_session(tmp_path / ".codex" / "sessions").items()
            if msgs
        }
        assert found == expected
        assert (
            codex_logs("sync", cwd=tmp_path, env=clean_env(HOME=str(tmp_path / "h"))).returncode
            == 0
        )
        for sid, messages in expected.items():
            rows = mirror(tmp_path / ".codex" / "session_logs.db", sid)
            assert sorted(r["message"] for r in rows if r.get("logger") == "child") == messages

    def test_threads_and_multiprocessing_spawn(self, tmp_path: Path) -> None:
        """Threads each in a scope run children with child_env(); a spawn child joins through it too."""
        (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
        code = """
            import multiprocessing, os, subprocess, sys, threading
            import codex_logging
            from codex_logging import session_scope

            def spawned(env, name):
                os.environ.update(env)  # before the handler is made
                import logging
                from codex_logging import CodexHandler
                logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
                logging.getLogger("child").info("child of %s", name)

            def worker(n, barrier):
                with session_scope(f"thread-{n}"):
                    barrier.wait()  # all four scopes open at once
                    subprocess.run(
                        [sys.executable, "child.py", f"thread-{n}"],
                        env=codex_logging.child_env(), check=True,
                    )
                    if n == 0:
                        ctx = multiprocessing.get_context("spawn")
                        proc = ctx.Process(target=spawned, args=(codex_logging.child_env(), "spawn"))
                        proc.start()
                        proc.join()
                        assert proc.exitcode == 0
                    barrier.wait()

            if __name__ == "__main__":
                barrier = threading.Barrier(4)
                threads = [threading.Thread(target=worker, args=(n, barrier)) for n in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        """
        env = clean_env(HOME=str(tmp_path / "h"))
        done = run_python(code, tmp_path, env)
        assert (done.returncode, done.stderr) == (0, "")
        expected = {f"thread-{n}": [f"child of thread-{n}"] for n in range(4)}
        expected["thread-0"] = ["child of spawn", "child of thread-0"]
        assert _children_by_session(tmp_path / ".codex" / "sessions") == expected
        assert codex_logs("sync", cwd=tmp_path, env=env).returncode == 0
        for sid, messages in expected.items():
            rows = mirror(tmp_path / ".codex" / "session_logs.db", sid)
            assert rows[0]["kind"] == "start"
            assert sorted(r["message"] for r in rows if r.get("logger") == "child") == messages


FILLER = """
    import logging, os, resource, sys
    from codex_logging import CodexHandler
    handler = CodexHandler()
    log = logging.getLogger("filler")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    n = 0
    while handler.dropped < 5:
        log.info("record %d %s", n, "x" * 997)
        n += 1
        if n == 100 and sys.argv[1] == "fsize":  # two records more, then a cut mid-record
            size = os.path.getsize(os.path.join(handler.sessions_dir, "full.ndjson"))
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 2 * 1105 + 400, resource.RLIM_INFINITY))
    print(n - handler.dropped)
"""

AFTER = """
    import logging
    from codex_logging import CodexHandler
    log = logging.getLogger("after")
    log.addHandler(CodexHandler())
    log.setLevel(logging.INFO)
    for n in range(3):
        log.info("after space %d", n)
"""


@contextlib.contextmanager
def _small_filesystem(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (root only); skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = Path(tempfile.mkdtemp())
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


class TestNoRecordGluedToAFragment:
    @pytest.mark.parametrize("how", ["tmpfs", "fsize"])
    def test_the_next_process_starts_on_a_new_line(self, tmp_path: Path, how: str) -> None:
        """A full disk (a real 256 KiB tmpfs) or a file-size limit cuts a line; the next process's first record stands alone."""
        with contextlib.ExitStack() as stack:
            where = stack.enter_context(_small_filesystem("256k")) if how == "tmpfs" else tmp_path
            env = clean_env(
                CODEX_SESSION_ID="full",
                CODEX_SESSIONS_DIR=str(where / "s"),
                CODEX_LOG_DB_PATH=str(tmp_path / "m.db"),
            )
            done = run_python(FILLER, tmp_path, env, how)
            assert done.returncode == 0, done.stderr
            kept = int(done.stdout)
            path = where / "s" / "full.ndjson"
            assert not path.read_bytes().endswith(b"\n")  # a fragment at the end
            if how == "tmpfs":
                remount = ["mount", "-o", "remount,size=1m", str(where)]
                subprocess.run(remount, check=True, timeout=TIMEOUT)
            after = run_python(AFTER, tmp_path, env)
            assert (after.returncode, after.stderr) == (0, "")
            lines = path.read_bytes().split(b"\n")
            assert lines[-1] == b""
            parsed, bad = [], []
            for line in lines[:-1]:
                try:
                    parsed.append(json.loads(line)["message"])
                except ValueError:
                    bad.append(line)
            assert len(bad) == 1  # the fragment, alone on its line
            assert bad[0].startswith(b'{"ts":')
            assert b'"logger":"filler"' in bad[0]
            assert b"after space" not in bad[0]
            assert parsed[-3:] == ["after space 0", "after space 1", "after space 2"]
            assert len(parsed) == kept + 3
            report = codex_logs("sync", cwd=tmp_path, env=env)
            assert report.stdout == (
                f"synced 1 file: {kept + 3} rows inserted, 1 lines quarantined\n"
            ), report.stderr
            rows = mirror(tmp_path / "m.db", "full")
            assert [r["message"] for r in rows][-3:] == parsed[-3:]


WAITER = """
    import asyncio, os, signal, sys, time
    from codex_logging import session_scope

    how = sys.argv[1]
    if how == "own-handler":
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
    if how == "reload":  # a daemon's SIGHUP: reload, and go on
        signal.signal(signal.SIGHUP, lambda signum, frame: print("reloaded", flush=True))

    async def main():
        with session_scope("t"):
            print("ready", flush=True)
            await asyncio.sleep(60)

    if how == "asyncio":
        asyncio.run(main())
    else:
        with session_scope("t", record_signals=how != "opted-out"):
            with session_scope("inner"):
                print("ready", flush=True)
                time.sleep(60)
"""


class TestTerminationIsRecorded:
    @pytest.mark.parametrize(
        ("how", "signum", "code", "ended"),
        [
            ("default", signal.SIGTERM, -signal.SIGTERM, {"t": "SIGTERM", "inner": "SIGTERM"}),
            ("default", signal.SIGHUP, -signal.SIGHUP, {"t": "SIGHUP", "inner": "SIGHUP"}),
            ("asyncio", signal.SIGTERM, -signal.SIGTERM, {"t": "SIGTERM"}),
            ("own-handler", signal.SIGTERM, 3, {"t": "SIGTERM", "inner": "SIGTERM"}),
            ("opted-out", signal.SIGTERM, -signal.SIGTERM, {}),
            # SIGHUP to a handler that goes on ends nothing; the SIGTERM after it does
            ("reload", signal.SIGTERM, -signal.SIGTERM, {"t": "SIGTERM", "inner": "SIGTERM"}),
        ],
    )
    def test_sigterm_and_sighup_end_the_open_scopes(
        self, tmp_path: Path, how: str, signum: int, code: int, ended: dict[str, str]
    ) -> None:
        """A signal that ends the program writes one ``terminated`` end per open scope; the exit is as before."""
        env = clean_env(HOME=str(tmp_path / "h"))
        if how == "opted-out":
            env["CODEX_SCOPE_SIGNALS"] = "0"
        script = tmp_path / "waiter.py"
        script.write_text(textwrap.dedent(WAITER))
        proc = subprocess.Popen(
            [sys.executable, str(script), how], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        if how == "reload":
            proc.send_signal(signal.SIGHUP)
            assert proc.stdout.readline() == "reloaded\n"
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=TIMEOUT)
        assert (proc.returncode, err) == (code, "")
        assert codex_logs("sync", cwd=tmp_path, env=env).returncode == 0
        listed = codex_logs("sessions", "--json", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        statuses = {
            r["session_id"]: r["status"] for r in map(json.loads, listed.stdout.splitlines())
        }
        # Ended by the signal: terminated, not ok; without an end: its process is gone.
        assert statuses == {sid: "terminated" if sid in ended else "abandoned" for sid in statuses}
        assert set(ended) <= set(statuses)
        for sid in ("t", "inner") if how != "asyncio" else ("t",):
            lines = read_lines(tmp_path / ".codex" / "sessions" / f"{sid}.ndjson")
            ends = [r for r in lines if r["kind"] == "end"]
            rows = [
                r
                for r in mirror(tmp_path / ".codex" / "session_logs.db", sid)
                if r["kind"] == "end"
            ]
            assert rows == ends
            if sid not in ended:
                assert ends == []
                continue
            (end,) = ends
            assert (end["status"], end["signal"], end["level"]) == (
                "terminated",
                ended[sid],
                "WARNING",
            )
            assert end["duration_s"] >= 0


# ---------------------------------------------------------------------------
# What a record holds: every exception form, levels of any kind, structlog's
# logger factories and recipes, loguru, and values as JSON users expect.
# ---------------------------------------------------------------------------


def _env(tmp_path: Path, session: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    env["CODEX_SESSION_ID"] = session
    env["CODEX_SESSIONS_DIR"] = str(tmp_path / ".codex" / "sessions")
    env["CODEX_LOG_DB_PATH"] = str(tmp_path / ".codex" / "session_logs.db")
    return env


def run_program(
    tmp_path: Path, code: str, session: str = "real"
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a program in ``tmp_path``, with ``session`` as CODEX_SESSION_ID."""
    (tmp_path / "program.py").write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, "program.py"],
        cwd=tmp_path,
        env=_env(tmp_path, session),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def codex_logs_in(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``codex-logs`` command in ``tmp_path``, with its folder and database."""
    return codex_logs(*args, cwd=tmp_path, env=_env(tmp_path, "unused"))


def records(tmp_path: Path, session: str = "real", *, exact: bool = True) -> list[dict[str, Any]]:
    """Return the session's records, checked against its rows in the synced mirror.

    ``exact=False`` compares only the columns: the sync redacts what a writer
    with ``redact=False`` kept.
    """
    lines = read_lines(tmp_path / ".codex" / "sessions" / f"{session}.ndjson")
    synced = codex_logs_in(tmp_path, "sync")
    assert synced.returncode == 0, synced.stderr
    with db_connection(tmp_path / ".codex" / "session_logs.db") as conn:
        rows = conn.execute(
            "SELECT kind, level, logger, role, message, data FROM session_events"
            " WHERE session_id = ? ORDER BY seq",
            (session,),
        ).fetchall()
    if exact:
        assert [json.loads(row[-1]) for row in rows] == lines
    for row, line in zip(rows, lines, strict=True):
        assert row[:5] == tuple(line.get(k) for k in ("kind", "level", "logger", "role", "message"))
    return lines


def messages(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == "message"]


#: Raises RuntimeError("boom") from a ValueError: a chained cause.
FAIL = """
import logging, sys
import structlog
from codex_logging import CodexHandler, CodexProcessor, configure_structlog

def parse():
    return int("not a number")

def fail():
    try:
        parse()
    except ValueError as error:
        raise RuntimeError("boom") from error
"""

#: structlog with a hand-built chain; {chain} is filled in per test.
STRUCTLOG_CHAIN = (
    FAIL
    + """
structlog.configure(
    processors=[structlog.processors.add_log_level, {chain}],
    logger_factory=structlog.ReturnLoggerFactory(),
)
log = structlog.get_logger()
try:
    fail()
except RuntimeError:
    log.{call}
"""
)

#: structlog's stdlib recipe with only a CodexHandler on the logging side.
STDLIB_RECIPE = (
    FAIL
    + """
logging.getLogger().addHandler(CodexHandler())
logging.getLogger().setLevel(logging.INFO)
structlog.configure(
    processors=[
        structlog.stdlib.add_log_level,
        {chain}
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
)
try:
    fail()
except RuntimeError:
    structlog.get_logger("svc").exception("failed")
"""
)

EXCEPTION_FORMS = {
    "configure_structlog (format_exc_info)": (
        FAIL
        + """
configure_structlog(logger_factory=structlog.ReturnLoggerFactory())
try:
    fail()
except RuntimeError:
    structlog.get_logger("svc").exception("failed")
""",
        False,
    ),
    "format_exc_info before the processor": (
        STRUCTLOG_CHAIN.format(
            chain="structlog.processors.format_exc_info, CodexProcessor()",
            call='exception("failed")',
        ),
        False,
    ),
    "dict_tracebacks before the processor": (
        STRUCTLOG_CHAIN.format(
            chain="structlog.processors.dict_tracebacks, CodexProcessor(),"
            " structlog.processors.JSONRenderer()",
            call='exception("failed")',
        ),
        True,
    ),
    "ExceptionDictTransformer without locals": (
        STRUCTLOG_CHAIN.format(
            chain="structlog.processors.ExceptionRenderer("
            "structlog.tracebacks.ExceptionDictTransformer(show_locals=False)), CodexProcessor()",
            call='exception("failed")',
        ),
        True,
    ),
    "ExceptionPrettyPrinter after the processor": (
        STRUCTLOG_CHAIN.format(
            chain="CodexProcessor(), structlog.processors.ExceptionPrettyPrinter()",
            call='exception("failed")',
        ),
        False,
    ),
    "exc_info=True and no exception processor": (
        STRUCTLOG_CHAIN.format(chain="CodexProcessor()", call='error("failed", exc_info=True)'),
        False,
    ),
    "an exception object as exc_info, outside the except block": (
        FAIL
        + """
structlog.configure(processors=[structlog.processors.add_log_level, CodexProcessor()],
                    logger_factory=structlog.ReturnLoggerFactory())
try:
    fail()
except RuntimeError as error:
    caught = error
structlog.get_logger().error("failed", exc_info=caught)
""",
        False,
    ),
    "stdlib logger.exception": (
        FAIL
        + """
logging.getLogger().addHandler(CodexHandler())
try:
    fail()
except RuntimeError:
    logging.getLogger("svc").exception("failed")
""",
        False,
    ),
    "stdlib recipe, format_exc_info": (
        STDLIB_RECIPE.format(chain="structlog.processors.format_exc_info,"),
        False,
    ),
    "stdlib recipe, dict_tracebacks": (
        STDLIB_RECIPE.format(chain="structlog.processors.dict_tracebacks,"),
        True,
    ),
    "stdlib recipe, no exception processor": (STDLIB_RECIPE.format(chain=""), False),
}


class TestEveryExceptionFormIsKept:
    @pytest.mark.parametrize(
        ("code", "structured"), EXCEPTION_FORMS.values(), ids=list(EXCEPTION_FORMS)
    )
    def test_traceback_in_exc_and_structured_form_under_exception(
        self, tmp_path: Path, code: str, structured: bool
    ) -> None:
        """The chained traceback is the text in exc, once; dict_tracebacks' form stays under exception."""
        done = run_program(tmp_path, code)
        (line,) = messages(records(tmp_path))
        assert line["message"] == "failed"
        assert line["level"] == "ERROR"
        exc = line["exc"]
        assert exc.startswith("Traceback (most recent call last):\n")
        assert 'in parse\n    return int("not a number")\n' in exc
        assert "ValueError: invalid literal for int() with base 10: 'not a number'" in exc
        assert "\n\nThe above exception was the direct cause of the following exception:\n\n" in exc
        assert exc.index("ValueError") < exc.index("RuntimeError: boom")
        assert exc.endswith("RuntimeError: boom")
        assert "exc_info" not in line
        assert "Traceback" not in json.dumps({k: v for k, v in line.items() if k != "exc"})
        if structured:
            outer, cause = line["exception"]
            assert (outer["exc_type"], outer["exc_value"]) == ("RuntimeError", "boom")
            assert (cause["exc_type"], cause["is_cause"]) == ("ValueError", True)
            assert cause["frames"][-1]["name"] == "parse"
        else:
            assert "exception" not in line
        assert "Traceback" not in done.stderr

    def test_pretty_printer_still_prints(self, tmp_path: Path) -> None:
        """ExceptionPrettyPrinter after CodexProcessor prints the traceback and the record keeps it."""
        code, _ = EXCEPTION_FORMS["ExceptionPrettyPrinter after the processor"]
        done = run_program(tmp_path, code)
        assert done.stdout.rstrip("\n").endswith("RuntimeError: boom")
        (line,) = messages(records(tmp_path))
        assert line["exc"].endswith("RuntimeError: boom")

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are 3.11+")
    @pytest.mark.parametrize("form", ["stdlib", "dict_tracebacks", "format_exc_info"])
    def test_exception_group(self, tmp_path: Path, form: str) -> None:
        """An exception group keeps every member exception in exc (and under exception as dicts)."""
        chains = {
            "dict_tracebacks": "structlog.processors.dict_tracebacks, CodexProcessor()",
            "format_exc_info": "structlog.processors.format_exc_info, CodexProcessor()",
        }
        code = """
            import logging, structlog
            from codex_logging import CodexHandler, CodexProcessor
            logging.getLogger().addHandler(CodexHandler())
            structlog.configure(processors=[structlog.processors.add_log_level, CHAIN],
                                logger_factory=structlog.ReturnLoggerFactory())
            def many():
                raise ExceptionGroup("many", [ValueError("first"), TypeError("second")])
            try:
                many()
            except ExceptionGroup:
                if FORM == "stdlib":
                    logging.getLogger("svc").exception("failed")
                else:
                    structlog.get_logger().exception("failed")
            """
        code = code.replace("CHAIN", chains.get(form, "CodexProcessor()")).replace(
            "FORM", repr(form)
        )
        run_program(tmp_path, code)
        (line,) = messages(records(tmp_path))
        exc = line["exc"]
        assert "ExceptionGroup: many (2 sub-exceptions)" in exc
        assert "ValueError: first" in exc
        assert "TypeError: second" in exc
        assert "in many" in exc
        if form == "dict_tracebacks":
            (group,) = line["exception"]
            assert group["is_group"] is True
            assert [m[0]["exc_type"] for m in group["exceptions"]] == ["ValueError", "TypeError"]
        else:
            assert "exception" not in line

    @pytest.mark.parametrize(
        "form",
        [
            "stdlib",
            "structlog StackInfoRenderer",
            "structlog stack_info=True, no renderer",
            "stdlib recipe",
        ],
    )
    def test_stack_info(self, tmp_path: Path, form: str) -> None:
        """stack_info=True writes the caller's stack in exc, as logging renders it, and no stack field."""
        code = f"""
            import logging, structlog
            from codex_logging import CodexHandler, CodexProcessor
            FORM = {form!r}
            if FORM in ("stdlib", "stdlib recipe"):
                logging.getLogger().addHandler(CodexHandler())
                logging.getLogger().setLevel(logging.INFO)
            if FORM == "stdlib recipe":
                structlog.configure(
                    processors=[structlog.stdlib.add_log_level,
                                structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
                    logger_factory=structlog.stdlib.LoggerFactory(),
                    wrapper_class=structlog.stdlib.BoundLogger)
            elif FORM == "structlog StackInfoRenderer":
                structlog.configure(processors=[structlog.processors.add_log_level,
                                                structlog.processors.StackInfoRenderer(),
                                                CodexProcessor()],
                                    logger_factory=structlog.ReturnLoggerFactory())
            else:
                structlog.configure(processors=[structlog.processors.add_log_level,
                                                CodexProcessor()],
                                    logger_factory=structlog.ReturnLoggerFactory())
            def where_it_was_called():
                if FORM == "stdlib":
                    logging.getLogger("svc").info("here", stack_info=True)
                else:
                    structlog.get_logger("svc").info("here", stack_info=True)
            where_it_was_called()
            """
        run_program(tmp_path, code)
        (line,) = messages(records(tmp_path))
        assert line["message"] == "here"
        exc = line["exc"]
        assert exc.startswith("Stack (most recent call last):\n")
        assert "in where_it_was_called\n" in exc
        assert exc.rstrip().endswith('info("here", stack_info=True)')
        assert "stack" not in line
        assert "stack_info" not in line


class TestStructlogHosts:
    def test_logger_name_survives_a_return_logger_factory(self, tmp_path: Path) -> None:
        """configure_structlog(logger_factory=ReturnLoggerFactory()) still records get_logger's name."""
        run_program(
            tmp_path,
            """
            import structlog
            from codex_logging import configure_structlog
            configure_structlog(logger_factory=structlog.ReturnLoggerFactory())
            structlog.get_logger("svc").info("one")
            structlog.get_logger("other").bind(x=1).warning("two")
            structlog.get_logger().info("three")
            """,
        )
        lines = messages(records(tmp_path))
        assert [(r.get("logger"), r["message"]) for r in lines] == [
            ("svc", "one"),
            ("other", "two"),
            (None, "three"),
        ]

    def test_extra_adder_recipe_shows_no_private_attribute(self, tmp_path: Path) -> None:
        """structlog's stdlib recipe with ExtraAdder on a console handler prints nothing of ours."""
        done = run_program(
            tmp_path,
            """
            import logging, sys, structlog
            from codex_logging import CodexHandler, session_scope
            console = logging.StreamHandler(sys.stdout)
            console.setFormatter(structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                            structlog.processors.JSONRenderer()],
            ))
            root = logging.getLogger()
            root.addHandler(console)
            root.addHandler(CodexHandler())
            root.setLevel(logging.INFO)
            structlog.configure(
                processors=[structlog.stdlib.add_log_level,
                            structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger)
            with session_scope("job"):
                logging.getLogger("app").info("plain", extra={"user": "ann"})
                structlog.get_logger("svc").info("structured", n=1)
            """,
        )
        printed = [json.loads(line) for line in done.stdout.splitlines()]
        assert [p["event"] for p in printed] == ["plain", "structured"]
        assert printed[0]["user"] == "ann"
        assert not [key for p in printed for key in p if "codex" in key]
        lines = messages(records(tmp_path, "job"))
        assert [(r["message"], r.get("user"), r.get("n")) for r in lines] == [
            ("plain", "ann", None),
            ("structured", None, 1),
        ]

    def test_processor_session_survives_a_copying_processor(self, tmp_path: Path) -> None:
        """CodexProcessor(session_id="a") then a copying processor, in the stdlib recipe: once, under a."""
        run_program(
            tmp_path,
            """
            import logging, structlog
            from codex_logging import CodexHandler, CodexProcessor
            logging.getLogger().addHandler(CodexHandler())
            logging.getLogger().setLevel(logging.INFO)
            structlog.configure(
                processors=[structlog.stdlib.add_log_level,
                            CodexProcessor(session_id="a"),
                            lambda _l, _m, e: {**e, "x": 1},
                            structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
                logger_factory=structlog.stdlib.LoggerFactory(),
                wrapper_class=structlog.stdlib.BoundLogger)
            structlog.get_logger("svc").info("hello")
            logging.getLogger("plain").info("not structlog")
            structlog.get_logger("svc").info("named", session_id="b")
            """,
        )
        assert [(r["message"], r["x"]) for r in records(tmp_path, "a")] == [("hello", 1)]
        assert [r["message"] for r in records(tmp_path, "real")] == ["not structlog"]
        assert [r["message"] for r in records(tmp_path, "b")] == ["named"]


LOGURU = """
import sys
from loguru import logger
import codex_logging
from codex_logging import session_scope
logger.remove()
logger.add(sys.stderr, format="{time} | {level: <8} | {name}:{function}:{line} - {message}")
logger.add(codex_logging.loguru_sink, level="TRACE")
"""


class TestLoguru:
    @pytest.fixture(autouse=True)
    def _loguru(self) -> None:
        pytest.importorskip("loguru")

    def test_same_record_shape_as_the_handler(self, tmp_path: Path) -> None:
        """Message without loguru's format, extra flattened, exception once, levels by name and number."""
        done = run_program(
            tmp_path,
            LOGURU
            + """
def parse():
    return int("x")
logger.bind(role="tool", tokens=812).success("step {}", "B")
logger.trace("tracing {n}", n=3)
logger.info("plain")
try:
    parse()
except ValueError:
    logger.exception("failed")
logger.bind(kind="message", password="hunter2").warning("auth Bearer abcdefghijklmnop12345")
logger.level("NOTICE", no=25)
logger.log("NOTICE", "custom")
""",
        )
        assert "| SUCCESS  | __main__:<module>" in done.stderr  # loguru's own format, elsewhere
        lines = records(tmp_path)
        assert [(r["level"], r.get("levelno"), r["logger"], r["message"]) for r in lines] == [
            ("SUCCESS", 25, "__main__", "step B"),
            ("TRACE", 5, "__main__", "tracing 3"),
            ("INFO", None, "__main__", "plain"),
            ("ERROR", None, "__main__", "failed"),
            ("WARNING", None, "__main__", "auth Bearer [REDACTED]"),
            ("NOTICE", 25, "__main__", "custom"),
        ]
        assert (lines[0]["role"], lines[0]["tokens"]) == ("tool", 812)
        assert lines[1]["n"] == 3
        assert not [r for r in lines if "extra" in r]
        assert set(lines[2]) == {"ts", "session_id", "kind", "level", "logger", "message", "pid"}
        assert lines[3]["exc"].startswith("Traceback (most recent call last):\n")
        assert lines[3]["exc"].endswith("ValueError: invalid literal for int() with base 10: 'x'")
        assert 'in parse\n    return int("x")' in lines[3]["exc"]
        assert (lines[4]["password"], lines[4]["redacted"]) == ("[REDACTED]", 2)
        assert all(r["session_id"] == "real" and r["kind"] == "message" for r in lines)

    def test_sessions_routed_as_the_handler_routes_them(self, tmp_path: Path) -> None:
        """A bound session_id wins, then the session_scope, then the sink's own id, then the environment."""
        run_program(
            tmp_path,
            LOGURU
            + """
logger.info("environment")
logger.bind(session_id="bound").info("bound")
with session_scope("scoped"):
    logger.info("in the scope")
logger.remove()
logger.add(codex_logging.LoguruSink(session_id="own", fsync="end"))
logger.info("own")
with session_scope("scoped2"):
    logger.info("scope over own")
""",
        )
        assert [r["message"] for r in records(tmp_path, "real")] == ["environment"]
        assert [r["message"] for r in records(tmp_path, "bound")] == ["bound"]
        assert [r["message"] for r in messages(records(tmp_path, "scoped"))] == ["in the scope"]
        assert [r["message"] for r in records(tmp_path, "own")] == ["own"]
        assert [r["message"] for r in messages(records(tmp_path, "scoped2"))] == ["scope over own"]

    def test_enqueue_routes_by_the_environment_and_keeps_the_exception_line(
        self, tmp_path: Path
    ) -> None:
        """With enqueue=True: the open scope's exported id, a bound id, and exc without loguru's locals."""
        run_program(
            tmp_path,
            LOGURU
            + """
logger.remove()
logger.add(codex_logging.loguru_sink, enqueue=True)
def divide(password):
    return 1 / 0
with session_scope("job"):
    logger.info("queued in the scope")
    try:
        divide("hunter2")
    except ZeroDivisionError:
        logger.exception("failed")
    logger.complete()
logger.bind(session_id="bound").info("bound")
logger.complete()
""",
        )
        job = messages(records(tmp_path, "job"))
        assert [r["message"] for r in job] == ["queued in the scope", "failed"]
        assert job[1]["exc"] == "ZeroDivisionError: division by zero"
        assert "hunter2" not in json.dumps(job)
        assert [r["message"] for r in records(tmp_path, "bound")] == ["bound"]

    def test_redact_off_and_a_bad_session_never_raise(self, tmp_path: Path) -> None:
        """LoguruSink(redact=False) keeps secrets; an invalid bound id is one stderr line, not an error."""
        done = run_program(
            tmp_path,
            LOGURU
            + """
logger.remove()
sink = codex_logging.LoguruSink(redact=False)
logger.add(sink)
logger.bind(password="hunter2").info("kept")
logger.bind(session_id="../x").info("dropped")
logger.bind(session_id="../x").info("dropped again")
print(sink.dropped)
""",
        )
        assert done.stdout == "2\n"
        assert done.stderr.count("codex_logging: dropped a record") == 1
        (line,) = records(tmp_path, exact=False)
        assert (line["message"], line["password"]) == ("kept", "hunter2")


VALUES = """
import dataclasses, datetime, decimal, enum, pathlib, uuid

class Color(enum.Enum):
    RED = "red"

class Size(enum.IntEnum):
    L = 3

class Pair(enum.Enum):
    AB = ("a", "b")

@dataclasses.dataclass
class Point:
    x: int
    api_key: str

class Model:  # what a pydantic (v2) model offers
    def __init__(self, **fields):
        self.fields = fields
    def model_dump(self):
        return dict(self.fields)

UTC = datetime.timezone.utc
VALUES = dict(
    when=datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
    naive=datetime.datetime(2026, 1, 2, 3, 4, 5),
    day=datetime.date(2026, 1, 2),
    clock=datetime.time(3, 4, 5),
    color=Color.RED,
    size=Size.L,
    pair=Pair.AB,
    id=uuid.UUID(int=1),
    price=decimal.Decimal("1.10"),
    path=pathlib.PurePosixPath("/srv/app"),
    point=Point(1, "k-123"),
    model=Model(name="ann", token="t-1", at=datetime.date(2026, 1, 2)),
    nested={Color.RED: [datetime.date(2026, 1, 2)]},
)
"""

EXPECTED_VALUES = {
    "when": "2026-01-02T03:04:05.600000+00:00",
    "naive": "2026-01-02T03:04:05",
    "day": "2026-01-02",
    "clock": "03:04:05",
    "color": "red",
    "size": 3,
    "pair": ["a", "b"],
    "id": "00000000-0000-0000-0000-000000000001",
    "price": "1.10",
    "path": "/srv/app",
    "point": {"x": 1, "api_key": "[REDACTED]"},
    "model": {"name": "ann", "token": "[REDACTED]", "at": "2026-01-02"},
    "nested": {"red": ["2026-01-02"]},
}


class TestValues:
    @pytest.mark.parametrize("host", ["stdlib", "structlog", "loguru"])
    def test_values_as_json_users_expect(self, tmp_path: Path, host: str) -> None:
        """Dates in ISO 8601 with T, enums as values, UUID/Decimal/Path as text, models as objects."""
        if host == "loguru":
            pytest.importorskip("loguru")
        calls = {
            "stdlib": "import logging\nfrom codex_logging import CodexHandler\n"
            "logging.getLogger().addHandler(CodexHandler())\n"
            "logging.getLogger('app').warning('values', extra=VALUES)\n",
            "structlog": "import structlog\nfrom codex_logging import configure_structlog\n"
            "configure_structlog(logger_factory=structlog.ReturnLoggerFactory())\n"
            "structlog.get_logger('app').warning('values', **VALUES)\n",
            "loguru": "from loguru import logger\nimport codex_logging\nlogger.remove()\n"
            "logger.add(codex_logging.loguru_sink)\n"
            "logger.bind(**VALUES).warning('values')\n",
        }
        run_program(tmp_path, VALUES + calls[host])
        (line,) = records(tmp_path)
        assert {key: line[key] for key in EXPECTED_VALUES} == EXPECTED_VALUES
        assert line["redacted"] == 2

    def test_query_json_prints_the_record_and_seq_only(self, tmp_path: Path) -> None:
        """codex-logs query --json prints each record's own fields plus seq, inventing none."""
        run_program(
            tmp_path,
            """
            import logging
            from codex_logging import CodexHandler, session_scope
            logging.getLogger().addHandler(CodexHandler())
            with session_scope("real"):
                logging.getLogger("app").warning("step", extra={"n": 1})
            """,
        )
        lines = records(tmp_path)
        out = codex_logs_in(tmp_path, "query", "--json", "--session-id", "real")
        assert out.returncode == 0, out.stderr
        printed = [json.loads(line) for line in out.stdout.splitlines()]
        assert printed == [{**line, "seq": seq} for seq, line in enumerate(lines, 1)]
        assert "role" not in printed[1]


LEVELS_PROGRAM = """
import logging
import structlog
from loguru import logger
import codex_logging
from codex_logging import CodexHandler, CodexProcessor

logging.addLevelName(5, "TRACE")
root = logging.getLogger()
root.addHandler(CodexHandler())
root.setLevel(1)
log = logging.getLogger("std")
log.log(5, "std trace")
log.debug("std debug")
log.log(25, "std level 25")
log.warning("std warning")
logger.remove()
logger.add(codex_logging.loguru_sink, level="TRACE")
logger.trace("loguru trace")
logger.info("loguru info")
logger.success("loguru success")
logger.error("loguru error")
structlog.configure(
    processors=[structlog.processors.add_log_level, CodexProcessor()],
    logger_factory=structlog.ReturnLoggerFactory())
structlog.get_logger().info("structlog info")
"""


class TestLevels:
    @pytest.fixture(autouse=True)
    def _loguru(self) -> None:
        pytest.importorskip("loguru")

    def test_any_level_by_name_and_number(self, tmp_path: Path) -> None:
        """levelno is written for other levels; --level filters by number and takes held names."""
        run_program(tmp_path, LEVELS_PROGRAM)
        lines = records(tmp_path)
        assert [(r["message"], r["level"], r.get("levelno")) for r in lines] == [
            ("std trace", "TRACE", 5),
            ("std debug", "DEBUG", None),
            ("std level 25", "Level 25", 25),
            ("std warning", "WARNING", None),
            ("loguru trace", "TRACE", 5),
            ("loguru info", "INFO", None),
            ("loguru success", "SUCCESS", 25),
            ("loguru error", "ERROR", None),
            ("structlog info", "INFO", None),
        ]

        def query(level: str) -> list[str]:
            out = codex_logs_in(tmp_path, "query", "--json", "--tail", "50", "--level", level)
            assert out.returncode == 0, out.stderr
            return [json.loads(line)["message"] for line in out.stdout.splitlines()]

        everything = [r["message"] for r in lines]
        assert query("trace") == everything
        assert query("1") == everything
        assert query("debug") == [m for m in everything if "trace" not in m]
        at_25 = ["std level 25", "std warning", "loguru success", "loguru error"]
        assert query("success") == at_25
        assert query("SUCCESS") == at_25
        assert query("level 25") == at_25
        assert query("Level 25") == at_25
        assert query("25") == at_25
        assert query("26") == ["std warning", "loguru error"]
        assert query("warn") == ["std warning", "loguru error"]
        assert query("critical") == []
        bad = codex_logs_in(tmp_path, "query", "--level", "loud")
        assert bad.returncode == 2
        assert bad.stderr.endswith(
            "error: argument --level: unknown level 'loud': choose from critical, debug, error,"
            " info, level 25,"
            " success, trace, warning, or a number\n"
        )
        assert len(bad.stderr.splitlines()) == 1
