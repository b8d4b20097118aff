"""The writer at a real file-size limit, out of descriptors, and re-entered while it holds its lock.

The limits are set in a child process (measured by coverage, like the other
children): each child puts its limits back before it exits, so coverage can
still save its data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_logging._write.writer import Writer
from tests.conftest import read_lines

ROOT = Path(__file__).resolve().parent.parent


def run(code: str, cwd: Path, *args: str) -> tuple[str, str]:
    """Run ``code`` in a fresh interpreter; return its stdout and stderr (exit 0 required)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


SIZE_LIMIT_CHILD = """
import os, resource, signal, sys
from codex_logging._errors import WriteError
import pytest

from codex_logging._write.writer import Writer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write comes back short instead
limit = resource.getrlimit(resource.RLIMIT_FSIZE)
path = sys.argv[1]
w = Writer()
w.write(path, b'{"n":0}\\n')
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 5, limit[1]))
try:
    if sys.argv[2] == "reentered":
        with w._locked():  # as a signal handler that logs while the writer holds its lock
            w.write(path, b'{"n":1}\\n', sync=True)
    else:
        w.write(path, b'{"n":1}\\n', sync=True)
except WriteError as exc:
    print(exc)
finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)
w.write(path, b'{"n":2}\\n', sync=True)
w.write(path, b'{"n":3}\\n')
"""


class TestFileSizeLimit:
    def test_a_short_write_raises_and_the_next_record_stands_alone(self, tmp_path: Path) -> None:
        path = tmp_path / "s" / "a.ndjson"
        out, err = run(SIZE_LIMIT_CHILD, tmp_path, str(path), "cached")
        assert (out, err) == (f"short write to {path}: 5 of 8 bytes\n", "")
        assert path.read_bytes() == b'{"n":0}\n{"n":\n{"n":2}\n{"n":3}\n'

    def test_a_short_write_re_entered_under_the_lock(self, tmp_path: Path) -> None:
        """Written through a descriptor of its own: the same error, the fragment still ended."""
        path = tmp_path / "s" / "a.ndjson"
        out, err = run(SIZE_LIMIT_CHILD, tmp_path, str(path), "reentered")
        assert (out, err) == (f"short write to {path}: 5 of 8 bytes\n", "")
        assert path.read_bytes() == b'{"n":0}\n{"n":\n{"n":2}\n{"n":3}\n'


OUT_OF_DESCRIPTORS_CHILD = """
import logging, os, resource, sys
from codex_logging import CodexHandler
handler = CodexHandler(sys.argv[1])
log = logging.getLogger("fds")
log.addHandler(handler)
log.setLevel(logging.INFO)
for n in range(8):
    log.info("first %d", n, extra={"session_id": f"s{n}"})
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
hog = []
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for n in range(8, 16):
    log.info("later %d", n, extra={"session_id": f"s{n}"})
for fd in hog:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(handler.dropped)
"""


class TestOutOfDescriptors:
    def test_cached_descriptors_are_given_back_for_a_new_session(self, tmp_path: Path) -> None:
        """With every descriptor taken by the program, new sessions use the cache's own: none dropped."""
        out, err = run(OUT_OF_DESCRIPTORS_CHILD, tmp_path, str(tmp_path / "s"))
        assert (out, err) == ("0\n", "")
        for n in range(16):
            word = "first" if n < 8 else "later"
            assert [r["message"] for r in read_lines(tmp_path / "s" / f"s{n}.ndjson")] == [
                f"{word} {n}"
            ]


class TestReentered:
    def test_a_write_under_the_lock_appends_after_a_fragment(self, tmp_path: Path) -> None:
        """A record re-entered while the lock is held starts a line of its own; close_all waits."""
        path = tmp_path / "a.ndjson"
        writer = Writer()
        writer.write(str(path), b'{"n":0}\n')
        with path.open("ab") as f:
            f.write(b'{"torn"')
        with writer._locked():
            assert writer.write(str(path), b'{"n":1}\n', sync=True) == 0
            assert writer.close_all() == 0  # left to the next close
        writer.write(str(path), b'{"n":2}\n')
        assert writer.close_all() == 0
        assert path.read_bytes() == b'{"n":0}\n{"torn"\n{"n":1}\n{"n":2}\n'

    def test_a_folder_at_the_file_path_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "a.ndjson"
        path.mkdir()
        writer = Writer()
        with pytest.raises(IsADirectoryError):
            writer.write(str(path), b'{"n":0}\n')
        assert list(path.iterdir()) == []
