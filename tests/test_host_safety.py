"""The host program is never hung or crashed: signal handlers, finalizers, -W error, shared folders."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from codex_logging import CodexHandler, UnsafePathError
from tests.conftest import read_lines

ROOT = Path(__file__).resolve().parent.parent
#: Only catches a hang: each script takes well under a second when it works.
HANG: float = 60


def run_script(code: str, cwd: Path, *args: str, extra_env: dict[str, str] | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    done = subprocess.run(
        [sys.executable, *args, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


SIGNAL_SCRIPT = """
import logging, signal, sys
from codex_logging import CodexHandler
handler = CodexHandler("s")
log = logging.getLogger("main")
log.addHandler(handler)
log.setLevel(logging.INFO)
fired = [0]
def on_alarm(signum, frame):
    fired[0] += 1
    log.warning("from the signal handler", extra={"session_id": f"sig{fired[0] % 97}"})
signal.signal(signal.SIGALRM, on_alarm)
# Every 2 ms: at 1 ms, on a slow machine a handler's own write (a new file)
# outlasted the interval, the handlers nested a thousand deep and the script
# died of RecursionError, which says nothing about the writer.
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
# 100 sessions against 64 cached descriptors: the writer's lock is taken on
# almost every record, so the signal lands inside it again and again.
for i in range(20000):
    log.info("main %d", i, extra={"session_id": f"main{i % 100}"})
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print(fired[0])
"""

FINALIZER_SCRIPT = """
import gc, logging
from codex_logging import CodexHandler
logging.getLogger().addHandler(CodexHandler("s"))
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("fin")
count = [0]
class Noisy:
    def __init__(self):
        self.me = self  # a cycle: collected by the gc, at any allocation
    def __del__(self):
        # Rotating sessions: the write needs the writer's lock, often while the
        # interrupted write of the main loop holds it.
        count[0] += 1
        log.warning("finalized", extra={"session_id": f"fin{count[0] % 90}"})
gc.set_threshold(5, 1, 1)
for i in range(5000):
    Noisy()
    log.info("working %d", i, extra={"session_id": f"w{i % 90}"})
keep = [Noisy() for _ in range(200)]  # finalized at exit, inside logging.shutdown()
print("done")
"""


class TestReentrancy:
    def test_signal_handler_that_logs_never_hangs(self, tmp_path: Path) -> None:
        """A SIGALRM handler logging while the main thread writes to 100 sessions: no hang, no loss."""
        fired = int(run_script(SIGNAL_SCRIPT, tmp_path))
        assert fired > 0, "the precondition failed: no signal arrived during the writes"
        folder = tmp_path / "s"
        main = sum(len(read_lines(p)) for p in folder.glob("main*.ndjson"))
        from_signal = sum(len(read_lines(p)) for p in folder.glob("sig*.ndjson"))
        assert (main, from_signal) == (20000, fired)

    def test_finalizer_that_logs_never_hangs(self, tmp_path: Path) -> None:
        """__del__ methods that log, run by the gc mid-write and at exit: no hang, whole lines."""
        assert run_script(FINALIZER_SCRIPT, tmp_path) == "done\n"
        finalized = sum(len(read_lines(p)) for p in (tmp_path / "s").glob("fin*.ndjson"))
        assert finalized >= 5000  # those at exit may run after the handler closed
        working = sum(len(read_lines(p)) for p in (tmp_path / "s").glob("w*.ndjson"))
        assert working == 5000

    def test_write_reentered_inside_the_writers_lock(self, tmp_path: Path) -> None:
        """What a finalizer or signal handler meets: a write on the thread inside the lock finishes."""
        from codex_logging._write.writer import WRITER

        handler = CodexHandler(tmp_path, "r")
        done = threading.Event()

        def interrupted() -> None:
            with WRITER._locked():  # the state a gc finalizer interrupts
                for i in range(100):  # new files, evictions: the paths that need the lock
                    record = logging.makeLogRecord({"msg": f"m{i}", "session_id": f"r{i}"})
                    handler.handle(record)
            done.set()

        thread = threading.Thread(target=interrupted, daemon=True)
        thread.start()
        assert done.wait(HANG), "a re-entered write waited on the lock its own thread holds"
        assert sum(len(read_lines(p)) for p in tmp_path.glob("r*.ndjson")) == 100
        assert handler.dropped == 0


WARNINGS_AS_ERRORS_SCRIPT = """
import structlog, sys
from codex_logging import configure_structlog, session_scope
open("blocker", "w").close()
configure_structlog(sessions_dir="blocker/sessions")
structlog.get_logger().info("cannot be written")
with session_scope("s"):
    structlog.get_logger().info("inside")
try:
    with session_scope("s"):
        raise KeyError("the program's own error")
except KeyError as exc:
    print("kept:", exc)
"""


class TestWarningsAsErrors:
    def test_failures_never_become_exceptions_under_w_error(self, tmp_path: Path) -> None:
        """Under -W error a failing write never raises, on entry, on exit or per event."""
        out = run_script(WARNINGS_AS_ERRORS_SCRIPT, tmp_path, "-W", "error")
        assert out == 'kept: "the program\'s own error"\n'


class TestSharedFolders:
    def test_folder_owned_by_another_user_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A sessions folder made 0777 by another user is refused, with one line saying why."""
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder to another user")
        folder = tmp_path / ".codex" / "sessions"
        folder.mkdir(parents=True, mode=0o700)
        folder.chmod(0o777)
        os.chown(folder, 65534, 65534)
        handler = CodexHandler(folder, "s")
        handler.handle(logging.makeLogRecord({"msg": "secret work"}))
        handler.handle(logging.makeLogRecord({"msg": "more"}))
        assert list(folder.iterdir()) == []
        (line,) = capsys.readouterr().err.splitlines()
        assert f"refusing {folder}: owned by uid 65534, not 0; use a folder of your own" in line
        assert "CODEX_ALLOW_SHARED=1" in line
        assert handler.dropped == 2
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777

    def test_our_own_shared_folders_are_tightened(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A .codex and sessions folder of ours left 0775 / 0777 are made 0700, said once, and used."""
        codex = tmp_path / ".codex"
        (codex / "sessions").mkdir(parents=True)
        codex.chmod(0o775)
        (codex / "sessions").chmod(0o777)
        handler = CodexHandler(codex / "sessions", "s")
        for n in range(3):
            handler.handle(logging.makeLogRecord({"msg": f"kept {n}"}))
        assert [r["message"] for r in read_lines(codex / "sessions" / "s.ndjson")] == [
            "kept 0",
            "kept 1",
            "kept 2",
        ]
        assert (handler.dropped, stat.S_IMODE(codex.stat().st_mode)) == (0, 0o700)
        assert stat.S_IMODE((codex / "sessions").stat().st_mode) == 0o700
        said = "was writable by group or other (mode {}); tightened it to 0700"
        assert sorted(capsys.readouterr().err.splitlines()) == [
            f"codex_logging: {codex} {said.format('0775')}",
            f"codex_logging: {codex / 'sessions'} {said.format('0777')}",
        ]

    def test_other_folders_of_ours_are_refused_not_changed(self, tmp_path: Path) -> None:
        """A group-writable folder named by the program, not .codex's, is refused and left as it is."""
        folder = tmp_path / "team"
        folder.mkdir()
        folder.chmod(0o775)
        handler = CodexHandler(folder, "s")
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        assert (handler.dropped, stat.S_IMODE(folder.stat().st_mode)) == (1, 0o775)

    def test_symlinked_codex_folder_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A .codex that is a symlink is refused with one line naming it and the fix."""
        (tmp_path / "elsewhere" / "sessions").mkdir(parents=True, mode=0o700)
        (tmp_path / ".codex").symlink_to(tmp_path / "elsewhere")
        handler = CodexHandler(tmp_path / ".codex" / "sessions", "s")
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        (line,) = capsys.readouterr().err.splitlines()
        assert f"refusing {tmp_path / '.codex'}: it is a symlink; replace it with a folder" in line
        assert (handler.dropped, list((tmp_path / "elsewhere" / "sessions").iterdir())) == (1, [])

    def test_sessions_path_that_is_a_file_says_so(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file where the sessions folder should be is named as such, not as a symlink."""
        (tmp_path / "sessions").write_text("")
        handler = CodexHandler(tmp_path / "sessions", "s")
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        (line,) = capsys.readouterr().err.splitlines()
        assert f"the sessions folder {tmp_path / 'sessions'} is not a folder" in line
        assert "symlink" not in line

    def test_parent_codex_folder_is_checked(self, tmp_path: Path) -> None:
        """A world-writable .codex of another user above the sessions folder is refused too."""
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder to another user")
        (tmp_path / ".codex" / "sessions").mkdir(parents=True, mode=0o700)
        (tmp_path / ".codex").chmod(0o777)
        os.chown(tmp_path / ".codex", 65534, 65534)
        handler = CodexHandler(tmp_path / ".codex" / "sessions", "s")
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        assert handler.dropped == 1

    def test_nothing_is_made_inside_a_shared_codex_folder(self, tmp_path: Path) -> None:
        """Another user's world-writable .codex is refused before a sessions folder is made inside it."""
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder to another user")
        (tmp_path / ".codex").mkdir(mode=0o700)
        (tmp_path / ".codex").chmod(0o777)
        os.chown(tmp_path / ".codex", 65534, 65534)
        handler = CodexHandler(tmp_path / ".codex" / "sessions", "s")
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        assert (list((tmp_path / ".codex").iterdir()), handler.dropped) == ([], 1)

    def test_file_owned_by_another_user_is_refused(self, tmp_path: Path) -> None:
        """A session file planted by another user is not appended to."""
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user")
        folder = tmp_path / "s"
        folder.mkdir(mode=0o700)
        planted = folder / "s.ndjson"
        planted.write_text("")
        planted.chmod(0o600)
        os.chown(planted, 65534, 65534)
        handler = CodexHandler(folder, "s")
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        assert (planted.read_text(), handler.dropped) == ("", 1)

    def test_error_type_is_public(self, tmp_path: Path) -> None:
        """The refusal is an UnsafePathError, a PermissionError."""
        from codex_logging._settings import check_private

        folder = tmp_path / "open"
        folder.mkdir()
        folder.chmod(0o777)
        with pytest.raises(UnsafePathError) as caught:
            check_private(str(folder), folder.stat())
        assert isinstance(caught.value, PermissionError)

    def test_opt_out_for_deliberate_sharing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CODEX_ALLOW_SHARED=1 writes into a group-writable folder."""
        monkeypatch.setenv("CODEX_ALLOW_SHARED", "1")
        folder = tmp_path / "team"
        folder.mkdir()
        folder.chmod(0o775)
        handler = CodexHandler(folder, "s")
        handler.handle(logging.makeLogRecord({"msg": "shared on purpose"}))
        assert [r["message"] for r in read_lines(folder / "s.ndjson")] == ["shared on purpose"]

    def test_sticky_folder_is_accepted(self, tmp_path: Path) -> None:
        """A sticky world-writable folder (like /tmp) may hold a private sessions file."""
        folder = tmp_path / "tmpish"
        folder.mkdir()
        folder.chmod(0o1777)
        handler = CodexHandler(folder, "s")
        handler.handle(logging.makeLogRecord({"msg": "ok"}))
        rec = json.loads((folder / "s.ndjson").read_text())
        assert rec["message"] == "ok"


class TestSharedDatabase:
    def test_world_writable_database_is_refused(self, tmp_path: Path) -> None:
        """A database pre-created 0666 by someone else is never written: one clear error."""
        from codex_logging import sync_to_sqlite

        (tmp_path / "s").mkdir(mode=0o700)
        (tmp_path / "s" / "a.ndjson").write_text('{"message": "secret"}\n')
        db = tmp_path / "shared.db"
        db.write_bytes(b"")
        db.chmod(0o666)
        with pytest.raises(UnsafePathError, match=r"writable by group or other \(mode 0666\)"):
            sync_to_sqlite(db, tmp_path / "s")
        assert db.read_bytes() == b""

    def test_cli_says_it_in_one_line(self, tmp_path: Path) -> None:
        """codex-logs sync into a shared database folder: one stderr line, exit 2."""
        folder = tmp_path / "team"
        folder.mkdir()
        folder.chmod(0o777)
        (tmp_path / "s").mkdir(mode=0o700)
        (tmp_path / "s" / "a.ndjson").write_text('{"message": "x"}\n')
        done = subprocess.run(
            [str(Path(sys.executable).parent / "codex-logs"), "sync", "--db",
             str(folder / "m.db"), "--sessions-dir", str(tmp_path / "s")],
            capture_output=True, text=True, timeout=HANG, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"codex-logs sync: error: refusing {folder}: writable by group")
        assert not (folder / "m.db").exists()

    def test_opt_out_writes_the_shared_database(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CODEX_ALLOW_SHARED=1 syncs into a group-writable database on purpose."""
        from codex_logging import sync_to_sqlite

        monkeypatch.setenv("CODEX_ALLOW_SHARED", "1")
        (tmp_path / "s").mkdir(mode=0o700)
        (tmp_path / "s" / "a.ndjson").write_text('{"message": "x"}\n')
        db = tmp_path / "team.db"
        db.write_bytes(b"")
        db.chmod(0o664)
        assert sync_to_sqlite(db, tmp_path / "s").rows_inserted == 1
