"""Host faults never lose a record in silence: a removed folder, no descriptors, no space, a bad id."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_logging import CodexProcessor, sync_to_sqlite
from codex_logging._write.writer import RECHECK_SECONDS, Writer
from tests.conftest import read_lines

ROOT = Path(__file__).resolve().parent.parent
#: Only catches a hang.
HANG: float = 120


def run(code: str, cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run ``code`` in a fresh interpreter; return its stdout and stderr (exit 0 required).

    Not measured by coverage (``make test`` measures children): at a
    descriptor or file-size limit, coverage could not save its data at exit
    and would say so on the stderr these tests read.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**inherited, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


# Logs numbered records to one session while another process removes the
# folder; prints how many records the handler counted as dropped.
REMOVED_LOGGER = """
import logging, sys, time
from codex_logging import CodexHandler
handler = CodexHandler(sys.argv[1], "gone")
log = logging.getLogger("gone")
log.addHandler(handler)
log.setLevel(logging.INFO)
for n in range(int(sys.argv[2])):
    log.info("n=%d", n)
    time.sleep(0.004)
handler.close()
print(handler.dropped)
"""

# Removes the sessions folder in a loop until told to stop, holding every
# removed file open so that nothing written to it is out of reach: at the end
# it prints, per removed file, its bytes and how many it held at removal.
REMOVER = """
import json, os, sys, time
folder, stop = sys.argv[1], sys.argv[2]
held = []
while not os.path.exists(stop):
    time.sleep(0.07)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        continue
    for name in names:
        path = os.path.join(folder, name)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        os.unlink(path)
        # Measured after the unlink: a record landing in between counts as
        # written before the removal, so the test never asks for more than it should.
        held.append((f, os.fstat(f.fileno()).st_size))
    try:
        os.rmdir(folder)
    except OSError:
        pass
time.sleep(0.2)
out = []
for f, size in held:
    out.append((f.read().decode(), size))
print(json.dumps(out))
"""


def numbers(text: str) -> list[int]:
    """The ``n=`` of every whole record line in ``text``."""
    return [int(json.loads(line)["message"][2:]) for line in text.split("\n") if line]


class TestRemovedFolder:
    def test_records_written_after_a_removal_are_counted_and_said_once(
        self, tmp_path: Path
    ) -> None:
        """A process removes the sessions folder in a loop while another logs 600 records.

        The remover keeps each removed file open, so every record written is
        found somewhere: in the folder at the end, or in a removed file before
        or after its removal. Those only ever written after a removal are lost
        to the program; each is counted in ``dropped``, with one stderr line.
        """
        folder, stop = tmp_path / "s", tmp_path / "stop"
        total = 600
        remover = subprocess.Popen(
            [sys.executable, "-c", REMOVER, str(folder), str(stop)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = run(REMOVED_LOGGER, tmp_path, str(folder), str(total))
        finally:
            stop.touch()
            removed, _ = remover.communicate(timeout=HANG)
        dropped = int(out)
        kept: list[int] = []
        after_removal: list[int] = []
        for text, size in json.loads(removed):
            data = text.encode()
            kept += numbers(data[:size].decode())
            after_removal += numbers(data[size:].decode())
        if folder.exists():
            for path in folder.iterdir():
                kept += numbers(path.read_text())
        # Never written anywhere (an open that found the folder gone three
        # times), or written only after a removal: lost, and counted.
        missing = set(range(total)) - set(kept) - set(after_removal)
        lost = set(after_removal) - set(kept)
        assert lost, "no record was written after a removal: the test checked nothing"
        assert dropped >= len(lost) + len(missing), (dropped, len(lost), len(missing))
        (line,) = err.splitlines()
        assert line.startswith("codex_logging: dropped ")
        assert f" for {folder}: " in line

    def test_a_write_that_finds_its_file_removed_is_written_again(self, tmp_path: Path) -> None:
        """A record whose file is removed between the open and the write lands in the new file."""
        writer = Writer()
        path = tmp_path / "s" / "w.ndjson"
        real_write = os.write
        removed = []

        def write_then_remove(fd: int, data: bytes) -> int:
            written = real_write(fd, data)
            if not removed:
                removed.append(True)
                path.unlink()
                path.parent.rmdir()
            return written

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "write", write_then_remove)
            lost = writer.write(str(path), b'{"n":1}\n')
        assert (lost, read_lines(path)) == (0, [{"n": 1}])
        writer.close_all()

    def test_removed_file_found_on_close_is_counted(self, tmp_path: Path) -> None:
        """Records written after the file went, and not yet rechecked, are counted when it closes."""
        writer = Writer()
        path = tmp_path / "c.ndjson"
        writer.write(str(path), b'{"n":0}\n')
        path.unlink()
        for n in range(1, 4):
            assert not writer.write(str(path), b'{"n":%d}\n' % n)
        assert writer.close_all(str(tmp_path)) == 3
        assert writer.close_all(str(tmp_path)) == 0

    def test_a_file_removed_after_its_last_write_lost_nothing(self, tmp_path: Path) -> None:
        """Records written, then the file removed (a prune retiring a mirrored session): none lost.

        Its change time (the removal) is later than its last write's: nothing
        was written to it removed, so closing it counts nothing.
        """
        writer = Writer()
        path = tmp_path / "c.ndjson"
        for n in range(4):  # within one recheck: the last three are not seen naming the path
            assert not writer.write(str(path), b'{"n":%d}\n' % n)
        time.sleep(0.05)  # past the file system's clock tick
        path.unlink()
        assert writer.close_all(str(tmp_path)) == 0

    def test_a_renamed_folder_loses_nothing(self, tmp_path: Path) -> None:
        """A folder moved away (not removed) keeps what was written to it: nothing counted."""
        writer = Writer()
        path = tmp_path / "s" / "m.ndjson"
        writer.write(str(path), b'{"n":0}\n')
        (tmp_path / "s").rename(tmp_path / "moved")
        writer.write(str(path), b'{"n":1}\n')
        time.sleep(RECHECK_SECONDS + 0.05)
        assert not writer.write(str(path), b'{"n":2}\n')
        assert read_lines(tmp_path / "moved" / "m.ndjson") == [{"n": 0}, {"n": 1}]
        assert read_lines(path) == [{"n": 2}]
        assert writer.close_all() == 0

    def test_processor_counts_and_says_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The processor's next record after a removal counts the records lost, one line."""
        processor = CodexProcessor(tmp_path / "p", "p")
        processor(None, "info", {"event": "first"})
        (tmp_path / "p" / "p.ndjson").unlink()
        (tmp_path / "p").rmdir()
        processor(None, "info", {"event": "into the removed file"})
        time.sleep(RECHECK_SECONDS + 0.05)
        processor(None, "info", {"event": "after"})
        assert processor.dropped == 1
        assert [r["message"] for r in read_lines(tmp_path / "p" / "p.ndjson")] == ["after"]
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(
            f"codex_logging: dropped a record for {tmp_path / 'p'}: written to a"
        )


EMFILE_CHILD = """
import logging, os, resource, sys
from codex_logging import CodexHandler
handler = CodexHandler(sys.argv[1])
log = logging.getLogger("fds")
log.addHandler(handler)
log.setLevel(logging.INFO)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[2])))
hog = []
if sys.argv[3] == "hog":  # the program itself holds every descriptor left
    try:
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
for n in range(100):
    log.info("n=%d", n, extra={"session_id": f"s{n % 50}"})
print(handler.dropped)
"""


class TestOutOfDescriptors:
    def test_the_cache_gives_back_its_own_descriptors(self, tmp_path: Path) -> None:
        """Under ``ulimit -n 12``, 50 session ids: the writer closes its idle descriptors, drops nothing."""
        out, err = run(EMFILE_CHILD, tmp_path, str(tmp_path / "s"), "12", "no hog")
        assert (out, err) == ("0\n", "")
        for n in range(50):
            assert [r["message"] for r in read_lines(tmp_path / "s" / f"s{n}.ndjson")] == [
                f"n={n}",
                f"n={n + 50}",
            ]

    def test_no_descriptor_left_is_one_line_and_a_count(self, tmp_path: Path) -> None:
        """When the program holds every descriptor, 100 records to 50 files: one line, 100 dropped."""
        out, err = run(EMFILE_CHILD, tmp_path, str(tmp_path / "s"), "64", "hog")
        assert out == "100\n"
        (line,) = err.splitlines()
        assert line.startswith(f"codex_logging: dropped a record for {tmp_path / 's'}: ")
        assert "Too many open files" in line


LEAVES_ROOM_CHILD = """
import logging, os, resource, sys
from codex_logging import CodexHandler
resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
handler = CodexHandler(sys.argv[1])
log = logging.getLogger("room")
log.addHandler(handler)
log.setLevel(logging.INFO)
for n in range(50):
    log.info("n=%d", n, extra={"session_id": f"s{n}"})
mine = [os.open(os.devnull, os.O_RDONLY) for _ in range(30)]  # the program's own files
log.info("after", extra={"session_id": "s0"})
print(handler.dropped, len(mine))
"""


class TestLeavesRoom:
    def test_the_cache_leaves_the_program_its_descriptors(self, tmp_path: Path) -> None:
        """Under a limit of 48, after logging to 50 sessions the program can still open 30 files."""
        out, err = run(LEAVES_ROOM_CHILD, tmp_path, str(tmp_path / "s"))
        assert (out, err) == ("0 30\n", "")
        assert len(read_lines(tmp_path / "s" / "s0.ndjson")) == 2


FULL_CHILD = """
import logging, resource, sys
from codex_logging import CodexHandler
handler = CodexHandler(sys.argv[1])
log = logging.getLogger("full")
log.addHandler(handler)
log.setLevel(logging.INFO)
if sys.argv[2] == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))
for n in range(int(sys.argv[3])):
    log.info("n=%d %s", n, "x" * (n % 300), extra={"session_id": f"s{n % 7}"})
print(handler.dropped)
"""


# Records of one length (a fixed time) to one session; a file-size limit
# ends the file one byte before the fourth record's newline. With "after",
# a process without the limit appends one record.
CUT_CHILD = """
import logging, os, resource, sys
from codex_logging import CodexHandler

class Fixed(logging.Filter):
    def filter(self, record):
        record.created = 1700000000.5
        return True

handler = CodexHandler(sys.argv[1], "cut")
log = logging.getLogger("cut")
log.addFilter(Fixed())
log.addHandler(handler)
log.setLevel(logging.INFO)
if sys.argv[2:] == ["after"]:
    log.info("n=5")
    raise SystemExit
path = os.path.join(sys.argv[1], "cut.ndjson")
log.info("n=0")
first = os.path.getsize(path)
log.info("n=1")
each = os.path.getsize(path) - first
resource.setrlimit(resource.RLIMIT_FSIZE, (first + 3 * each - 1, resource.RLIM_INFINITY))
for n in (2, 3, 4):
    log.info("n=%d", n)
print(handler.dropped)
"""


def messages(db: Path) -> list[str]:
    """The mirrored messages of the session ``cut``, in order."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT message FROM session_events WHERE session_id = 'cut' AND kind = 'message' ORDER BY seq"
        )
        return [m for (m,) in rows]


@contextlib.contextmanager
def small_filesystem(size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size``; skip where the tests cannot (not root, no mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    where = Path(tempfile.mkdtemp())
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


class TestOutOfSpace:
    def test_file_size_limit_over_seven_files_is_one_line(self, tmp_path: Path) -> None:
        """Short writes to seven files at a file-size limit: one stderr line, every failure counted."""
        out, err = run(FULL_CHILD, tmp_path, str(tmp_path / "s"), "fsize", "700")
        written = sum(len(read_lines_lenient(p)) for p in (tmp_path / "s").iterdir())
        assert int(out) == 700 - written > 7
        (line,) = err.splitlines()
        assert "short write to" in line
        assert "free disk space or raise the file-size limit" in line

    def test_full_disk_is_one_line(self) -> None:
        """A real full filesystem (a 256 KiB tmpfs), seven files: one line, the program goes on."""
        with small_filesystem("256k") as where:
            out, err = run(FULL_CHILD, where, str(where / "s"), "disk", "3000")
            written = sum(len(read_lines_lenient(p)) for p in (where / "s").iterdir())
        assert int(out) == 3000 - written > 1000
        (line,) = err.splitlines()
        assert "(free disk space or raise the file-size limit)" in line

    def test_a_record_cut_just_before_its_newline(self, tmp_path: Path) -> None:
        """Cut one byte short it is dropped, not a line; the next process's record ends it."""
        folder = tmp_path / "s"
        out, err = run(CUT_CHILD, tmp_path, str(folder))
        path = folder / "cut.ndjson"
        last = path.read_bytes().rsplit(b"\n", 1)[-1]
        assert json.loads(last)["message"] == "n=3"  # whole but for its newline
        assert int(out) == 2  # n=3 cut one byte short, n=4 not written at all
        assert "short write to" in err
        assert [r["message"] for r in read_lines_lenient(path)] == ["n=0", "n=1", "n=2"]
        db = tmp_path / "m.db"
        sync_to_sqlite(db, folder)
        assert messages(db) == ["n=0", "n=1", "n=2"]  # the unended record waits
        run(CUT_CHILD, tmp_path, str(folder), "after")
        sync_to_sqlite(db, folder)
        assert messages(db) == ["n=0", "n=1", "n=2", "n=3", "n=5"]


def read_lines_lenient(path: Path) -> list[dict[str, object]]:
    """The whole records of a file, leaving out fragments a short write left.

    A line is whole once it ends: a record cut just before its newline is
    valid JSON but not yet a line (the sync waits for its end, and the
    handler counted it dropped).
    """
    found = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


class TestOnePerKind:
    def test_the_line_is_redacted(self, tmp_path: Path) -> None:
        """An error's text quoting what was logged (an invalid id, an object's str) goes out redacted."""
        code = """
import logging, sys
from codex_logging import CodexHandler
log = logging.getLogger("app")
log.addHandler(CodexHandler(sys.argv[1], session_id="h"))
log.warning("a", extra={"session_id": "password=Hunter2Secret!"})
log.warning("b", extra={"session_id": "ghp_" + "a1B2" * 9 + "/"})
log.warning("c", extra={"session_id": "postgresql://a_very_long_user_name:Hunter2Secret1234567890@host/db"})
"""
        _, err = run(code, tmp_path, str(tmp_path / "s"))
        lines = err.splitlines()
        assert len(lines) == 3
        assert "Hunter2Secret" not in err
        assert "a1B2a1B2" not in err
        assert all("[REDACTED]" in line for line in lines)

    def test_permission_failures_on_many_files_are_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Ten session files others may write, refused: one line, ten counted."""
        folder = tmp_path / "s"
        folder.mkdir(mode=0o700)
        for n in range(10):
            path = folder / f"f{n}.ndjson"
            path.touch()
            path.chmod(0o666)
        processor = CodexProcessor(folder)
        for n in range(10):
            processor(None, "info", {"event": "x", "session_id": f"f{n}"})
        assert processor.dropped == 10
        (line,) = capsys.readouterr().err.splitlines()
        assert f"refusing {folder / 'f0.ndjson'}" in line

    def test_errors_of_one_errno_are_one_cause(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Errors naming other files or byte counts but of one kind are one line; another kind is another."""
        processor = CodexProcessor(tmp_path)
        for name in ("a", "b", "c"):
            processor.sink.report(OSError(errno.EACCES, "Permission denied", name))
        processor.sink.report(OSError(errno.EROFS, "Read-only file system", "d"))
        processor.sink.report(OSError(errno.EMFILE, "Too many open files", "e"))
        processor.sink.report(OSError(errno.ENFILE, "Too many open files in system", "f"))
        assert processor.dropped == 6
        lines = capsys.readouterr().err.splitlines()
        assert ["'a'" in lines[0], "'e'" in lines[1], len(lines)] == [True, True, 2]

    def test_one_line_per_process_across_sinks(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second handler or processor on the same folder does not say it again."""
        first, second = CodexProcessor(tmp_path), CodexProcessor(tmp_path)
        first.sink.report(OSError(errno.ENOSPC, "No space left on device"))
        second.sink.report(OSError(errno.ENOSPC, "No space left on device"))
        assert (first.dropped, second.dropped) == (1, 1)
        assert len(capsys.readouterr().err.splitlines()) == 1


BAD_ID_SCOPE = """
import logging, os, sys
from codex_logging import CodexHandler, InvalidSessionId, session_scope
logging.getLogger().addHandler(CodexHandler("s"))
logging.getLogger().setLevel(logging.INFO)
ran = []
for _ in range(3):
    with session_scope(meta={"job": "nightly"}) as sid:
        ran.append(sid)
        assert os.environ["CODEX_SESSION_ID"] == sid
        logging.getLogger("app").info("work")
try:
    session_scope(os.environ["CODEX_SESSION_ID"])
except InvalidSessionId:
    ran.append("explicit raises")
print("|".join(ran), os.environ["CODEX_SESSION_ID"], sep="|")
"""


class TestBadInheritedId:
    @pytest.mark.parametrize("bad", ["../bad", "a/b", "x" * 200, "bad\x1bid"])
    def test_scope_runs_under_a_fresh_id_and_says_so_once(self, tmp_path: Path, bad: str) -> None:
        """With an invalid CODEX_SESSION_ID a bare scope runs its work under a fresh id.

        One stderr line for three scopes; each start record holds the rejected
        id; the environment is as it was after; an id passed explicitly still raises.
        """
        out, err = run(BAD_ID_SCOPE, tmp_path, env={"CODEX_SESSION_ID": bad})
        *sids, explicit, after = out.rstrip("\n").split("|")
        assert (explicit, after) == ("explicit raises", bad)
        assert len(set(sids)) == 3
        for sid in sids:
            uuid.UUID(sid)
            start, message, end = read_lines(tmp_path / "s" / f"{sid}.ndjson")
            assert (start["kind"], start["job"], start["rejected_session_id"]) == (
                "start",
                "nightly",
                bad,
            )
            assert (message["message"], end["status"]) == ("work", "ok")
        (line,) = err.splitlines()
        assert line.startswith("codex_logging: CODEX_SESSION_ID is not used: invalid session id")
        assert "set CODEX_SESSION_ID to a valid id" in line
        assert sorted(os.listdir(tmp_path / "s")) == sorted(f"{sid}.ndjson" for sid in sids)

    @pytest.mark.parametrize(
        ("bad", "shown"),
        [
            ("password=Hunter2Secret!", "'password=[REDACTED]'"),
            # Its repr is cut at 60 characters: redacted whole first.
            (
                "postgresql://a_very_long_user_name:Hunter2Secret12345@host/db",
                "'postgresql://a_very_long_user_name:[REDACTED]@host/db'",
            ),
            # A pattern of the program's own, given to its handler.
            ("ticket corp-Hunter2Secret", "'ticket [REDACTED]'"),
        ],
    )
    def test_a_secret_set_as_the_id_is_redacted_on_stderr_and_in_the_record(
        self, tmp_path: Path, bad: str, shown: str
    ) -> None:
        code = BAD_ID_SCOPE.replace(
            'CodexHandler("s")', 'CodexHandler("s", redact_patterns=[r"corp-[A-Za-z0-9]+"])'
        )
        out, err = run(code, tmp_path, env={"CODEX_SESSION_ID": bad})
        sid = out.split("|")[0]
        (start, *_) = read_lines(tmp_path / "s" / f"{sid}.ndjson")
        assert start["rejected_session_id"] == shown.strip("'")
        (line,) = err.splitlines()
        assert f"invalid session id {shown}" in line
        assert "Hunter2Secret" not in err

    def test_a_valid_inherited_id_is_joined_as_before(self, tmp_path: Path) -> None:
        """A valid CODEX_SESSION_ID is joined, and no start record names a rejected id."""
        out, err = run(BAD_ID_SCOPE, tmp_path, env={"CODEX_SESSION_ID": "ci-7"})
        assert (out, err) == ("ci-7|ci-7|ci-7|ci-7\n", "")
        assert all(
            "rejected_session_id" not in r for r in read_lines(tmp_path / "s" / "ci-7.ndjson")
        )
