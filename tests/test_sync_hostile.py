"""Hostile and unusual session files: every line ends in exactly one place (docs/mirror.md)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codex_logging import CodexHandler, sync_to_sqlite
from codex_logging._mirror.lines import glued_record, loads
from tests.conftest import db_connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

GOOD_BEFORE = b'{"message": "before"}'
GOOD_AFTER = b'{"message": "after"}'

#: Lines that each once stopped the mirror for good, or that it mishandled.
HOSTILE = {
    "kind with a lone surrogate": b'{"kind": "\\ud800", "message": "m"}',
    "list message with a lone surrogate": b'{"message": ["\\udfff"]}',
    "level object with a lone surrogate": b'{"level": {"x": "\\ud83d"}}',
    "logger key with a lone surrogate": b'{"logger": {"\\ud800": 1}}',
    "400-digit ts": b'{"ts": ' + b"9" * 400 + b', "message": "m"}',
    "huge float ts": b'{"ts": 1e400, "message": "m"}',
    "5000-digit int": b'{"n": ' + b"1" * 5000 + b"}",
    "message nested 1,000 deep": b'{"message": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "message nested 5,000 deep": b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "kind nested 100 deep": b'{"kind": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}",
    "NaN ts": b'{"ts": NaN, "message": "m"}',
    "NUL escape": b'{"message": "a\\u0000b"}',
    "invalid UTF-8 in a string": b'{"message": "\xff\xfe"}',
    "UTF-16 text": '{"message": "m"}'.encode("utf-16"),
    "overlong UTF-8": b'{"message": "\xc0\xaf"}',
    "encoded surrogate": b'{"message": "\xed\xa0\x80"}',
    "carriage return": b'{"message": "m"}\r',
    "bare string": b'"just a string"',
    "empty": b"",
    "only spaces": b"   ",
    "unclosed": b'{"message": "m"',
    "torn with 40 openers": b'{"a": ' * 40 + b'{"message": "glued"}',
    "torn with brackets in strings": b'{"x": "}{][\\"", "y": [{"' + b'{"message": "glued"}',
    "control characters": b'{"message": "\\u001b]0;title\\u0007\\u009b"}',
    "duplicate keys": b'{"message": "a", "message": "b"}',
    "ts as bool": b'{"ts": true, "kind": false}',
    "ISO ts with junk": b'{"ts": "2025-13-45T99:99:99Z"}',
    "secret key": b'{"message": "m", "api_key": "abc123"}',
    "bearer token in an unparsable line": b"oops Bearer abcdefghijklmnop",
}


def text_columns_are_utf8(db: Path) -> None:
    """Fail when any stored text value is not valid UTF-8 (a lone surrogate smuggled in)."""
    with db_connection(db) as conn:
        for table, columns in (
            (
                "session_events",
                ("session_id", "kind", "level", "logger", "role", "message", "data"),
            ),
            ("session_ingest_errors", ("session_id", "error", "raw")),
        ):
            for column in columns:
                for (value,) in conn.execute(
                    f"SELECT CAST({column} AS BLOB) FROM {table} WHERE typeof({column}) = 'text'"
                ):
                    value.decode("utf-8")  # strict: raises on anything that is not UTF-8


def places(db: Path, session: str) -> dict[int, list[str]]:
    """Where each seq ended: 'event', 'error' or 'torn' rows."""
    out: dict[int, list[str]] = {}
    with db_connection(db) as conn:
        for (seq,) in conn.execute(
            "SELECT seq FROM session_events WHERE session_id = ?", (session,)
        ):
            out.setdefault(seq, []).append("event")
        for seq, error in conn.execute(
            "SELECT seq, error FROM session_ingest_errors WHERE session_id = ?", (session,)
        ):
            out.setdefault(seq, []).append("torn" if error == "torn record" else "error")
    return {seq: sorted(kinds) for seq, kinds in sorted(out.items())}


class TestHostileLines:
    @pytest.mark.parametrize("line", list(HOSTILE.values()), ids=list(HOSTILE))
    def test_each_line_ends_in_exactly_one_place(self, tmp_path: Path, line: bytes) -> None:
        """A hostile line between two good ones: three lines, three places, later files still synced."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "a.ndjson").write_bytes(GOOD_BEFORE + b"\n" + line + b"\n" + GOOD_AFTER + b"\n")
        (folder / "b.ndjson").write_bytes(GOOD_AFTER + b"\n")
        db = tmp_path / "x.db"
        report = sync_to_sqlite(db, folder)
        assert report.warnings == []
        assert report.rows_inserted + report.lines_quarantined in (4, 5)
        where = places(db, "a")
        assert list(where) == [1, 2, 3]
        assert where[1] == where[3] == ["event"]
        assert where[2] in (["event"], ["error"], ["event", "torn"])
        assert places(db, "b") == {1: ["event"]}
        text_columns_are_utf8(db)
        assert sync_to_sqlite(db, folder).rows_inserted == 0

    def test_conversions_that_used_to_raise_are_rows(self, tmp_path: Path) -> None:
        """Surrogates, a 400-digit ts and deep nesting become rows with U+FFFD, NULL ts and redacted depth."""
        folder = tmp_path / "s"
        folder.mkdir()
        lines = [
            HOSTILE["kind with a lone surrogate"],
            HOSTILE["list message with a lone surrogate"],
            HOSTILE["400-digit ts"],
            HOSTILE["message nested 1,000 deep"],
        ]
        (folder / "h.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        db = tmp_path / "x.db"
        report = sync_to_sqlite(db, folder)
        assert (report.rows_inserted, report.lines_quarantined) == (4, 0)
        with db_connection(db) as conn:
            got = conn.execute(
                "SELECT seq, ts, kind, message, data FROM session_events ORDER BY seq"
            ).fetchall()
        # As the scrub always did: each byte of the surrogate's encoding is one U+FFFD.
        assert got[0][:4] == (1, None, "\ufffd" * 3, "m")
        assert json.loads(got[0][4]) == {"kind": "\ud800", "message": "m"}
        assert got[1][:4] == (2, None, "message", '["\ufffd\ufffd\ufffd"]')
        assert json.loads(got[1][4]) == {"message": ["\udfff"]}
        assert got[2][:4] == (3, None, "message", "m")
        # Deeper than the write path checks: redacted there as here.
        depth = got[3][3].count("[") - 1  # one is in "[REDACTED]"
        assert got[3][3] == "[" * depth + '"[REDACTED]"' + "]" * depth
        assert 10 < depth < 1000
        assert json.loads(got[3][4])["message"] == json.loads(got[3][3])

    def test_library_written_surrogate_kind(self, tmp_path: Path) -> None:
        """A kind the library itself writes from an undecodable file name syncs, and so does the rest.

        Not one of the three kinds: the record is a message, that text its extra.kind.
        """
        folder = tmp_path / "s"
        log = logging.getLogger("hostile")
        handler = CodexHandler(str(folder), "lib")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            log.info("up", extra={"kind": os.fsdecode(b"upload-\xff.csv")})
            log.info("next")
        finally:
            log.removeHandler(handler)
            handler.close()
        (folder / "zz.ndjson").write_bytes(GOOD_AFTER + b"\n")
        db = tmp_path / "x.db"
        report = sync_to_sqlite(db, folder)
        assert (report.rows_inserted, report.lines_quarantined, report.warnings) == (3, 0, [])
        with db_connection(db) as conn:
            rows = conn.execute(
                "SELECT kind, message, data FROM session_events WHERE session_id = 'lib'"
                " ORDER BY seq"
            ).fetchall()
        assert [row[:2] for row in rows] == [("message", "up"), ("message", "next")]
        assert json.loads(rows[0][2])["extra.kind"] == "upload-\udcff.csv"
        text_columns_are_utf8(db)

    def test_cli_sync_survives_every_hostile_line(self, tmp_path: Path) -> None:
        """codex-logs sync over the whole corpus in one file: exit 0, every line stored once."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "all.ndjson").write_bytes(b"\n".join(HOSTILE.values()) + b"\n")
        db = tmp_path / "x.db"
        out = subprocess.run(
            [str(BIN / "codex-logs"), "sync", "--db", str(db), "--sessions-dir", str(folder)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert (out.returncode, out.stderr) == (0, "")
        where = places(db, "all")
        assert list(where) == list(range(1, len(HOSTILE) + 1))
        assert all(kinds in (["event"], ["error"], ["event", "torn"]) for kinds in where.values())
        text_columns_are_utf8(db)


class TestRefusedRows:
    def test_a_row_the_database_refuses_is_quarantined_alone(self, tmp_path: Path) -> None:
        """An insert a trigger refuses is retried row by row: the culprit is quarantined, the rest inserted."""
        folder = tmp_path / "s"
        folder.mkdir()
        db = tmp_path / "x.db"
        (folder / "r.ndjson").write_bytes(b'{"message": "first"}\n')
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON session_rows"
                " WHEN NEW.message = 'poison' BEGIN SELECT RAISE(ABORT, 'no poison here'); END"
            )
        with (folder / "r.ndjson").open("ab") as f:
            f.write(b'{"message": "a"}\n{"message": "poison"}\n{"message": "b"}\n')
        report = sync_to_sqlite(db, folder)
        assert (report.rows_inserted, report.lines_quarantined, report.warnings) == (2, 1, [])
        with db_connection(db) as conn:
            assert conn.execute("SELECT seq, message FROM session_events ORDER BY seq").fetchall() == [
                (1, "first"), (2, "a"), (4, "b"),
            ]  # fmt: skip
            assert conn.execute(
                "SELECT seq, byte_offset, error, raw FROM session_ingest_errors"
            ).fetchall() == [
                (3, 38, "database refused the row: no poison here", '{"message": "poison"}')
            ]
            assert conn.execute("SELECT seq FROM session_ingest_watermark").fetchone() == (4,)


class TestProperty:
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=60),
                st.builds(
                    lambda s: json.dumps({"message": s}, ensure_ascii=False).encode(
                        "utf-8", "surrogatepass"
                    ),
                    st.text(max_size=20),
                ),
                st.builds(lambda a, b: a + b, st.binary(max_size=30), st.just(b'{"m": 1}')),
            ),
            max_size=12,
        ),
        st.binary(max_size=20),
    )
    def test_arbitrary_bytes(self, lines: list[bytes], last: bytes) -> None:
        """Any bytes: each complete line ends in exactly one place, stored text is UTF-8, the rest waits."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "s"
            folder.mkdir()
            content = b"".join(line + b"\n" for line in lines) + last.replace(b"\n", b"")
            (folder / "p.ndjson").write_bytes(content)
            db = Path(tmp) / "x.db"
            report = sync_to_sqlite(db, folder)
            complete = content.split(b"\n")[:-1]
            where = places(db, "p")
            assert list(where) == list(range(1, len(complete) + 1))
            assert all(
                kinds in (["event"], ["error"], ["event", "torn"]) for kinds in where.values()
            )
            assert report.warnings == []
            text_columns_are_utf8(db)
            with db_connection(db) as conn:
                for seq, data in conn.execute("SELECT seq, data FROM session_events"):
                    if "[REDACTED]" not in data and "\\ud" not in data.lower():
                        # The line's record (or the one glued to a fragment) as it was.
                        line = complete[seq - 1]
                        found = glued_record(line)
                        record = loads(line) if found is None else found[1]
                        assert repr(json.loads(data)) == repr(record)
                (offset,) = conn.execute(
                    "SELECT byte_offset FROM session_ingest_watermark"
                ).fetchone()
            assert offset == len(content) - len(last.replace(b"\n", b""))


class TestTornRecords:
    def test_fragment_with_many_openers(self, tmp_path: Path) -> None:
        """A torn fragment holding 40 '{"' still gives up the record glued to it (main stopped at 16)."""
        folder = tmp_path / "s"
        folder.mkdir()
        fragment = b'{"a": ' * 40
        (folder / "t.ndjson").write_bytes(GOOD_BEFORE + b"\n" + fragment + GOOD_AFTER + b"\n")
        db = tmp_path / "x.db"
        report = sync_to_sqlite(db, folder)
        assert (report.rows_inserted, report.lines_quarantined) == (2, 1)
        with db_connection(db) as conn:
            assert conn.execute("SELECT seq, message FROM session_events ORDER BY seq").fetchall() == [
                (1, "before"), (2, "after"),
            ]  # fmt: skip
            assert conn.execute("SELECT seq, byte_offset, error, raw FROM session_ingest_errors").fetchall() == [
                (2, len(GOOD_BEFORE) + 1, "torn record", fragment.decode()),
            ]  # fmt: skip


class TestRefusedQuarantine:
    def test_a_quarantine_row_the_database_refuses_keeps_its_place(self, tmp_path: Path) -> None:
        """When even the quarantine row is refused, it is stored without its raw bytes, with both reasons."""
        folder = tmp_path / "s"
        folder.mkdir()
        db = tmp_path / "x.db"
        (folder / "q.ndjson").write_bytes(b'{"message": "first"}\n')
        sync_to_sqlite(db, folder)
        with db_connection(db) as conn:
            conn.execute(
                "CREATE TRIGGER refuse_event BEFORE INSERT ON session_rows"
                " WHEN NEW.message = 'poison' BEGIN SELECT RAISE(ABORT, 'no poison'); END"
            )
            conn.execute(
                "CREATE TRIGGER refuse_error BEFORE INSERT ON session_ingest_errors"
                " WHEN NEW.raw LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'no poison either'); END"
            )
        with (folder / "q.ndjson").open("ab") as f:
            f.write(b'{"message": "poison"}\nnot json poison\n{"message": "b"}\n')
        report = sync_to_sqlite(db, folder)
        assert (report.rows_inserted, report.lines_quarantined, report.warnings) == (1, 2, [])
        with db_connection(db) as conn:
            errors = conn.execute(
                "SELECT seq, error, raw FROM session_ingest_errors ORDER BY seq"
            ).fetchall()
        refused = "; raw not stored, database refused it: no poison either"
        assert [(seq, raw) for seq, _, raw in errors] == [(2, b""), (3, b"")]
        assert errors[0][1] == "database refused the row: no poison" + refused
        assert errors[1][1].startswith("JSONDecodeError: ")
        assert errors[1][1].endswith(refused)
        with db_connection(db) as conn:
            assert conn.execute("SELECT seq, message FROM session_events ORDER BY seq").fetchall() == [
                (1, "first"), (4, "b"),
            ]  # fmt: skip
