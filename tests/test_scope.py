"""session_scope: start/end records, nesting, threads, asyncio, children, decorators."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import codex_logging
from codex_logging import CodexHandler, InvalidSessionId, session_scope
from codex_logging._write.session import current_session, stamped_session
from tests.conftest import read_lines, session_file


def kinds(sid: str) -> list[tuple[str, str]]:
    return [(r["kind"], r["message"]) for r in read_lines(session_file(sid))]


class TestRecords:
    def test_start_and_end_with_no_logging_configured(self) -> None:
        """Exactly one start and one end record, with no handler anywhere."""
        with session_scope("s1", meta={"job": "nightly"}) as sid:
            assert sid == "s1"
            assert os.environ["CODEX_SESSION_ID"] == "s1"
        start, end = read_lines(session_file("s1"))
        assert (start["kind"], start["job"], start["level"]) == ("start", "nightly", "INFO")
        assert (end["kind"], end["status"]) == ("end", "ok")
        assert 0 <= end["duration_s"] < 5
        assert "CODEX_SESSION_ID" not in os.environ

    def test_a_meta_key_the_scope_writes_itself_is_kept_beside_it(self) -> None:
        """meta host, parent_scope and rejected_session_id are kept as extra.<key>, the scope's beside."""
        meta = {"host": "db-3.internal", "parent_scope": "p", "rejected_session_id": "r", "ts": 1}
        with session_scope("s1", meta=meta):
            pass
        start = read_lines(session_file("s1"))[0]
        assert start["host"] == socket.gethostname()
        assert start["extra.host"] == "db-3.internal"
        assert (start["parent_scope"], start["rejected_session_id"]) == (
            "p",
            "r",
        )  # none written here
        assert (start["extra.ts"], type(start["ts"])) == (1, float)

    def test_error_end_record_and_propagation(self) -> None:
        """On an exception the end record says error, its type and message, and it propagates."""
        with pytest.raises(ValueError, match="bad input"), session_scope("s1"):
            raise ValueError("bad input")
        end = read_lines(session_file("s1"))[-1]
        assert (end["status"], end["error_type"], end["error"], end["level"]) == (
            "error", "ValueError", "bad input", "ERROR",
        )  # fmt: skip
        assert end["exc"].endswith("ValueError: bad input")

    def test_invalid_id_raises_before_writing(self, tmp_path: Path) -> None:
        """An invalid id raises InvalidSessionId and writes nothing."""
        with pytest.raises(InvalidSessionId):
            session_scope("../x")
        assert not (tmp_path / ".codex").exists()

    def test_environment_restored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The previous CODEX_SESSION_ID comes back on exit, and the scope uses it by default."""
        monkeypatch.setenv("CODEX_SESSION_ID", "outer")
        with session_scope() as sid:
            assert sid == "outer"
        with session_scope("inner"):
            assert os.environ["CODEX_SESSION_ID"] == "inner"
        assert os.environ["CODEX_SESSION_ID"] == "outer"

    def test_handler_does_not_duplicate_scope_records(self) -> None:
        """With a CodexHandler on the root the start and end records are still written once."""
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.DEBUG)
        with session_scope("s1"):
            logging.getLogger("app").info("inside")
        assert kinds("s1") == [
            ("start", "session start"),
            ("message", "inside"),
            ("end", "session end"),
        ]

    def test_write_failure_reported_once_not_raised(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A scope whose folder cannot be made says so once on stderr and runs the block."""
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("CODEX_SESSIONS_DIR", str(tmp_path / "file" / "s"))
        ran = []
        with session_scope("s1"):
            ran.append(1)
        assert ran == [1]
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"codex_logging: dropped a record for {tmp_path / 'file' / 's'}")


class TestNesting:
    def test_nested_scopes(self) -> None:
        """An inner scope with another id has its own records; the outer resumes after."""
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.INFO)
        with session_scope("outer"):
            with session_scope("inner"):
                logging.getLogger("a").info("in inner")
            logging.getLogger("a").info("in outer")
        assert kinds("inner") == [
            ("start", "session start"),
            ("message", "in inner"),
            ("end", "session end"),
        ]
        assert kinds("outer") == [
            ("start", "session start"),
            ("message", "in outer"),
            ("end", "session end"),
        ]

    def test_inner_scope_without_id_joins_outer(self) -> None:
        """A nested scope with no id writes into the enclosing session."""
        with session_scope("outer"), session_scope() as inner:
            assert inner == "outer"
        assert [k for k, _ in kinds("outer")] == ["start", "start", "end", "end"]

    def test_threads_have_their_own_sessions(self) -> None:
        """Concurrent scopes in threads route their records to their own sessions."""
        logging.getLogger().addHandler(CodexHandler())
        logging.getLogger().setLevel(logging.INFO)
        barrier = threading.Barrier(4)

        def work(n: int) -> None:
            with session_scope(f"t{n}"):
                barrier.wait(timeout=10)
                for i in range(20):
                    logging.getLogger("w").info("%d-%d", n, i)
                barrier.wait(timeout=10)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in range(4):
            messages = [m for k, m in kinds(f"t{n}") if k == "message"]
            assert messages == [f"{n}-{i}" for i in range(20)]

    def test_asyncio_tasks_have_their_own_sessions(self) -> None:
        """Concurrent asyncio tasks each see their own scope."""

        async def task(n: int) -> str | None:
            async with session_scope(f"a{n}"):
                await asyncio.sleep(0.01)
                return current_session.get()

        async def main() -> list[str | None]:
            return list(await asyncio.gather(*(task(n) for n in range(3))))

        assert asyncio.run(main()) == ["a0", "a1", "a2"]
        assert [k for k, _ in kinds("a1")] == ["start", "end"]


class TestDecorator:
    def test_sync_function(self) -> None:
        """As a decorator each call is one session of its own start and end."""

        @session_scope("d1")
        def work(x: int) -> int:
            assert current_session.get() == "d1"
            return x * 2

        assert work(2) == 4
        assert work(3) == 6
        assert [k for k, _ in kinds("d1")] == ["start", "end", "start", "end"]

    def test_coroutine_function_wraps_the_awaited_body(self) -> None:
        """On a coroutine function the end record is written after the body ran."""
        seen: list[str | None] = []

        @session_scope("d2")
        async def work() -> None:
            await asyncio.sleep(0)
            seen.append(current_session.get())
            raise KeyError("late")

        with pytest.raises(KeyError):
            asyncio.run(work())
        assert seen == ["d2"]
        assert read_lines(session_file("d2"))[-1]["status"] == "error"


CHILD = """
import logging, os
from codex_logging import CodexHandler
logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
logging.getLogger("child").info("from child %s", os.getpid())
"""


class TestChildren:
    def test_child_process_inherits_the_session(self, tmp_path: Path) -> None:
        """A subprocess started inside a scope writes into the same session file."""
        with session_scope("family"):
            subprocess.run([sys.executable, "-c", CHILD], check=True, timeout=60, cwd=tmp_path)
        records = read_lines(session_file("family"))
        assert [r["kind"] for r in records] == ["start", "message", "end"]
        assert records[1]["logger"] == "child"
        assert records[1]["pid"] != os.getpid()


class TestIdentityAndEnvironment:
    def test_two_anonymous_scopes_are_two_sessions(self) -> None:
        """Without CODEX_SESSION_ID, each anonymous scope is a new session; nothing stays exported."""
        with session_scope() as first:
            pass
        with session_scope() as second:
            pass
        assert first != second
        assert "CODEX_SESSION_ID" not in os.environ
        assert "CODEX_SESSIONS_DIR" not in os.environ
        assert [r["kind"] for r in read_lines(session_file(first))] == ["start", "end"]

    def test_anonymous_scope_joins_the_programs_session(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A CODEX_SESSION_ID set before the scope is joined, and kept afterwards."""
        monkeypatch.setenv("CODEX_SESSION_ID", "run-7")
        monkeypatch.setenv("CODEX_SESSIONS_DIR", "relative/dir")
        with session_scope() as sid:
            assert sid == "run-7"
            assert os.environ["CODEX_SESSIONS_DIR"] == str(Path("relative/dir").resolve())
        assert os.environ["CODEX_SESSION_ID"] == "run-7"
        assert os.environ["CODEX_SESSIONS_DIR"] == "relative/dir"

    def test_overlapping_thread_scopes_exit_first_in_first_out(self) -> None:
        """Scopes that overlap in threads and exit in entry order leave the environment as found."""
        entered = [threading.Event(), threading.Event()]
        release = [threading.Event(), threading.Event()]
        ids: list[str] = []

        def run(index: int) -> None:
            with session_scope() as sid:
                ids.append(sid)
                entered[index].set()
                release[index].wait(10)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        threads[0].start()
        assert entered[0].wait(10)
        threads[1].start()
        assert entered[1].wait(10)
        assert len(set(ids)) == 2  # an anonymous scope never joins another thread's
        release[0].set()
        threads[0].join(10)
        assert os.environ["CODEX_SESSION_ID"] == ids[1]  # the one still open
        release[1].set()
        threads[1].join(10)
        assert "CODEX_SESSION_ID" not in os.environ
        handler = CodexHandler()
        handler.handle(logging.makeLogRecord({"msg": "after"}))
        handler.close()
        assert os.environ["CODEX_SESSION_ID"] not in ids  # not a closed session

    def test_get_session_id_inside_a_scope(self) -> None:
        """get_session_id() is the scope's session inside it, and persists for the process outside."""
        from codex_logging import get_session_id

        with session_scope("inside"):
            assert get_session_id() == "inside"
        outside = get_session_id()
        assert outside != "inside"
        assert os.environ["CODEX_SESSION_ID"] == outside == get_session_id()

    @pytest.mark.parametrize(("code", "status"), [(0, "ok"), (None, "ok"), (3, "error")])
    def test_system_exit(self, code: int | None, status: str) -> None:
        """sys.exit(0) and sys.exit() end the scope ok; another code is an error."""
        with pytest.raises(SystemExit), session_scope("ex"):
            sys.exit(code)
        assert read_lines(session_file("ex"))[-1]["status"] == status

    def test_one_instance_entered_from_many_threads(self) -> None:
        """A shared scope instance entered from 4 threads at once keeps each entry apart."""
        scope = session_scope(meta={"job": "shared"})
        barrier = threading.Barrier(4)
        failures: list[BaseException] = []
        ids: list[str] = []

        def run() -> None:
            try:
                for _ in range(20):
                    with scope as sid:
                        ids.append(sid)
                        barrier.wait(10)
            except BaseException as exc:  # collected: a thread's error must fail the test
                failures.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert failures == []
        assert len(set(ids)) == 80
        assert "CODEX_SESSION_ID" not in os.environ
        for sid in set(ids):
            assert [r["kind"] for r in read_lines(session_file(sid))] == ["start", "end"]

    def test_one_instance_entered_from_many_tasks(self) -> None:
        """A shared scope instance used by concurrent asyncio tasks keeps each entry apart."""
        scope = session_scope()

        async def task(n: int) -> str:
            async with scope as sid:
                await asyncio.sleep(0.01 * (3 - n))
                assert current_session.get() == sid
                return sid

        async def main() -> list[str]:
            return await asyncio.gather(*(task(n) for n in range(3)))

        ids = asyncio.run(main())
        assert len(set(ids)) == 3
        assert current_session.get() is None

    def test_child_in_another_directory_writes_to_the_same_folder(self, tmp_path: Path) -> None:
        """A hook that cds elsewhere inside a scope writes to the scope's folder, not sub/.codex."""
        (tmp_path / "sub").mkdir()
        hook = (
            "import logging\n"
            "from codex_logging import CodexHandler\n"
            "logging.getLogger().addHandler(CodexHandler())\n"
            "logging.getLogger('hook').warning('from the hook')\n"
        )
        root = Path(__file__).resolve().parent.parent
        env_path = {"PYTHONPATH": str(root)}
        with session_scope("chain"):
            subprocess.run(
                [sys.executable, "-c", hook],
                cwd=tmp_path / "sub",
                env={**os.environ, **env_path},
                check=True,
                timeout=60,
            )
        assert [r["message"] for r in read_lines(session_file("chain"))] == [
            "session start",
            "from the hook",
            "session end",
        ]
        assert not (tmp_path / "sub" / ".codex").exists()


class TestPools:
    @pytest.mark.parametrize("method", ["fork", "spawn"])
    def test_pool_workers_join_the_scope(self, method: str, tmp_path: Path) -> None:
        """multiprocessing pool workers started inside a scope write to its session and folder."""
        import multiprocessing

        from tests import pool_worker

        pool_worker.configure()
        context = multiprocessing.get_context(method)
        with session_scope("pooled"):
            with context.Pool(2, initializer=pool_worker.configure) as pool:
                assert pool.map(pool_worker.work, range(20)) == list(range(20))
            pool.join()
        records = read_lines(session_file("pooled"))
        assert [r["kind"] for r in (records[0], records[-1])] == ["start", "end"]
        assert sorted(r["message"] for r in records[1:-1]) == sorted(f"item {n}" for n in range(20))
        assert {r["pid"] for r in records[1:-1]} - {os.getpid()}

    def test_forked_children_get_the_signal_handling_the_scope_found(self, tmp_path: Path) -> None:
        """A fork's SIGTERM is the default action again (a Python handler could leave a pool's
        worker waiting for good on the task queue's lock, and Pool.terminate() with it); a child
        that opens a scope of its own has it recorded."""
        script = """
import multiprocessing, os, signal, sys, time
from codex_logging import session_scope

def default(_):
    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

with session_scope("forked"):
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    with multiprocessing.get_context("fork").Pool(2) as pool:
        print(all(pool.map(default, range(8))))
    pid = os.fork()
    if pid == 0:
        with session_scope("child"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
"""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
        env["CODEX_SESSIONS_DIR"] = str(tmp_path / "s")
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", script],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stdout, done.stderr) == (0, "True\nTrue\n", "")
        child = read_lines(tmp_path / "s" / "child.ndjson")
        assert (child[-1]["kind"], child[-1]["status"]) == ("end", "terminated")
        parent = read_lines(tmp_path / "s" / "forked.ndjson")
        assert [(r["kind"], r.get("status")) for r in parent] == [("start", None), ("end", "ok")]


QUEUED = """
import logging, logging.handlers, os, queue, sys
import structlog
from codex_logging import CodexHandler, configure_structlog, session_scope

q = queue.SimpleQueue()
root = logging.getLogger()
root.addHandler(logging.handlers.QueueHandler(q))
root.setLevel(logging.INFO)
listener = logging.handlers.QueueListener(q, CodexHandler())
listener.start()
if sys.argv[1] == "structlog":
    configure_structlog(to_stdlib=True)
    log = structlog.get_logger("app")
else:
    log = logging.getLogger("app")
log.info("before any scope")
listener.stop()  # drained: written before any scope opens
listener.start()
before = logging.getLogRecordFactory()
with session_scope("job-1"):
    for i in range(300):
        log.info("inside the scope %d", i)
assert logging.getLogRecordFactory() is not before
log.info("after the scope")
listener.stop()
"""


class TestBehindAQueue:
    @pytest.mark.parametrize("outer", [None, "outer"])
    @pytest.mark.parametrize("api", ["logging", "structlog"])
    def test_records_keep_the_scope_they_were_logged_in(
        self, tmp_path: Path, outer: str | None, api: str
    ) -> None:
        """Behind QueueHandler -> QueueListener(CodexHandler), a record goes to the scope it was made in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
        if outer is not None:
            env["CODEX_SESSION_ID"] = outer
        subprocess.run(
            [sys.executable, "-c", QUEUED, api], check=True, timeout=60, cwd=tmp_path, env=env
        )
        folder = tmp_path / ".codex" / "sessions"
        job = read_lines(folder / "job-1.ndjson")
        # The end record is written when the scope exits, maybe before the
        # listener has written the last messages: only the start is first.
        assert job[0]["kind"] == "start"
        assert [r["kind"] for r in job].count("end") == 1
        messages = [r["message"] for r in job if r["kind"] == "message"]
        assert messages == [f"inside the scope {i}" for i in range(300)]
        others = sorted(
            path.name for path in folder.glob("*.ndjson") if path.name != "job-1.ndjson"
        )
        # Outside the scope: CODEX_SESSION_ID, or the uuid the first record
        # generated and exported.
        assert len(others) == 1
        if outer is not None:
            assert others == ["outer.ndjson"]
        rest = read_lines(folder / others[0])
        assert [r["message"] for r in rest] == ["before any scope", "after the scope"]
        assert not any("_codex_session" in r for r in job + rest)

    def test_a_copied_record_keeps_its_scope_and_carries_nothing_of_ours(self) -> None:
        """QueueHandler.prepare's copy (3.12+) still names the scope; no attribute is added to either."""
        plain = set(vars(logging.makeLogRecord({})))
        with session_scope("job"):
            record = logging.getLogger("app").makeRecord("app", logging.INFO, "f", 1, "m", (), None)
        outside = logging.getLogger("app").makeRecord("app", logging.INFO, "f", 1, "m", (), None)
        copied = copy.copy(record)
        assert stamped_session(record) == stamped_session(copied) == "job"
        assert stamped_session(outside) is None
        assert set(vars(record)) <= plain | {"taskName"}
        assert set(vars(copied)) <= plain | {"taskName"}

    def test_no_scope_leaves_the_record_factory_alone(self, tmp_path: Path) -> None:
        """A program that opens no session_scope keeps logging's own record factory."""
        code = (
            "import logging; from codex_logging import CodexHandler; "
            "logging.basicConfig(level=logging.INFO, handlers=[CodexHandler(session_id='s')]); "
            "logging.info('x'); assert logging.getLogRecordFactory() is logging.LogRecord"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path)


class TestChildEnvironment:
    """child_env() / scope.env() per thread and task; the rule os.environ follows."""

    def test_child_env_names_the_current_scope_in_each_task(self) -> None:
        """Six tasks each in a scope: child_env() in each names its own, whatever opened last."""
        seen: dict[int, dict[str, str]] = {}

        async def job(n: int, gate: asyncio.Event) -> None:
            with session_scope(f"task-{n}"):
                await gate.wait()  # all six open at once
                seen[n] = codex_logging.child_env()

        async def main() -> None:
            gate = asyncio.Event()
            tasks = [asyncio.create_task(job(n, gate)) for n in range(6)]
            await asyncio.sleep(0.05)
            gate.set()
            await asyncio.gather(*tasks)

        asyncio.run(main())
        for n, env in seen.items():
            assert env["CODEX_SESSION_ID"] == f"task-{n}"
            assert env["CODEX_SESSIONS_DIR"] == str(Path(".codex/sessions").resolve())
            assert env["CODEX_PARENT_SCOPE"].startswith(f"{os.getpid()}.")
        assert len({env["CODEX_PARENT_SCOPE"] for env in seen.values()}) == 6
        assert len(seen) == 6

    def test_environment_names_the_scope_enclosing_every_open_one(self) -> None:
        """Nested: the innermost; tasks inside a scope: that scope; unrelated overlap: as before."""
        os.environ["CODEX_SESSION_ID"] = "program"
        observed: list[str | None] = []

        async def job(n: int, gate: asyncio.Event) -> None:
            with session_scope(f"job-{n}"):
                await gate.wait()

        async def together() -> None:
            gate = asyncio.Event()
            tasks = [asyncio.create_task(job(n, gate)) for n in range(3)]
            await asyncio.sleep(0.02)  # all three open now, job-2 the newest
            observed.append(os.environ.get("CODEX_SESSION_ID"))
            gate.set()
            await asyncio.gather(*tasks)

        async def main() -> None:
            with session_scope("outer"):
                with session_scope("inner"):
                    observed.append(os.environ["CODEX_SESSION_ID"])
                await together()  # three jobs open inside "outer"
            await together()  # three jobs open with nothing around them

        asyncio.run(main())
        assert observed == ["inner", "outer", "program"]
        assert os.environ["CODEX_SESSION_ID"] == "program"

    def test_a_lone_task_scope_is_exported(self) -> None:
        """One task's scope alone open: os.environ names it (children join it without help)."""

        async def main() -> str | None:
            with session_scope("alone"):
                await asyncio.sleep(0)
                return os.environ.get("CODEX_SESSION_ID")

        assert asyncio.run(main()) == "alone"

    def test_threads_get_their_own_scope_and_none_without_one(self) -> None:
        """In each thread child_env() names that thread's scope; a thread with none gets os.environ."""
        barrier = threading.Barrier(4)
        seen: dict[str, str | None] = {}

        def run(name: str) -> None:
            with session_scope(name):
                barrier.wait(10)
                seen[name] = codex_logging.child_env()["CODEX_SESSION_ID"]
                barrier.wait(10)

        def bare() -> None:
            barrier.wait(10)
            seen["bare"] = codex_logging.child_env().get("CODEX_SESSION_ID")
            barrier.wait(10)

        threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(3)]
        threads.append(threading.Thread(target=bare))
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen == {"t0": "t0", "t1": "t1", "t2": "t2", "bare": None}

    def test_scope_env_and_its_misuse(self) -> None:
        """scope.env() is this instance's entry here; outside it, a named error."""
        scope = session_scope("mine")
        with pytest.raises(codex_logging.ScopeNotEnteredError, match="outside that scope"):
            scope.env()
        with scope, session_scope("nested"):
            env = scope.env({"PATH": "/bin"})
            assert env["CODEX_SESSION_ID"] == "mine"
            assert env["PATH"] == "/bin"
            assert codex_logging.child_env()["CODEX_SESSION_ID"] == "nested"

    def test_a_child_records_the_scope_it_was_started_in(self, tmp_path: Path) -> None:
        """A child's own anonymous scope joins the session and names its parent scope."""
        code = "from codex_logging import session_scope\nwith session_scope(): pass\n"
        with session_scope("family"):
            env = codex_logging.child_env()
            subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        records = read_lines(session_file("family"))
        assert [r["kind"] for r in records] == ["start", "start", "end", "end"]
        assert records[1]["parent_scope"] == env["CODEX_PARENT_SCOPE"]
        assert "parent_scope" not in records[0]

    def test_incremental_target_matches_a_full_recount(self) -> None:
        """Random trees entered and exited in random order: os.environ always names the rule's scope."""
        import random

        from codex_logging._write import scope as scope_module

        rng = random.Random(7)
        for _round in range(200):
            env = scope_module._Environment()
            open_entries: list[scope_module._Entry] = []
            for _step in range(30):
                if open_entries and rng.random() < 0.45:
                    gone = open_entries.pop(rng.randrange(len(open_entries)))
                    env.exit(gone)
                else:
                    parent = rng.choice([None, *open_entries]) if rng.random() < 0.8 else None
                    sid = rng.choice(["a", "b", "c", "d"])
                    entry = scope_module._Entry(sid, "/f", None, 0.0, [], parent)  # type: ignore[arg-type]
                    open_entries.append(entry)
                    env.enter(entry)
                target, _ = scope_module._enclosing(open_entries)
                if target is None and len({e.session_id for e in open_entries}) == 1:
                    target = open_entries[0]
                expected = target.session_id if target is not None else None
                assert os.environ.get("CODEX_SESSION_ID") == expected
            for entry in open_entries:
                env.exit(entry)
            assert "CODEX_SESSION_ID" not in os.environ


class TestSignals:
    def test_handlers_are_put_back_and_a_later_one_is_kept(self) -> None:
        """The scope's SIGTERM/SIGHUP handler is removed on exit; one the program set meanwhile stays."""
        import signal

        before = signal.getsignal(signal.SIGTERM)
        with session_scope("s"):
            assert signal.getsignal(signal.SIGTERM) != before
        assert signal.getsignal(signal.SIGTERM) == before
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL

        def own(_signum: int, _frame: object) -> None:
            pass

        try:
            with session_scope("s"):
                signal.signal(signal.SIGTERM, own)
            assert signal.getsignal(signal.SIGTERM) is own
        finally:
            signal.signal(signal.SIGTERM, before)

    def test_opt_out_and_other_threads_leave_signals_alone(self) -> None:
        """record_signals=False, and a scope in another thread, install nothing."""
        import signal

        before = signal.getsignal(signal.SIGTERM)
        with session_scope("s", record_signals=False):
            assert signal.getsignal(signal.SIGTERM) == before
        seen: list[object] = []

        def run() -> None:
            with session_scope("t"):
                seen.append(signal.getsignal(signal.SIGTERM))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(10)
        assert seen == [before]
