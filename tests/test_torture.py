"""The torture suite: load, crashes, faults and hostile input, with nothing lost.

Every test uses real processes, files and SQLite. The slowest are marked
``slow`` (``pytest -m slow`` selects them; ``make test`` runs them all).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codex_logging import CodexHandler, CodexProcessor, sync_to_sqlite
from tests.checks import assert_exactly_once, expected_numbered
from tests.conftest import db_connection, read_lines
from tests.writers import run_load_with_sync_loops

ROOT = Path(__file__).resolve().parent.parent
ENDLESS_WRITER = """
import logging, sys
from codex_logging import CodexHandler
log = logging.getLogger("endless")
log.addHandler(CodexHandler(sys.argv[1], "crash"))
log.setLevel(logging.INFO)
i = 0
while True:
    log.info("line %d", i, extra={"pad": "y" * (i % 5000)})
    if i == 100:
        print("started", flush=True)
    i += 1
"""


def stored_lines(db: Path, session: str) -> list[tuple[int, str, bytes]]:
    """Every stored line of a session, good or quarantined, in seq order, as raw bytes.

    The kind is "event", "error", or "torn" for a fragment the sync split off
    the record glued to it: the two share the seq of the one line they were.
    """
    with db_connection(db) as conn:
        good = conn.execute(
            "SELECT seq, 'event', data FROM session_events WHERE session_id = ?", (session,)
        ).fetchall()
        bad = conn.execute(
            "SELECT seq, CASE error WHEN 'torn record' THEN 'torn' ELSE 'error' END, raw"
            " FROM session_ingest_errors WHERE session_id = ?",
            (session,),
        ).fetchall()
    return sorted(
        (seq, kind, raw.encode() if isinstance(raw, str) else raw) for seq, kind, raw in good + bad
    )


def rejoined(stored: list[tuple[int, str, bytes]]) -> list[bytes]:
    """The file's lines rebuilt from stored rows, line n from the rows with seq n.

    A torn fragment goes before the record that shares its seq. Fails when a
    seq is missing or holds anything but one row, or one fragment and one event.
    """
    by_seq: dict[int, dict[str, bytes]] = {}
    for seq, kind, raw in stored:
        assert kind not in by_seq.setdefault(seq, {}), f"seq {seq} holds two {kind} rows"
        by_seq[seq][kind] = raw
    assert sorted(by_seq) == list(range(1, len(by_seq) + 1)), "seq is not the line number"
    lines = []
    for seq in sorted(by_seq):
        rows = by_seq[seq]
        assert len(rows) == 1 or rows.keys() == {"torn", "event"}, (seq, rows)
        lines.append(rows.get("torn", b"") + rows.get("event", rows.get("error", b"")))
    return lines


@pytest.mark.slow
class TestLoad:
    def test_8_processes_4_threads_mixed_sizes_with_2_sync_loops(self, tmp_path: Path) -> None:
        """8 x 4 x 5,000 records of 100 B to 64 KB while two syncs loop: exactly 160,000 rows."""
        sessions, db = tmp_path / "s", tmp_path / "x.db"
        sessions.mkdir()
        run_load_with_sync_loops(str(sessions), str(db), workers=8, threads=4, count=5000, size=-1)
        sync_to_sqlite(db, sessions)
        with db_connection(db) as conn:
            seqs = [
                s
                for (s,) in conn.execute(
                    "SELECT seq FROM session_events WHERE session_id = 'load' ORDER BY seq"
                )
            ]
            messages = [m for (m,) in conn.execute("SELECT message FROM session_events")]
            sizes = [n for (n,) in conn.execute("SELECT length(data) FROM session_events")]
            assert conn.execute("SELECT count(*) FROM session_ingest_errors").fetchone() == (0,)
        assert seqs == list(range(1, 160_001))
        assert_exactly_once(messages, expected_numbered(8, 4, 5000))
        assert min(sizes) < 1200
        assert max(sizes) > 65_000
        for raw in (tmp_path / "s" / "load.ndjson").read_bytes().split(b"\n")[:-1]:
            assert isinstance(json.loads(raw), dict)


@pytest.mark.slow
class TestCrashes:
    def test_writer_killed_mid_stream(self, tmp_path: Path) -> None:
        """A writer killed with SIGKILL: everything before is intact and syncs; a partial last line waits."""
        proc = subprocess.Popen(
            [sys.executable, "-c", ENDLESS_WRITER, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        data = (tmp_path / "crash.ndjson").read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        messages = [json.loads(line)["message"] for line in complete.split(b"\n")[:-1]]
        assert messages == [f"line {i}" for i in range(len(messages))]
        report = sync_to_sqlite(tmp_path / "x.db", tmp_path)
        assert (report.rows_inserted, report.lines_quarantined) == (len(messages), 0)
        with db_connection(tmp_path / "x.db") as conn:
            assert conn.execute("SELECT byte_offset FROM session_ingest_watermark").fetchone() == (
                len(complete),
            )

    def test_power_cut_fragment_then_new_writer(self, tmp_path: Path) -> None:
        """A file ending in a torn line, then another process appends: the fragment is quarantined, the rest ingested.

        The new process starts its first record on a line of its own, so the
        fragment is one line (seq 2) and every record keeps its own.
        """
        path = tmp_path / "cut.ndjson"
        path.write_bytes(b'{"message": "whole"}\n{"message": "tor')
        child = (
            "import logging, sys\nfrom codex_logging import CodexHandler\n"
            "log = logging.getLogger('after'); log.addHandler(CodexHandler(sys.argv[1], 'cut')); log.setLevel(20)\n"
            "for i in range(3): log.info('after %d', i)\n"
        )
        subprocess.run([sys.executable, "-c", child, str(tmp_path)], check=True, timeout=60)
        report = sync_to_sqlite(tmp_path / "x.db", tmp_path)
        assert (report.rows_inserted, report.lines_quarantined) == (4, 1)
        with db_connection(tmp_path / "x.db") as conn:
            assert conn.execute(
                "SELECT seq, byte_offset, raw FROM session_ingest_errors"
            ).fetchall() == [(2, 21, '{"message": "tor')]
            assert conn.execute("SELECT seq, message FROM session_events ORDER BY seq").fetchall() == [
                (1, "whole"), (3, "after 0"), (4, "after 1"), (5, "after 2"),
            ]  # fmt: skip
        assert path.read_bytes().split(b"\n")[1] == b'{"message": "tor'


class TestHostileInput:
    @pytest.mark.parametrize(
        "value",
        [
            "line\nbreak\r\n",
            "sep\u2028\u2029",
            "lone \ud800 surrogate",
            "nul\x00byte",
            "x" * 10_000_000,
        ],
        ids=["newlines", "u2028", "surrogate", "nul", "10MB"],
    )
    @pytest.mark.parametrize("path", ["handler", "processor"])
    def test_messages_survive_as_one_line(self, tmp_path: Path, value: str, path: str) -> None:
        """Hostile messages and values are one valid JSON line each, through handler and processor alike."""
        if path == "handler":
            handler = CodexHandler(tmp_path, "h")
            handler.handle(
                logging.makeLogRecord(
                    {"msg": value, "levelname": "INFO", "name": "h", "field": value}
                )
            )
        else:
            CodexProcessor(tmp_path, "h")(None, "info", {"event": value, "field": value})
        data = (tmp_path / "h.ndjson").read_bytes()
        assert data.count(b"\n") == 1
        (record,) = read_lines(tmp_path / "h.ndjson")
        if "\ud800" in value:
            assert record["message"] == value  # escaped as \ud800, read back the same
        else:
            assert (record["message"], record["field"]) == (value, value)
        assert sync_to_sqlite(tmp_path / "x.db", tmp_path).rows_inserted == 1

    def test_awkward_objects(self, tmp_path: Path) -> None:
        """Deep nesting, self-reference and objects whose __str__ raises still write a record."""

        class Evil:
            def __str__(self) -> str:
                raise RuntimeError("no str")

            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        deep: Any = []
        for _ in range(100_000):
            deep = [deep]
        loop: dict[str, Any] = {}
        loop["self"] = loop
        for redact in (True, False):
            CodexProcessor(tmp_path, "odd", redact=redact)(
                None, "info", {"event": "x", "deep": deep, "loop": loop, "evil": Evil(), "ok": 1}
            )
        records = read_lines(tmp_path / "odd.ndjson")
        assert [r["ok"] for r in records] == [1, 1]
        assert all(r["evil"] == "<unprintable Evil>" for r in records)
        # Values are normalised before redaction, with or without it: nothing
        # deeper than MAX_DEPTH is written (it could not be checked), and a
        # self-reference is cut where it loops.
        for record in records:
            assert json.dumps(record["deep"]) == (
                "[" * 64 + '"<nested deeper than 64 levels>"' + "]" * 64
            )
            assert record["loop"] == {"self": "<circular reference>"}

    @pytest.mark.parametrize(
        "bad", ["..", "a/../b", "a\\b", "\x00", "\x1b[31m", "x" * 10_000, "\u0430bc", "ok\n"]
    )
    def test_hostile_ids_write_nothing_anywhere(self, tmp_path: Path, bad: str) -> None:
        """A hostile routed session id is refused by handler and processor; no file appears."""
        errors: list[logging.LogRecord] = []
        handler = CodexHandler(tmp_path / "s")
        handler.handleError = errors.append  # type: ignore[method-assign]
        handler.handle(logging.makeLogRecord({"msg": "x", "session_id": bad}))
        processor = CodexProcessor(tmp_path / "s")
        processor(None, "info", {"event": "x", "session_id": bad})
        assert processor.dropped == 1
        assert len(errors) == 1
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


class TestFaults:
    def test_sessions_folder_deleted_and_file_replaced(self, tmp_path: Path) -> None:
        """A cleaner removes the folder, a rotation tool replaces the file: records follow the path."""
        handler = CodexHandler(tmp_path / "s", "f")
        log = logging.getLogger("faults")
        log.addHandler(handler)
        log.warning("one")
        (tmp_path / "s" / "f.ndjson").rename(tmp_path / "old.ndjson")
        os.rmdir(tmp_path / "s")
        time.sleep(0.6)
        log.warning("two")
        (tmp_path / "s" / "f.ndjson").write_text('{"message": "replaced"}\n')
        time.sleep(0.6)
        log.warning("three")
        assert [r["message"] for r in read_lines(tmp_path / "s" / "f.ndjson")] == [
            "replaced",
            "three",
        ]
        assert [r["message"] for r in read_lines(tmp_path / "old.ndjson")] == ["one"]
        handler.close()

    def test_disk_full_then_space_back(self, tmp_path: Path) -> None:
        """ENOSPC from the disk: the app goes on, handleError reports, later records land once."""
        import errno

        from codex_logging._write.writer import WRITER

        handler = CodexHandler(tmp_path, "full")
        errors: list[str] = []
        handler.handleError = lambda record: errors.append(record.getMessage())  # type: ignore[method-assign]
        log = logging.getLogger("diskfull")
        log.addHandler(handler)
        log.warning("before")
        real_write = os.write

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        os.write = full  # type: ignore[assignment]
        try:
            log.warning("lost")
        finally:
            os.write = real_write  # type: ignore[assignment]
        log.warning("after")
        assert errors == ["lost"]
        assert [r["message"] for r in read_lines(tmp_path / "full.ndjson")] == ["before", "after"]
        WRITER.close_all()


class TestProperty:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("append"), st.integers(1, 5), st.booleans()),
                st.tuples(st.just("partial"), st.integers(1, 30), st.booleans()),
                st.tuples(st.just("sync"), st.just(0), st.booleans()),
                st.tuples(st.just("truncate"), st.just(0), st.booleans()),
            ),
            max_size=25,
        )
    )
    def test_events_and_errors_equal_the_lines(self, ops: list[tuple[str, int, bool]]) -> None:
        """Any interleaving of appends, partial writes, syncs and truncations: stored == lines of the file."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path, db = folder / "p.ndjson", folder / "p.db"
            path.write_bytes(b"")
            counter = 0
            lines: list[bytes] = []  # complete lines of the current generation
            taken = 0
            partial = b""
            expected: list[bytes] = []

            def line(valid: bool) -> bytes:
                nonlocal counter
                counter += 1
                return (
                    # Compact, as the mirror writes a record back (docs/mirror.md, "Schema").
                    json.dumps({"n": counter}, separators=(",", ":")).encode()
                    if valid
                    else b"not json " + str(counter).encode()
                )

            for op, n, valid in ops:
                if op == "append":
                    for _ in range(n):
                        new = line(valid)
                        with path.open("ab") as f:
                            f.write(new + b"\n")
                        lines.append(partial + new)
                        partial = b""
                elif op == "partial":
                    piece = line(valid)[:n]
                    partial += piece
                    with path.open("ab") as f:
                        f.write(piece)
                elif op == "sync":
                    sync_to_sqlite(db, folder)
                    expected += lines[taken:]
                    taken = len(lines)
                else:
                    path.write_bytes(b"")
                    lines, taken, partial = [], 0, b""
            with path.open("ab") as f:
                f.write(b"\n")
            lines.append(partial)
            sync_to_sqlite(db, folder)
            expected += lines[taken:]
            assert rejoined(stored_lines(db, "p")) == expected

    def test_checker_bites(self) -> None:
        """The property's checker fails when one stored row is dropped, duplicated or altered (negative control)."""
        stored = [
            (1, "event", b'{"n": 1}'),
            (1, "torn", b"ab"),
            (2, "error", b"x"),
            (3, "event", b'{"n": 2}'),
        ]
        expected = [b'ab{"n": 1}', b"x", b'{"n": 2}']
        assert rejoined(stored) == expected
        broken_rows = (
            stored[1:],  # a record dropped
            [*stored, stored[-1]],  # one stored twice
            [*stored[:3], (4, "event", b'{"n": 2}')],  # seq off the line number
            [(1, "error", b"ab"), *stored[:1], *stored[2:]],  # a fragment mislabelled
            [*stored[:2], (2, "error", b"y"), stored[3]],  # a line altered
        )
        for broken in broken_rows:
            try:
                result = rejoined(broken)
            except AssertionError:
                continue
            assert result != expected, broken


class TestReadOnlyDatabase:
    def test_read_only_database_file(self, tmp_path: Path) -> None:
        """An immutable database: sync fails with one clear error, queries still read, nothing lost."""
        import shutil

        from codex_logging import DatabaseError
        from codex_logging.query_logs import query

        folder, db = tmp_path / "s", tmp_path / "x.db"
        folder.mkdir()
        (folder / "ro.ndjson").write_text('{"message": "one"}\n')
        sync_to_sqlite(db, folder)
        (folder / "ro.ndjson").write_text('{"message": "one"}\n{"message": "two"}\n')
        chattr = shutil.which("chattr")
        # Root ignores permission bits; the immutable flag binds root too.
        if (
            chattr is None
            or subprocess.run([chattr, "+i", str(db)], capture_output=True, check=False).returncode
        ):
            if os.geteuid() == 0:
                pytest.skip("no chattr +i here, and root ignores a read-only mode")
            db.chmod(0o400)  # pragma: no cover - only as a non-root user
        try:
            with pytest.raises(DatabaseError, match=r"x\.db"):
                sync_to_sqlite(db, folder)
            assert [e["message"] for e in query(str(db), "ro", 10)] == ["one"]
        finally:
            subprocess.run([chattr or "true", "-i", str(db)], check=False)
            db.chmod(0o600)
        assert sync_to_sqlite(db, folder).rows_inserted == 1
        assert [e["message"] for e in query(str(db), "ro", 10)] == ["one", "two"]
