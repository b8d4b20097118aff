"""The compact mirror: each value stored once, and an older mirror moved to it in place.

tests/data/mirror_v7 holds session files, the mirror the schema-7 sync made of
them (before the compact layout) and the answers every read gave on it then
(tests/data/make_mirror_v7.py). Here a copy is migrated by today's code and
every read must give the same answers; the move is killed at random points
and must end as an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._mirror.compact import BIT, split, whole
from codex_logging._sqlite.db import LEGACY_TABLE, SCHEMA_VERSION, connect

from .conftest import synced_text
from .data.make_mirror_v7 import CLI, READS, viewer_answers

DATA = Path(__file__).resolve().parent / "data" / "mirror_v7"
ANSWERS: dict[str, str] = json.loads((DATA / "answers.json").read_text())


def canonical(line: str) -> str:
    # One JSON object as comparable text: key order aside (the compact mirror
    # gives the columns' fields first), and a NaN the old release printed as
    # the bare word as the CLI prints it now ("NaN", docs/cli.md).
    return json.dumps(json.loads(line, parse_constant=str), sort_keys=True)


def datas(found: Any) -> Any:
    # The viewer's answers with each record's data as comparable text.
    if isinstance(found, dict):
        return {
            k: canonical(v) if k == "data" and isinstance(v, str) else datas(v)
            for k, v in found.items()
        }
    if isinstance(found, list):
        return [datas(v) for v in found]
    return found


def run_cli(db: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEX_LOG_DB_PATH": str(db), "NO_COLOR": "1", "TZ": "UTC"}
    return subprocess.run(
        [sys.executable, "-c", CLI, *argv], capture_output=True, text=True, env=env, check=False,
        timeout=120,
    )  # fmt: skip


@pytest.fixture
def old_mirror(tmp_path: Path) -> Path:
    """A copy of the schema-7 mirror and its session files."""
    shutil.copytree(DATA, tmp_path / "v7")
    db = tmp_path / "v7" / "mirror.db"
    os.chmod(db, 0o600)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (7,)
    return db


def events_rows(db: Path, view: str) -> list[list[Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cursor = conn.execute(f"SELECT * FROM {view} ORDER BY session_id, seq")
        names = [d[0] for d in cursor.description]
        return [
            [canonical(v) if n == "data" else v for n, v in zip(names, row, strict=True)]
            for row in cursor
        ]


class TestSameAnswers:
    def test_every_read_after_the_migration(self, old_mirror: Path) -> None:
        """codex-logs migrate, then every read command, query_logs and the views: the old answers."""
        done = run_cli(old_mirror, "migrate")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{old_mirror}: ")
        assert " now (" in done.stdout
        with contextlib.closing(sqlite3.connect(old_mirror)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            assert LEGACY_TABLE not in names
            assert conn.execute(
                "SELECT type FROM sqlite_master WHERE name = 'session_events'"
            ).fetchone() == ("view",)
        for name, argv in READS:
            got = run_cli(old_mirror, *argv)
            assert got.returncode == 0, (name, got.stderr)
            if "--json" in argv:
                assert [canonical(line) for line in got.stdout.splitlines()] == [
                    canonical(line) for line in ANSWERS[name].splitlines()
                ], name
            else:
                assert got.stdout == ANSWERS[name], name
        logs = subprocess.run(
            [sys.executable, "-m", "codex_logging.query_logs", "--db", str(old_mirror), "--tail", "100", "--json"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert [canonical(line) for line in logs.stdout.splitlines()] == [
            canonical(line) for line in ANSWERS["query_logs"].splitlines()
        ]
        assert datas(json.loads(viewer_answers(old_mirror))) == datas(json.loads(ANSWERS["viewer"]))
        for view in ("events view", "session_events"):
            old = json.loads(ANSWERS[view])
            expected = [
                [canonical(v) if isinstance(v, str) and v.startswith("{") else v for v in row]
                for row in old
            ]
            got_rows = events_rows(old_mirror, view.split()[0])
            assert got_rows == expected, view

    def test_a_sync_after_it_goes_on_from_the_watermarks(self, old_mirror: Path) -> None:
        """The watermarks moved with the rows: nothing again, then only what was appended."""
        sessions = old_mirror.parent / "sessions"
        assert sync_to_sqlite(old_mirror, sessions).rows_inserted == 0
        with (sessions / "agent-run.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 2.0e9, "session_id": "agent-run", "message": "after"}) + "\n")
        assert sync_to_sqlite(old_mirror, sessions).rows_inserted == 1
        done = run_cli(old_mirror, "query", "--session-id", "agent-run", "--tail", "1", "--json")
        assert json.loads(done.stdout)["message"] == "after"
        assert json.loads(done.stdout)["seq"] == 10

    def test_dry_run_estimates_and_changes_nothing(self, old_mirror: Path) -> None:
        """--dry-run prints the size expected after and leaves the file as it was."""
        before = old_mirror.read_bytes()
        done = run_cli(old_mirror, "migrate", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert " expected after (" in done.stdout
        assert old_mirror.read_bytes() == before

    def test_no_database_is_one_line_and_exit_2(self, tmp_path: Path) -> None:
        done = run_cli(tmp_path / "none.db", "migrate")
        assert (done.returncode, done.stdout, len(done.stderr.splitlines())) == (2, "", 1)
        assert "no database at" in done.stderr
        assert not (tmp_path / "none.db").exists()


#: Moves the old rows of the database in argv[1] in batches of 300; prints each batch.
MOVER = """
import sys
import codex_logging._sqlite.db as db
db.MOVE_BATCH = 300
conn = db.connect(sys.argv[1], progress=lambda moved, total: print(moved, total, flush=True))
conn.close()
print("done", flush=True)
"""


def big_old_mirror(path: Path) -> None:
    """The schema-7 mirror with its rows copied under 400 more session ids (7,200 rows)."""
    shutil.copy(DATA / "mirror.db", path)
    os.chmod(path, 0o600)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO session_events SELECT session_id || '-' || n, seq, ts + n, kind, level,"
            " logger, role, message, data FROM session_events,"
            " (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 400)"
            " SELECT n FROM c)"
        )
        conn.commit()


class TestKilledMigration:
    def test_killed_at_random_points_then_rerun_as_uninterrupted(self, tmp_path: Path) -> None:
        """kill -9 of the moving process, again and again, then a rerun: the rows of an uninterrupted move."""
        reference, killed = tmp_path / "reference.db", tmp_path / "killed.db"
        big_old_mirror(reference)
        big_old_mirror(killed)
        subprocess.run([sys.executable, "-c", MOVER, str(reference)], check=True, timeout=120)
        expected = events_rows(reference, "session_events")
        assert len(expected) == 18 * 401
        rng = random.Random(25)
        kills = 0
        for _ in range(6):
            proc = subprocess.Popen(
                [sys.executable, "-c", MOVER, str(killed)], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            # Past the import and at least one batch, then at a random moment.
            first = proc.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.15))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
            if first.startswith("done"):
                break
            kills += 1
            # Killed midway: every row is in exactly one of the two tables.
            with contextlib.closing(sqlite3.connect(killed)) as conn:
                names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
                if LEGACY_TABLE in names:
                    (left,) = conn.execute(f"SELECT COUNT(*) FROM {LEGACY_TABLE}").fetchone()
                    (moved,) = conn.execute("SELECT COUNT(*) FROM session_rows").fetchone()
                    assert left + moved == len(expected)
            assert sorted(r[:2] for r in events_rows(killed, "session_events")) == sorted(
                r[:2] for r in expected
            )
        assert kills >= 1
        subprocess.run([sys.executable, "-c", MOVER, str(killed)], check=True, timeout=120)
        assert events_rows(killed, "session_events") == expected
        assert events_rows(killed, "events") == events_rows(reference, "events")
        with contextlib.closing(sqlite3.connect(killed)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


class TestEachValueOnce:
    def test_the_writers_fields_move_to_columns(self, tmp_path: Path) -> None:
        """A record the write path wrote keeps only its extra fields as JSON; data gives it all back."""
        folder = tmp_path / "s"
        folder.mkdir()
        line = {"ts": 1.25, "session_id": "a", "kind": "message", "level": "INFO", "logger": "app",
                "message": "m", "pid": 7, "role": "tool", "user": "bob"}  # fmt: skip
        (folder / "a.ndjson").write_text(json.dumps(line) + "\n")
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            row = conn.execute("SELECT shape, pid, fields FROM session_rows").fetchone()
            (data,) = conn.execute("SELECT data FROM session_events").fetchone()
            (text,) = conn.execute("SELECT session_id FROM session_keys").fetchone()
        assert row == (sum(BIT.values()), 7, '{"user":"bob"}')
        assert text == "a"
        assert data == json.dumps(line, separators=(",", ":"))

    @pytest.mark.parametrize(
        "record",
        [
            {},
            {"ts": "2026-01-01T00:00:00Z", "type": "session_start"},
            {"ts": 5, "pid": "77", "message": {"not": "text"}, "level": None},
            {"ts": 1.5, "session_id": "other", "pid": 2**70, "kind": 3},
            {"ts": 1796533854.5279543, "message": 'é \u2028 \x00 "q"', "logger": "a\\b"},
            # SQLite reads "1796538117.883901" back as this double: 17 digits are written.
            {"ts": 1796538117.8839011, "message": "m"},
            {"nested": {"a": [1, {"b": None}]}, "message": "m", "pid": -(2**63)},
        ],
    )
    def test_whole_record_comes_back(self, tmp_path: Path, record: dict[str, Any]) -> None:
        """Whatever the line holds, data is the record with the fields it had and no others."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "a.ndjson").write_text(json.dumps(record) + "\n")
        db = tmp_path / "x.db"
        sync_to_sqlite(db, folder)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (data,) = conn.execute("SELECT data FROM session_events").fetchone()
            row = conn.execute(
                "SELECT ts, kind, level, logger, role, message, pid, shape, fields FROM session_rows"
            ).fetchone()
        assert json.loads(data) == record
        assert whole("a", row) == record

    def test_lines_split_from_their_text_are_stored_as_from_their_records(
        self, tmp_path: Path
    ) -> None:
        """Lines in the write path's shape (split from their text) give the rows the record's way gives."""
        rng = random.Random(5)
        lines = []
        for i in range(3000):
            record: dict[str, Any] = {
                "ts": 1796533854.5 + i * 0.0123456, "session_id": "a",
                "kind": ["message", "start", "end"][i % 3], "level": ["INFO", "WARNING"][i % 2],
                "logger": "app", "message": f"step {i} ran {rng.random()}", "pid": 7 + i % 3,
            }  # fmt: skip
            if i % 4:
                record["role"] = "tool"
            if i % 5 == 1:
                record["status"] = "error"
            if i % 7 == 2:
                record.update(
                    user="b\u00f6b", n=rng.randrange(-(2**70), 2**70), f=rng.random() / 1e9
                )
            if i % 11 == 3:
                record["message"] = f"token ghp_{'x1Y2z3' * 6} used"
            if i % 13 == 4:
                record["detail"] = "password=hunter2"
            # As the write path writes without orjson (integers past 64 bits too).
            text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            lines.append(text.encode())
        databases = []
        for name, text in (("split", lines), ("record", [b"{ " + raw[1:] for raw in lines])):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "a.ndjson").write_bytes(b"\n".join(text) + b"\n")
            databases.append(tmp_path / f"{name}.db")
            sync_to_sqlite(databases[-1], folder)
        answers = []
        for db in databases:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                answers.append(
                    (
                        conn.execute("SELECT * FROM session_rows ORDER BY seq").fetchall(),
                        conn.execute("SELECT * FROM session_events ORDER BY seq").fetchall(),
                        conn.execute("SELECT * FROM session_summary").fetchall(),
                    )
                )
        assert len(answers[0][0]) == 3000
        assert answers[0] == answers[1]
        assert "hunter2" not in repr(answers[0])
        assert "x1Y2z3" not in repr(answers[0])

    def test_an_infinite_number_stays_json(self, tmp_path: Path) -> None:
        """1e400 (valid JSON, an infinite double) and an older hook's Infinity are stored as 1e999.

        Written as Infinity, the whole record was no JSON: SQLite's JSON
        functions failed on any query that reached it.
        """
        from codex_logging.query_logs import query

        db = synced_text(
            tmp_path,
            '{"ts":1796600005.5,"message":"huge","j":1e400,"k":[-1e400]}\n'
            '{"ts":1796600006.5,"message":"older","j":Infinity,"s":"Infinity"}\n',
        )
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute(
                "SELECT json_valid(data), json_extract(data, '$.j'), data FROM session_events"
                " ORDER BY seq"
            ).fetchall()
        assert [row[:2] for row in rows] == [(1, float("inf")), (1, float("inf"))]
        assert [json.loads(row[2]) for row in rows] == [
            {"ts": 1796600005.5, "message": "huge", "j": float("inf"), "k": [float("-inf")]},
            {"ts": 1796600006.5, "message": "older", "j": float("inf"), "s": "Infinity"},
        ]
        assert [e["message"] for e in query(str(db), where=["j>1"], tail=None)] == ["huge", "older"]

    def test_split_moves_only_exact_values(self) -> None:
        """A column takes a field only when it holds the very value: else the field stays in fields."""
        record = {"ts": 1.0, "kind": "end", "message": "m", "pid": True}
        pid, shape, fields = split(record, "a", (1.0, "end", None, None, None, "other"))
        assert (pid, shape) == (None, BIT["ts"] | BIT["kind"])
        assert json.loads(fields or "{}") == {"message": "m", "pid": True}

    def test_a_view_row_can_be_written_by_a_tool(self, tmp_path: Path) -> None:
        """INSERT and DELETE on the session_events view still work, as on the table it replaced."""
        db = tmp_path / "x.db"
        with contextlib.closing(connect(str(db))) as conn:
            conn.execute(
                "INSERT INTO session_events VALUES ('t', 1, 2.0, 'message', 'INFO', 'x', NULL, 'hi',"
                ' \'{"message": "hi", "k": 1}\')'
            )
            assert conn.execute("SELECT session_id, seq, data FROM session_events").fetchall() == [
                ("t", 1, '{"message":"hi","k":1}')
            ]
            conn.execute("DELETE FROM session_events WHERE session_id = 't'")
            assert conn.execute("SELECT COUNT(*) FROM session_rows").fetchone() == (0,)

    #: The insert trigger of schema 8 to 10: its session key was replaced by an outer REPLACE.
    OLD_TRIGGER = """CREATE TRIGGER session_events_insert INSTEAD OF INSERT ON session_events
        BEGIN
            INSERT OR IGNORE INTO session_keys (session_id) VALUES (NEW.session_id);
            INSERT INTO session_rows (sid, seq, ts, kind, level, logger, role, message, pid,
                shape, fields)
            VALUES ((SELECT id FROM session_keys WHERE session_id = NEW.session_id), NEW.seq,
                NEW.ts, NEW.kind, NEW.level, NEW.logger, NEW.role, NEW.message, NULL, 0, NEW.data);
        END"""

    def test_a_tools_upsert_and_data_are_kept_whole(self, tmp_path: Path) -> None:
        """sqlite-utils' upsert (INSERT OR REPLACE) hides no row; data reads back as the JSON written.

        Also on a mirror made before (schema 10), once opened.
        """
        db = tmp_path / "x.db"
        with contextlib.closing(connect(str(db))) as conn:
            conn.execute("DROP TRIGGER session_events_insert")
            conn.execute(self.OLD_TRIGGER)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
        with contextlib.closing(connect(str(db))) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            datas = ('{"a": 1}\n', ' {"b":[1, 2]}', '{\n  "c": "x"\n}', None)
            for seq, data in enumerate(datas, 1):
                conn.execute(
                    "INSERT INTO session_events (session_id, seq, message, data) VALUES (?, ?, ?, ?)",
                    ("t", seq, f"m{seq}", data),
                )
            conn.execute(
                "INSERT OR REPLACE INTO session_events (session_id, seq, message, data)"
                " VALUES ('t', 2, 'again', '{\"b\":3}')"
            )
            assert conn.execute(
                "SELECT seq, message, data FROM session_events ORDER BY seq"
            ).fetchall() == [
                (1, "m1", '{"a":1}'),
                (2, "again", '{"b":3}'),
                (3, "m3", '{"c":"x"}'),
                (4, "m4", "{}"),
            ]
            assert conn.execute("SELECT * FROM session_keys").fetchall() == [(1, "t")]
            for bad in ("[1, 2]", "not json", '{"a":1}}', "7"):
                with pytest.raises(sqlite3.IntegrityError, match="must be a JSON object"):
                    conn.execute(
                        "INSERT INTO session_events (session_id, seq, data) VALUES ('t', 9, ?)",
                        (bad,),
                    )
            assert conn.execute("SELECT COUNT(*) FROM session_rows").fetchone() == (4,)


class TestGrepIndex:
    NEEDLES = ("needle", "NEEDLE", "bob", "git", "é €", "ab", "x", '"q"', "status", "zzz-none",
               "agen", "assist", "codex_log", "23580", "ok", "straße", "SPAß")  # fmt: skip

    def test_same_answers_with_and_without_it_and_kept_by_the_sync(self, old_mirror: Path) -> None:
        """--grep gives what it gives without the index, for rows synced before and after it was built."""
        from codex_logging.query_logs import query

        sessions = old_mirror.parent / "sessions"
        with (sessions / "agent-run.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 2.0e9, "message": "later needle", "q": 'say "q"'}) + "\n")
            # Needles whose folded form is ASCII: not looked up in the index.
            f.write(json.dumps({"ts": 2.0e9 + 1, "message": "Straße zu", "x": "viel Spaß"}) + "\n")
        sync_to_sqlite(old_mirror, sessions)
        without = {n: query(str(old_mirror), grep=n, tail=None) for n in self.NEEDLES}
        assert run_cli(old_mirror, "migrate", "--grep-index", "on").returncode == 0
        with contextlib.closing(sqlite3.connect(old_mirror)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM session_grep").fetchone()[0] > 0
        assert {n: query(str(old_mirror), grep=n, tail=None) for n in self.NEEDLES} == without
        assert [e["message"] for e in without["needle"]][-1] == "later needle"
        assert (
            [e["message"] for e in without["straße"]]
            == ["Straße zu"]
            == [e["message"] for e in without["SPAß"]]
        )
        # Rows the sync adds are in the index at once (the same transaction).
        with (sessions / "structlog-run.ndjson").open("a") as f:
            f.write(json.dumps({"ts": 2.1e9, "message": "m", "detail": "fresh needle"}) + "\n")
        sync_to_sqlite(old_mirror, sessions)
        with contextlib.closing(sqlite3.connect(old_mirror)) as conn:
            (hits,) = conn.execute(
                "SELECT COUNT(*) FROM session_grep WHERE session_grep MATCH '\"fresh need\"'"
            ).fetchone()
        assert hits == 1
        assert [e["message"] for e in query(str(old_mirror), grep="fresh", tail=None)] == ["m"]
        assert run_cli(old_mirror, "migrate", "--grep-index", "off").returncode == 0
        with contextlib.closing(sqlite3.connect(old_mirror)) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert not any(name.startswith("session_grep") for name in names)
        assert [e["message"] for e in query(str(old_mirror), grep="fresh", tail=None)] == ["m"]

    def test_grep_answers_from_the_index(self, old_mirror: Path, traced_reads: list[str]) -> None:
        """The --grep query reads the index, not every row."""
        from codex_logging.query_logs import query

        assert run_cli(old_mirror, "migrate", "--grep-index", "on").returncode == 0
        query(str(old_mirror), grep="needle", tail=20)
        (sql,) = [s for s in traced_reads if "MATCH" in s]
        with contextlib.closing(sqlite3.connect(old_mirror)) as conn:
            conn.create_function("codex_grep_row", 6, lambda *_: True)
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        assert any("VIRTUAL TABLE INDEX" in step and "session_grep" in step for step in plan), plan
        assert not any(step.startswith("SCAN r") for step in plan), plan


def test_a_bare_file_name_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect("m.db") opens m.db here (it tried to create the folder '')."""
    monkeypatch.chdir(tmp_path)
    with contextlib.closing(connect("m.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert (tmp_path / "m.db").is_file()
