"""The command line, run as users run it: console scripts and python -m in subprocesses."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codex_logging import sync_to_sqlite
from codex_logging._cli.main import import_main, main, query_main
from tests.checks import NUMBER_LINES, NUMBER_WHERE, write_rich_session
from tests.conftest import db_connection, synced_text

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = (
        [sys.executable, "-m", "codex_logging.query_logs", *args[1:]]
        if args[0] == "query_logs"
        else [str(BIN / args[0]), *args[1:]]
    )
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with two sessions: a (6 events) and b (3 events), b's later in time."""
    folder = tmp_path / ".codex" / "sessions"
    folder.mkdir(parents=True)
    lines_a = [
        {"ts": 100.0 + i, "kind": k, "level": "INFO", "message": f"a{i}"}
        for i, k in enumerate(["start", "message", "message", "message", "message", "end"])
    ]
    lines_a[-1]["status"] = "ok"
    lines_b = [
        {
            "ts": 200.0 + i,
            "kind": "message",
            "level": "WARNING",
            "logger": "x",
            "message": f"b{i}\nsecond line",
            "role": "user",
        }
        for i in range(3)
    ]
    (folder / "a.ndjson").write_text("".join(json.dumps(x) + "\n" for x in lines_a))
    (folder / "b.ndjson").write_text("".join(json.dumps(x) + "\n" for x in lines_b))
    path = tmp_path / ".codex" / "session_logs.db"
    sync_to_sqlite(path, folder)
    return path


class TestQuery:
    def test_tail_is_latest_n_oldest_first(self, db: Path) -> None:
        """--tail N prints the last N of a session in file order."""
        out = run("query_logs", "--db", str(db), "--session-id", "a", "--tail", "3", "--json")
        assert out.returncode == 0, out.stderr
        assert [json.loads(line)["message"] for line in out.stdout.splitlines()] == [
            "a3",
            "a4",
            "a5",
        ]

    def test_across_sessions_orders_by_ts(self, db: Path) -> None:
        """Without --session-id the latest across sessions by ts, oldest first."""
        out = run("codex-logs", "query", "--db", str(db), "--tail", "4", "--json")
        assert [json.loads(line)["message"] for line in out.stdout.splitlines()] == [
            "a5",
            "b0\nsecond line",
            "b1\nsecond line",
            "b2\nsecond line",
        ]

    def test_kind_filter_and_json_fields(self, db: Path) -> None:
        """--kind filters; --json has every field, parsed, with seq and the status."""
        out = run("codex-logs", "query", "--db", str(db), "--kind", "end", "--json")
        (event,) = [json.loads(line) for line in out.stdout.splitlines()]
        assert {k: event[k] for k in ("session_id", "seq", "ts", "kind", "status", "message")} == {
            "session_id": "a", "seq": 6, "ts": 105.0, "kind": "end", "status": "ok", "message": "a5",
        }  # fmt: skip

    def test_text_columns(self, db: Path) -> None:
        """The text output has time, session, kind, level, logger, role and message."""
        out = run("query_logs", "--db", str(db), "--session-id", "b", "--tail", "1")
        first = out.stdout.splitlines()[0].split()
        assert first[2:7] == ["b", "message", "WARNING", "x", "[user]"]
        assert out.stdout.splitlines()[1] == "    second line"

    def test_database_from_environment(self, db: Path, tmp_path: Path) -> None:
        """--db defaults to CODEX_LOG_DB_PATH."""
        out = run("query_logs", "--tail", "1", "--json", env={"CODEX_LOG_DB_PATH": str(db)})
        assert json.loads(out.stdout)["message"] == "b2\nsecond line"

    def test_legacy_logs_table(self, tmp_path: Path) -> None:
        """A database with only the older logs(ts, session, kind, message) table is read."""
        legacy = tmp_path / "old.db"
        with db_connection(legacy) as conn:
            conn.execute("CREATE TABLE logs (ts TEXT, session TEXT, kind TEXT, message TEXT)")
            conn.executemany(
                "INSERT INTO logs VALUES (?, ?, ?, ?)",
                [(f"2025-01-01T00:00:0{i}", "old", "message", f"m{i}") for i in range(5)],
            )
        out = run("query_logs", "--db", str(legacy), "--session-id", "old", "--tail", "2", "--json")
        assert out.returncode == 0, out.stderr
        assert [json.loads(line)["message"] for line in out.stdout.splitlines()] == ["m3", "m4"]

    def test_sql_metacharacters_are_data(self, db: Path) -> None:
        """SQL metacharacters in flags are values, never SQL."""
        for flag in ("--role", "--grep"):
            out = run("codex-logs", "query", "--db", str(db), flag, "x' OR '1'='1")
            assert (out.returncode, out.stdout) == (0, "")
        out = run(
            "codex-logs",
            "query",
            "--db",
            str(db),
            "--session-id",
            "a';DROP TABLE session_events;--",
        )
        assert out.returncode == 2
        assert run("codex-logs", "query", "--db", str(db), "--tail", "1").stdout != ""

    def test_read_only(self, db: Path) -> None:
        """Queries open the database read-only: the file is not modified."""
        before = db.stat().st_mtime_ns, db.read_bytes()
        assert run("codex-logs", "query", "--db", str(db)).returncode == 0
        assert run("codex-logs", "sessions", "--db", str(db)).returncode == 0
        assert (db.stat().st_mtime_ns, db.read_bytes()) == before


class TestErrors:
    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (("query_logs", "--db", "{missing}"), "no database"),
            (("codex-logs", "query", "--db", "{db}", "--session-id", "nope"), "unknown session"),
            (("codex-logs", "query", "--db", "{db}", "--session-id", "../x"), "invalid session id"),
            (("codex-logs", "query", "--db", "{db}", "--tail", "-1"), "a whole number from 1 to"),
            (("codex-logs", "query", "--bogus"), "unrecognized arguments"),
            (("codex-logs", "sync", "--watch", "soon"), "a number of seconds from"),
            (
                (
                    "codex-logs",
                    "sync",
                    "--session",
                    "nope",
                    "--db",
                    "{db}",
                    "--sessions-dir",
                    "{dir}",
                ),
                "unknown session",
            ),
            (("codex-logs", "sessions", "--db", "{missing}"), "no database"),
            (("codex-import-ndjson",), "one of the arguments --session-id --all is required"),
            (("codex-logs", "query", "--db", "{db}", "--kind", "bogus"), "unknown kind 'bogus'"),
            (("codex-logs", "query", "--db", "{db}", "--level", "loud"), "unknown level 'loud'"),
            (("codex-logs", "query", "--db", "{db}", "--since", "soon"), "invalid time 'soon'"),
            (
                ("codex-logs", "sessions", "--db", "{db}", "--session-id", "zz"),
                "unknown session zz",
            ),
            (
                (
                    "codex-logs",
                    "prune",
                    "--older-than",
                    "1d",
                    "--db",
                    "postgresql:///db?host=/nonexistent-socket-dir",
                ),
                "failed: No such file or directory Is the server running locally",
            ),
            (
                ("codex-logs", "query", "--db", "postgresql:///db?host=/nonexistent-socket-dir"),
                "failed: No such file or directory Is the server running locally",
            ),
            (("codex-logs",), "required"),
            (("codex-logs", "--bogus"), "unrecognized option --bogus before COMMAND (one of sync,"),
        ],
    )
    def test_one_line_exit_2_no_traceback(
        self, db: Path, tmp_path: Path, args: tuple[str, ...], needle: str
    ) -> None:
        """Each bad input is one line on stderr, exit status 2, no traceback, no database made."""
        values = {
            "missing": str(tmp_path / "none.db"),
            "db": str(db),
            "dir": str(db.parent / "sessions"),
        }
        out = run(*(a.format(**values) for a in args))
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert needle in out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "none.db").exists()

    def test_database_without_our_tables(self, tmp_path: Path) -> None:
        """A SQLite file with neither table is a DatabaseError in the API and exit 2 on the CLI."""
        from codex_logging import DatabaseError
        from codex_logging.query_logs import query

        other = tmp_path / "other.db"
        with db_connection(other) as conn:
            conn.execute("CREATE TABLE unrelated (x)")
        with pytest.raises(DatabaseError, match="no session_events or logs table"):
            query(str(other), None, 5)
        for args in (
            ("query_logs", "--db", str(other)),
            ("codex-logs", "sessions", "--db", str(other)),
        ):
            out = run(*args)
            assert (out.returncode, len(out.stderr.splitlines())) == (2, 1), out.stderr

    def test_closed_pipe_ends_quietly(self, db: Path) -> None:
        """Output into a closed pipe (| head) ends with no error message."""
        proc = subprocess.Popen(
            f"'{BIN / 'codex-logs'}' query --db '{db}' --tail 9 | head -n 1",
            shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, err = proc.communicate(timeout=60)
        assert len(out.splitlines()) == 1
        assert err == ""


HUGE = str(2**63)
DIGITS = "9" * 400


class TestNumericFlags:
    @pytest.mark.parametrize(
        ("args", "flag"),
        [
            (["query", "--tail", HUGE], "--tail"),
            (["query", "--tail", "99999999999999999999999"], "--tail"),
            (["query", "--tail", "0"], "--tail"),
            (["query", "--tail", "-5"], "--tail"),
            (["query", "--tail", "1e3"], "--tail"),
            (["query", "--tail", "2.5"], "--tail"),
            (["query", "--since", "99999999999w"], "--since"),
            (["query", "--since", DIGITS + "d"], "--since"),
            (["query", "--until", "36526d"], "--until"),
            (["query", "--until", "1e300w"], "--until"),
            (["sync", "--watch", "0"], "--watch"),
            (["sync", "--watch", "0.001"], "--watch"),
            (["sync", "--watch", "-1"], "--watch"),
            (["sync", "--watch", "nan"], "--watch"),
            (["sync", "--watch", "inf"], "--watch"),
            (["sync", "--watch", "1e308"], "--watch"),
            (["sync", "--watch", "86401"], "--watch"),
            (["sync", "--watch", DIGITS], "--watch"),
            (["prune", "--older-than", "99999999999999w"], "--older-than"),
            (["prune", "--older-than", DIGITS + "s"], "--older-than"),
            (["prune", "--older-than=-1d"], "--older-than"),
            (["query", "--level", "99999999999999999999"], "--level"),
        ],
    )
    def test_out_of_range_is_one_line_naming_the_flag(
        self, db: Path, args: list[str], flag: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A number out of its flag's range: one stderr line naming command and flag, exit 2."""
        with pytest.raises(SystemExit) as info:
            main([*args, "--db", str(db)])
        assert info.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"codex-logs {args[0]}: error: argument {flag}: ")
        assert "or a number" not in line  # it was one

    def test_query_logs_checks_tail_too(self, db: Path) -> None:
        """python -m codex_logging.query_logs: the same check, no OverflowError traceback."""
        out = run("query_logs", "--db", str(db), "--tail", HUGE)
        assert out.returncode == 2
        assert out.stderr == (
            "python -m codex_logging.query_logs: error: argument --tail: expected a whole"
            f" number from 1 to {2**63 - 1}, got '{HUGE}'\n"
        )

    def test_the_limits_themselves_are_taken(
        self, db: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--tail 2**63-1, --since 36525d and --until 0s work; every event is shown."""
        assert main(["query", "--db", str(db), "--tail", str(2**63 - 1), "--since", "36525d"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 9 + 3  # b's messages have two lines
        assert main(["query", "--db", str(db), "--tail", "1", "--until", "0s"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2

    def test_tail_limits_on_postgresql(self, pg_url: str, db: Path) -> None:
        """On PostgreSQL too: --tail 2**63-1 shows every event; 2**63 is one line, exit 2."""
        from codex_logging import InvalidFilterError, sync_to_postgres
        from codex_logging._postgres.read import query_postgres

        sync_to_postgres(pg_url, db.parent / "sessions")
        out = run("codex-logs", "query", "--db", pg_url, "--tail", str(2**63 - 1), "--json")
        assert (out.returncode, len(out.stdout.splitlines())) == (0, 9), out.stderr
        out = run("codex-logs", "query", "--db", pg_url, "--tail", HUGE)
        assert (out.returncode, len(out.stderr.splitlines())) == (2, 1)
        with pytest.raises(InvalidFilterError, match="tail must be a whole number"):
            query_postgres(pg_url, tail=2**63)

    def test_prune_older_than_0s(self, tmp_path: Path) -> None:
        """`prune --older-than 0s` is taken and retires every session that has ended."""
        folder = tmp_path / "s"
        folder.mkdir()
        path = folder / "done.ndjson"
        path.write_text(json.dumps({"ts": time.time() - 60, "kind": "end", "status": "ok"}) + "\n")
        os.utime(path, (time.time() - 60, time.time() - 60))
        sync_to_sqlite(tmp_path / "x.db", folder)
        out = run(
            "codex-logs", "prune", "--older-than", "0s",
            "--db", str(tmp_path / "x.db"), "--sessions-dir", str(folder),
        )  # fmt: skip
        assert (out.returncode, out.stderr) == (0, "")
        assert out.stdout.splitlines()[-1] == "retired 1 session: 1 files and 0 rows deleted"
        assert not path.exists()


class TestSync:
    def test_sync_and_import_and_sessions(self, tmp_path: Path) -> None:
        """codex-logs sync, codex-import-ndjson and codex-logs sessions over the defaults."""
        folder = tmp_path / ".codex" / "sessions"
        folder.mkdir(parents=True)
        (folder / "s1.ndjson").write_text(
            '{"ts": 1, "kind": "start"}\n{"ts": 2, "kind": "end", "status": "ok"}\n'
        )
        env = {"CODEX_SESSIONS_DIR": str(folder), "CODEX_LOG_DB_PATH": str(tmp_path / "x.db")}
        out = run("codex-import-ndjson", "--session", "s1", env=env)  # the hidden alias
        assert (out.returncode, out.stdout) == (
            0,
            "synced 1 file: 2 rows inserted, 0 lines quarantined\n",
        )
        out = run("codex-logs", "sync", "--session-id", "s1", env=env)
        assert out.stdout == "synced 1 file: 0 rows inserted, 0 lines quarantined\n"
        out = run("codex-logs", "sessions", "--json", env=env)
        assert json.loads(out.stdout) == {
            "session_id": "s1", "start_time": "1970-01-01T00:00:01.000Z",
            "end_time": "1970-01-01T00:00:02.000Z", "status": "ok", "events": 2, "messages": 0,
            "warnings": 0, "errors": 0, "processes": 0, "duration_s": 1.0, "start_ts": 1.0,
            "end_ts": 2.0,
        }  # fmt: skip
        fields = run("codex-logs", "sessions", env=env).stdout.split()
        assert [fields[0], *fields[5:]] == [
            "s1", "ok", "2", "messages=0", "warnings=0", "errors=0", "processes=0", "duration=1.00s",
        ]  # fmt: skip

    def test_watch_stops_on_sigint_after_a_last_round(self, tmp_path: Path) -> None:
        """--watch syncs each round; SIGINT ends it with exit 0 after one more round."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "w.ndjson").write_text('{"message": "one"}\n')
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--watch", "0.2", "--db", str(tmp_path / "x.db"), "--sessions-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline() == "synced 1 file: 1 rows inserted, 0 lines quarantined\n"
        with (folder / "w.ndjson").open("a") as f:
            f.write('{"message": "two"}\n')
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert (
            sum(int(line.split()[3]) for line in out.splitlines()) == 1
        )  # "two" synced exactly once
        with db_connection(tmp_path / "x.db") as conn:
            assert conn.execute("SELECT count(*) FROM session_events").fetchone() == (2,)

    def test_watch_before_the_first_session_warns_once(self, tmp_path: Path) -> None:
        """A --watch started before the folder exists warns once, makes no database, then syncs it.

        Only the first round says it found nothing: later idle rounds are quiet.
        """
        folder = tmp_path / "later"
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--watch", "0.1", "--db", str(tmp_path / "x.db"), "--sessions-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline() == "synced 0 files: 0 rows inserted, 0 lines quarantined\n"
        time.sleep(0.5)  # several more rounds with no folder, said nowhere
        assert not (tmp_path / "x.db").exists()
        folder.mkdir(mode=0o700)
        (folder / "w.ndjson").write_text('{"message": "one"}\n')
        while proc.stdout.readline() != "synced 1 file: 1 rows inserted, 0 lines quarantined\n":
            pass
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err.splitlines() == [f"warning: no sessions folder {folder} (yet): nothing to sync"]


class TestInProcess:
    def test_entry_points_return_status(self, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """main(argv) functions return the exit status, for tests and embedding."""
        assert query_main(["--db", str(db), "--tail", "1"]) == 0
        assert main(["query", "--db", str(db), "--session-id", "zz"]) == 2
        assert (
            import_main(["--all", "--db", str(db), "--sessions-dir", str(db.parent / "sessions")])
            == 0
        )
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("codex-logs 0.")


class TestQueryFlags:
    def test_time_level_grep_role_on_the_command_line(self, db: Path) -> None:
        """--since/--until, --level, --grep and --role filter as documented."""
        base = ("codex-logs", "query", "--db", str(db), "--json")
        assert [json.loads(x)["message"] for x in run(*base, "--since", "1970-01-01T00:03:21Z").stdout.splitlines()] == [
            "b1\nsecond line", "b2\nsecond line",
        ]  # fmt: skip
        out = run(*base, "--until", "1970-01-01T00:01:42Z", "--level", "info").stdout
        assert [json.loads(x)["message"] for x in out.splitlines()] == ["a0", "a1"]
        assert len(run(*base, "--level", "WARN").stdout.splitlines()) == 3
        assert [
            json.loads(x)["message"] for x in run(*base, "--grep", "A4").stdout.splitlines()
        ] == ["a4"]
        assert len(run(*base, "--role", "user", "--since", "3650d").stdout.splitlines()) == 0
        assert len(run(*base, "--role", "user").stdout.splitlines()) == 3


class TestEndRecords:
    def test_a_failed_end_shows_status_error_and_duration(self, tmp_path: Path) -> None:
        """An end record's text line ends with its status, error type and message, and duration."""
        folder = tmp_path / "s"
        folder.mkdir()
        end = {"ts": 1, "kind": "end", "level": "ERROR", "message": "session end", "status": "error",
               "error_type": "ValueError", "error": "disk on fire", "duration_s": 1.25}  # fmt: skip
        (folder / "f.ndjson").write_text(json.dumps(end) + "\n")
        sync_to_sqlite(tmp_path / "x.db", folder)
        out = run("codex-logs", "query", "--db", str(tmp_path / "x.db")).stdout
        assert out.endswith(
            "  f  end      ERROR     -  session end (error, ValueError: disk on fire, 1.25s)\n"
        )


class TestCutShort:
    def test_ctrl_c_during_a_sync_is_exit_130(self, tmp_path: Path) -> None:
        """SIGINT cuts a sync short: 130, so `codex-logs sync && ...` stops; the rows taken stay."""
        folder = tmp_path / "s"
        folder.mkdir()
        line = json.dumps({"ts": 1.0, "level": "INFO", "message": "m" * 40, "n": 1}) + "\n"
        (folder / "big.ndjson").write_text(line * 400_000)
        db = tmp_path / "x.db"
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--db", str(db), "--sessions-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60

        def stored() -> int:
            if not db.exists():
                return 0
            with contextlib.suppress(sqlite3.Error), db_connection(db) as conn:
                return int(conn.execute("SELECT count(*) FROM session_events").fetchone()[0])
            return 0

        while not stored() and time.monotonic() < deadline:  # the sync is under way
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (out, err)
        with db_connection(db) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM session_events").fetchone()
        assert 0 < rows < 400_000

    def test_a_full_disk_behind_stdout_is_one_line_and_exit_2(self, db: Path) -> None:
        """Output that cannot be written (> /dev/full): one line on stderr, exit 2, no traceback."""
        for command in (["query", "--json"], ["sessions"]):
            with open("/dev/full", "w") as full:
                done = subprocess.run(
                    [str(BIN / "codex-logs"), *command, "--db", str(db)],
                    stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert done.stderr.count("\n") == 1
            assert "No space left on device" in done.stderr

    def test_export_output_on_a_full_disk_is_not_blamed_on_the_files(self, tmp_path: Path) -> None:
        """export otlp --dry-run --json > /dev/full: one line about the output, exit 2 (it said
        every session file was skipped, unreadable, and exit 0)."""
        folder = tmp_path / "s"
        folder.mkdir()
        for n in range(3):
            (folder / f"x{n}.ndjson").write_text(json.dumps({"ts": 1.5, "message": f"m{n}"}) + "\n")
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [str(BIN / "codex-logs"), "export", "otlp", "--dry-run", "--json", "--sessions-dir", str(folder)],
                stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
            )  # fmt: skip
        assert (done.returncode, done.stderr) == (
            2, "codex-logs export: error: cannot write the output: No space left on device\n",
        )  # fmt: skip

    def test_an_unreadable_sessions_folder_is_one_line_and_exit_2(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A folder that cannot be listed (no read permission; root reads anything, so faked)."""
        folder = tmp_path / "s"
        folder.mkdir()

        def refuse(path: object) -> list[str]:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr("codex_logging._mirror.engine.os.listdir", refuse)
        code = main(["sync", "--db", str(tmp_path / "x.db"), "--sessions-dir", str(folder)])
        err = capsys.readouterr().err
        assert code == 2
        assert (
            err
            == f"codex-logs sync: error: cannot list the sessions folder {folder}: Permission denied\n"
        )


class TestShowOptions:
    def test_help_says_shows_own_defaults_and_two_sessions_are_refused(self, db: Path) -> None:
        """show --help gives show's defaults (100 events, the latest session); SESSION and another
        --session-id are one line and exit 2."""
        out = run("codex-logs", "show", "--help").stdout
        assert "the latest N events (default 100)" in " ".join(out.split())
        assert "(default: all)" not in out
        done = run("codex-logs", "show", "a", "--session-id", "b", "--db", str(db))
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == "codex-logs show: error: two sessions named: a and --session-id b\n"
        assert run("codex-logs", "show", "a", "--session-id", "a", "--db", str(db)).returncode == 0


class TestNonFiniteNumbers:
    def test_nan_and_infinite_times_are_no_time_and_json_stays_json(self, tmp_path: Path) -> None:
        """An older hook's NaN, Infinity, 1e400: no ts column (not first or last in every tail), and
        --json writes them as protobuf's JSON mapping does, so every parser reads the output."""
        db = synced_text(
            tmp_path,
            '{"ts":1796500000,"kind":"start","pid":1}\n{"ts":NaN,"message":"m","x":Infinity}\n'
            '{"ts":1e400,"kind":"end","status":"ok","pid":1}\n{"ts":1796500001.5,"message":"last","y":-Infinity}\n',
            sid="n",
        )
        with db_connection(db) as conn:
            assert conn.execute("SELECT seq, ts FROM session_events ORDER BY seq").fetchall() == [
                (1, 1796500000.0), (2, None), (3, None), (4, 1796500001.5),
            ]  # fmt: skip
        out = run("codex-logs", "query", "--db", str(db), "--json", "--session-id", "n").stdout

        def refuse(constant: str) -> None:
            raise ValueError(constant)

        records = [json.loads(line, parse_constant=refuse) for line in out.splitlines()]
        assert [(r["seq"], r["ts"]) for r in records] == [
            (1, 1796500000.0), (2, "NaN"), (3, "Infinity"), (4, 1796500001.5),
        ]  # fmt: skip
        assert (records[1]["x"], records[3]["y"]) == ("Infinity", "-Infinity")
        assert (
            run("codex-logs", "query", "--db", str(db), "--tail", "1")
            .stdout.rstrip()
            .endswith("last  y=-Infinity")
        )


class TestFieldsNamedLikeColumns:
    def test_a_records_own_seq_and_mark_fields_are_kept(self, tmp_path: Path) -> None:
        """A message's own seq, status, error, host... are fields like any; the mirror's seq stays seq."""
        import logging

        from codex_logging import CodexHandler

        logger = logging.getLogger("test.columns")
        logger.propagate = False
        handler = CodexHandler(tmp_path / "s", "f")
        logger.handlers[:] = [handler]
        try:
            logger.warning(
                "GET /api done",
                extra={"seq": 99, "status": 503, "error": "upstream timeout", "error_type": "Timeout",
                       "duration_s": 2.5, "signal": "weak", "host": "api.example.com", "folder": "inbox",
                       "source_id": "feed-7", "exception": {"type": "Timeout"}},
            )  # fmt: skip
        finally:
            logger.handlers.clear()
            handler.close()
        db = str(tmp_path / "x.db")
        sync_to_sqlite(db, tmp_path / "s")
        (record,) = [
            json.loads(x)
            for x in run("codex-logs", "query", "--db", db, "--json").stdout.splitlines()
        ]
        assert record["seq"] == 1  # the line number
        assert record["extra.seq"] == 99
        assert {k: record[k] for k in ("status", "error", "host", "source_id", "exception")} == {
            "status": 503, "error": "upstream timeout", "host": "api.example.com", "source_id": "feed-7",
            "exception": {"type": "Timeout"},
        }  # fmt: skip
        for command in (["query"], ["show", "--color", "never"]):
            out = run("codex-logs", *command, "--db", db)
            assert out.returncode == 0, out.stderr
            for pair in ("extra.seq=99", "status=503", 'error="upstream timeout"', "error_type=Timeout",
                         "duration_s=2.5", "signal=weak", "host=api.example.com", "folder=inbox",
                         "source_id=feed-7", 'exception={"type":"Timeout"}'):  # fmt: skip
                assert pair in out.stdout, (command, pair, out.stdout)

    def test_a_team_rows_start_mark_shows_no_host(self) -> None:
        """On a team mirror's row the scope's own host is displaced to extra.host: a mark leaves it out."""
        from codex_logging._cli.output import Transcript

        out = io.StringIO()
        data = '{"ts": 1.0, "kind": "start", "host": "container", "pid": 3, "task": "t"}'
        Transcript(out, colour=False).write([
            {"session_id": "s", "seq": 1, "ts": 1.0, "kind": "start", "level": "INFO", "logger": None,
             "role": None, "message": "session start", "data": data, "source_id": "src", "host": "vm",
             "folder": "/f"},
        ])  # fmt: skip
        assert out.getvalue().endswith(" ── start s · pid 3 ──  task=t\n"), out.getvalue()

    def test_a_traceback_is_shown_once(self, tmp_path: Path) -> None:
        """dict_tracebacks' structured exception is the traceback shown under the line, not a field too."""
        folder = tmp_path / "s"
        folder.mkdir()
        record = {"ts": 1.0, "level": "ERROR", "message": "boom", "exc": "Traceback (most recent call last):\nValueError: x",
                  "exception": [{"exc_type": "ValueError", "exc_value": "x", "frames": []}]}  # fmt: skip
        (folder / "f.ndjson").write_text(json.dumps(record) + "\n")
        db = str(tmp_path / "x.db")
        sync_to_sqlite(db, folder)
        out = run("codex-logs", "show", "f", "--db", db, "--color", "never").stdout
        assert "    ValueError: x" in out
        assert "exception=" not in out


class TestEscaping:
    HOSTILE = "clear\x1b[2J title\x1b]0;pwned\x07 cr\rdel\x7f csi\x9b tab\tend\nnext"

    def test_text_output_escapes_controls(self, tmp_path: Path) -> None:
        """ESC, BEL, CR, DEL and C1 from a record are printed escaped; a newline stays a new line."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "h.ndjson").write_text(
            json.dumps({"ts": 1, "message": self.HOSTILE, "logger": "l\x1bx"}) + "\n"
        )
        sync_to_sqlite(tmp_path / "x.db", folder)
        out = run("codex-logs", "query", "--db", str(tmp_path / "x.db")).stdout
        first, second = out.splitlines()
        assert first.endswith(
            "  l\\x1bx  clear\\x1b[2J title\\x1b]0;pwned\\x07 cr\\rdel\\x7f csi\\x9b tab\tend"
        )
        assert second == "    next"
        assert not any(ch in out for ch in "\x1b\x07\r\x7f\x9b")

    def test_json_output_escapes_c1_and_round_trips(self, tmp_path: Path) -> None:
        """--json escapes C0, DEL and C1 controls and still parses back to the exact message."""
        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "h.ndjson").write_text(json.dumps({"ts": 1, "message": self.HOSTILE}) + "\n")
        sync_to_sqlite(tmp_path / "x.db", folder)
        for args in (("query",), ("sessions",)):
            out = run("codex-logs", *args, "--db", str(tmp_path / "x.db"), "--json").stdout
            assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in out[:-1])
        out = run("codex-logs", "query", "--db", str(tmp_path / "x.db"), "--json").stdout
        assert "\\u009b" in out
        assert "\\u007f" in out
        assert json.loads(out)["message"] == self.HOSTILE

    #: Bidi overrides, embeddings, isolates and marks, zero-width characters,
    #: separators, a BOM, a soft hyphen and a tag (outside the BMP).
    INVISIBLE = (
        "file: \u202egnp.exe \u202a\u202b\u202c\u202d \u2066\u2067\u2068\u2069"
        " \u200e\u200f\u061c zw\u200b\u200c\u200dj \u2060 sep\u2028para\u2029"
        " bom\ufeff shy\u00ad tag\U000e0041"
    )

    def test_text_output_escapes_bidi_and_zero_width(self, tmp_path: Path) -> None:
        """Bidi controls, zero-width and other format characters are printed as \\u escapes."""
        folder = tmp_path / "s"
        folder.mkdir()
        record = {"ts": 1, "message": self.INVISIBLE, "logger": "l\u202ex", "role": "\u2066r"}
        (folder / "h.ndjson").write_text(json.dumps(record) + "\n")
        sync_to_sqlite(tmp_path / "x.db", folder)
        out = run("codex-logs", "query", "--db", str(tmp_path / "x.db")).stdout
        (line,) = out.splitlines()
        assert line.endswith(
            "  l\\u202ex  [\\u2066r] file: \\u202egnp.exe \\u202a\\u202b\\u202c\\u202d"
            " \\u2066\\u2067\\u2068\\u2069 \\u200e\\u200f\\u061c zw\\u200b\\u200c\\u200dj"
            " \\u2060 sep\\u2028para\\u2029 bom\\ufeff shy\\xad tag\\U000e0041"
        )
        assert not [c for c in out if unicodedata.category(c) in ("Cf", "Zl", "Zp")]

    def test_json_output_escapes_bidi_and_zero_width(self, tmp_path: Path) -> None:
        """--json writes them as \\u escapes (a surrogate pair outside the BMP) and parses back exactly."""
        folder = tmp_path / "s"
        folder.mkdir()
        record = {"ts": 1, "kind": "end", "message": self.INVISIBLE, "error": "\u202e!"}
        (folder / "h.ndjson").write_text(json.dumps(record) + "\n")
        sync_to_sqlite(tmp_path / "x.db", folder)
        for args in (("query",), ("sessions",)):
            out = run("codex-logs", *args, "--db", str(tmp_path / "x.db"), "--json").stdout
            assert not [c for c in out if unicodedata.category(c) in ("Cf", "Zl", "Zp")]
        out = run("codex-logs", "query", "--db", str(tmp_path / "x.db"), "--json").stdout
        assert "file: \\u202egnp.exe" in out
        assert "tag\\udb40\\udc41" in out
        assert json.loads(out)["message"] == self.INVISIBLE
        assert json.loads(out)["error"] == "\u202e!"

    def test_every_format_character_of_unicode(self) -> None:
        """The listed characters are exactly Unicode's Cf, Zl and Zp (as of this Python's Unicode)."""
        from codex_logging._cli.output import FORMAT_CHARACTERS, escape, to_json

        listed = {chr(c) for c in range(0x110000) if re.fullmatch(f"[{FORMAT_CHARACTERS}]", chr(c))}
        categories = {
            chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")
        }
        assert categories <= listed
        # Listed for a newer Unicode: unassigned in an older one, never another category.
        assert {unicodedata.category(c) for c in listed - categories} <= {"Cn"}
        text = "".join(sorted(listed))
        assert not set(escape(text)) & listed
        assert not set(to_json(text)) & listed
        assert json.loads(to_json(text)) == text


class TestEscapingProperty:
    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(
            st.text(
                alphabet=st.characters()
                | st.sampled_from("\u202e\u2066\u2069\u200b\u200d\u2028\u2029\ufeff\U000e0041"),
                max_size=40,
            ),
            min_size=1,
            max_size=5,
        )
    )
    def test_no_control_character_reaches_the_terminal(self, texts: list[str]) -> None:
        """Any messages: the text output holds no control character but newline and tab, --json none, and parses back."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "s"
            folder.mkdir()
            lines = [
                json.dumps({"ts": i, "message": text, "role": text}) + "\n"
                for i, text in enumerate(texts)
            ]
            (folder / "p.ndjson").write_text("".join(lines))
            sync_to_sqlite(Path(tmp) / "x.db", folder)
            outputs = []
            for extra in ([], ["--json"]):
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    assert query_main(["--db", str(Path(tmp) / "x.db"), "--tail", "9", *extra]) == 0
                outputs.append(buffer.getvalue())
        text, as_json = outputs
        assert not [
            c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F
        ]
        assert not [c for c in as_json.replace("\n", "") if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
        for output in outputs:
            assert not [c for c in output if unicodedata.category(c) in ("Cf", "Zl", "Zp")]
        # Split on "\n" only, as docs/record-format.md asks of readers.
        assert [json.loads(line)["message"] for line in as_json.split("\n")[:-1]] == [
            t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for t in texts
        ]


def test_a_lone_surrogate_in_a_field_is_shown_as_its_escape(tmp_path: Path) -> None:
    """A line another tool wrote with an escaped lone surrogate reads back on every output."""
    db = synced_text(
        tmp_path, '{"ts":1796600005.5,"message":"lone","x":"\\udfff","y":["\\ud800"]}\n'
    )
    env = {"CODEX_LOG_DB_PATH": str(db)}
    out = run("codex-logs", "query", "--all", "--json", env=env)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert (record["x"], record["y"]) == ("\udfff", ["\ud800"])
    for args in (("codex-logs", "query", "--all"), ("codex-logs", "show", "s"), ("query_logs",)):
        out = run(*args, env=env)
        assert out.returncode == 0, out.stderr
        assert 'x=\\udfff y=["\\ud800"]' in out.stdout, out.stdout


class TestDiscovery:
    def test_finds_the_nearest_codex_folder_upward(self, db: Path) -> None:
        """From a subdirectory, with no flag and no variable, commands use the parent's .codex/."""
        sub = db.parent.parent / "src" / "deep"
        sub.mkdir(parents=True)
        out = subprocess.run(
            [str(BIN / "codex-logs"), "query", "--tail", "1", "--json"],
            cwd=sub, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert json.loads(out.stdout)["message"] == "b2\nsecond line"
        (db.parent / "sessions" / "c.ndjson").write_text('{"message": "from below"}\n')
        out = subprocess.run(
            [str(BIN / "codex-logs"), "sync"],
            cwd=sub,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.stdout == "synced 3 files: 1 rows inserted, 0 lines quarantined\n"
        assert not (sub / ".codex").exists()

    def test_error_names_where_it_looked(self, tmp_path: Path) -> None:
        """With no .codex/ holding logs anywhere up, the error names the folder it started from."""
        bare = tmp_path / "elsewhere" / "x"
        bare.mkdir(parents=True)
        (tmp_path / "elsewhere" / ".codex").mkdir()  # a settings-only .codex/ is not a project
        out = subprocess.run(
            [str(BIN / "codex-logs"), "sessions"],
            cwd=bare,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2
        assert out.stderr == (
            f"codex-logs sessions: error: no database: no .codex/ with a sessions folder or"
            f" session_logs.db in {bare} or any parent (pass --db or set CODEX_LOG_DB_PATH)\n"
        )


class TestFollow:
    def test_follow_prints_new_events_and_ctrl_c_exits_0(self, db: Path) -> None:
        """--follow prints the tail, then events as a sync lands them; SIGINT ends it with exit 0."""
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "query", "--db", str(db), "--session-id", "a", "--tail", "1", "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().endswith("  end      INFO      -  a5 (ok)\n")
            with (db.parent / "sessions" / "a.ndjson").open("a") as f:
                f.write('{"ts": 300, "message": "landed"}\n')
            with (db.parent / "sessions" / "b.ndjson").open("a") as f:
                f.write('{"ts": 301, "message": "other session"}\n')
            sync_to_sqlite(db, db.parent / "sessions")
            assert proc.stdout.readline().endswith("  a  message            -  landed\n")
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out, err) == (0, "", "")


class TestHelp:
    def test_importer_help_and_behaviour_agree(self) -> None:
        """codex-import-ndjson's help says one of --session-id or --all is required, as it is."""
        out = run("codex-import-ndjson", "--help").stdout
        assert "one of them is required" in " ".join(out.split())
        assert "(the default)" not in out
        assert "(the default)" in run("codex-logs", "sync", "--help").stdout


class TestProgress:
    def test_progress_line_on_a_terminal(self, tmp_path: Path) -> None:
        """On a terminal a sync shows files, lines and rate on one refreshed stderr line."""
        import pty

        folder = tmp_path / "s"
        folder.mkdir()
        (folder / "big.ndjson").write_text(
            "".join(f'{{"message": "m{i}"}}\n' for i in range(30_000))
        )
        main_fd, child_fd = pty.openpty()
        proc = subprocess.Popen(
            [str(BIN / "codex-logs"), "sync", "--db", str(tmp_path / "x.db"), "--sessions-dir", str(folder)],
            stdout=subprocess.PIPE, stderr=child_fd, text=True,
        )  # fmt: skip
        os.close(child_fd)
        out, _ = proc.communicate(timeout=60)
        seen = b""
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.close(main_fd)
        assert out == "synced 1 file: 30,000 rows inserted, 0 lines quarantined\n"
        assert b"lines/s (big)" in seen
        assert seen.endswith(b"\r\x1b[K")


@pytest.fixture
def rich(tmp_path: Path) -> Path:
    """A database whose session 'r' has fields, a traceback, a custom level and a failed end."""
    folder = tmp_path / ".codex" / "sessions"
    folder.mkdir(parents=True)
    write_rich_session(folder)
    (folder / "old.ndjson").write_text(json.dumps({"ts": 1.0, "message": "older session"}) + "\n")
    path = tmp_path / ".codex" / "session_logs.db"
    sync_to_sqlite(path, folder)
    return path


def messages(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["message"] for line in out.stdout.splitlines()]


class TestWhereAndGrep:
    def test_where_compares_text_numbers_and_absence(self, rich: Path) -> None:
        """--where KEY=VALUE, !=, > and < on record fields, repeatable; all must hold."""
        q = ("codex-logs", "query", "--db", str(rich), "--json", "--all")
        assert messages(run(*q, "--where", "tool=git")) == ["calling git", "boom"]
        assert messages(run(*q, "--where", "tool=git", "--where", "user=alice")) == ["calling git"]
        assert messages(run(*q, "--where", "ms>1000")) == ["slow\x1b[2J"]
        assert messages(run(*q, "--where", "ms<1000", "--where", "ms>=812.5")) == ["calling git"]
        assert messages(run(*q, "--where", "ok=true")) == ["calling git"]
        assert messages(run(*q, "--where", "levelno=25")) == ["<script>alert(1)</script>"]
        # != keeps the records without the field: everything but git's two
        assert len(messages(run(*q, "--where", "tool!=git"))) == 5
        # a text field never compares as a number
        assert messages(run(*q, "--where", "tool>1")) == []

    def test_where_compares_a_number_as_a_number(self, tmp_path: Path) -> None:
        """A number given to = and != meets a field's number as a number, however either is spelled."""
        db = synced_text(tmp_path, NUMBER_LINES, sid="n")
        q = ("codex-logs", "query", "--db", str(db), "--json", "--all")
        found = [(test, messages(run(*q, "--where", test))) for test, _ in NUMBER_WHERE]
        assert found == list(NUMBER_WHERE)

    def test_grep_searches_field_values_not_names(self, rich: Path) -> None:
        """--grep finds a field's value (any case), never a field name, the time or the level."""
        q = ("codex-logs", "query", "--db", str(rich), "--json", "--all")
        assert messages(run(*q, "--grep", "ALICE")) == ["calling git"]
        assert messages(run(*q, "--grep", "two words")) == ["calling git"]
        assert messages(run(*q, "--grep", "user")) == []  # a field name
        assert messages(run(*q, "--grep", "warning")) == []  # the level
        assert messages(run(*q, "--grep", "valueerror")) == ["boom"]  # the traceback field

    def test_bad_where_is_one_line_exit_2(self, rich: Path) -> None:
        """A --where without an operator, or > with a word, names the flag; exit 2."""
        for bad in ("tool", "ms>fast", "=x", 'a"b=1'):
            out = run("codex-logs", "query", "--db", str(rich), "--where", bad)
            assert out.returncode == 2
            assert out.stderr.startswith(
                "codex-logs query: error: argument --where: invalid --where"
            )
            assert len(out.stderr.splitlines()) == 1

    def test_where_on_the_older_logs_table_is_refused(self, tmp_path: Path) -> None:
        """A database with only the older logs table says --where needs session_events."""
        import sqlite3

        path = tmp_path / "old.db"
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE logs (ts REAL, session TEXT, kind TEXT, message TEXT)")
            conn.execute("INSERT INTO logs VALUES (1, 's', 'message', 'hi')")
        out = run("codex-logs", "query", "--db", str(path), "--where", "a=b")
        assert out.returncode == 2
        assert "--until, --where) needs the session_events table" in out.stderr

    def test_all_prints_every_event(self, db: Path) -> None:
        """--all lifts --tail: every matching event, oldest first."""
        out = run("codex-logs", "query", "--db", str(db), "--session-id", "a", "--all", "--json")
        assert messages(out) == [f"a{i}" for i in range(6)]


class TestShow:
    def test_transcript_of_the_latest_session(self, rich: Path) -> None:
        """With no session named, the latest: marks, fields as key=value, traceback indented, escaped."""
        out = run("codex-logs", "show", "--db", str(rich), "--all")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "── start r · pid 7 ──" in lines[0]
        assert lines[1].endswith(
            'INFO     [tool] agent: calling git  tool=git user=alice ms=812.5 ok=true note="two words" tags=["a","b"]'
        )
        assert "WARNING  agent: slow\\x1b[2J  tool=npm ms=2400" in lines[2]
        assert lines[3].endswith("ERROR    agent: boom  tool=git")
        assert lines[4:7] == [
            "    Traceback (most recent call last):",
            '      File "x.py", line 1',
            "    ValueError: bad",
        ]
        assert lines[7].endswith("Level 25 agent: <script>alert(1)</script>")
        assert lines[8].endswith("── end r · error · KeyboardInterrupt · 4.00s ──")
        assert "\x1b" not in out.stdout  # piped: no colour, and the logged ESC is escaped
        assert "older session" not in out.stdout

    def test_named_session_tail_and_filters(self, rich: Path) -> None:
        """A named session; --tail, --where and --level narrow it as in query."""
        out = run("codex-logs", "show", "old", "--db", str(rich))
        assert (
            out.stdout.splitlines()[0].endswith("INFO     older session")
            or "older session" in out.stdout
        )
        out = run("codex-logs", "show", "r", "--db", str(rich), "--tail", "1")
        assert len(out.stdout.splitlines()) == 1
        assert "── end r" in out.stdout
        out = run(
            "codex-logs", "show", "--db", str(rich), "--where", "tool=git", "--level", "error"
        )
        first, *rest = out.stdout.splitlines()
        assert first.endswith("ERROR    agent: boom  tool=git")
        assert all(line.startswith("    ") for line in rest)  # its traceback

    def test_colour_on_a_terminal_never_with_no_color(self, rich: Path) -> None:
        """--color always colours the level; auto on a pipe does not; NO_COLOR wins over auto."""
        coloured = run("codex-logs", "show", "--db", str(rich), "--color", "always").stdout
        assert "\x1b[33mWARNING " in coloured
        assert "\x1b[2J" not in coloured  # the record's own ESC stays escaped
        from codex_logging._cli.output import use_colour

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert use_colour(Tty()) is (not os.environ.get("NO_COLOR"))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NO_COLOR", "1")
            assert use_colour(Tty()) is False
            mp.setenv("NO_COLOR", "")
            assert use_colour(Tty()) is True
        assert use_colour(io.StringIO()) is False

    def test_empty_database_says_so(self, tmp_path: Path) -> None:
        """No session yet: one line, exit 2."""
        folder = tmp_path / "s"
        folder.mkdir()
        sync_to_sqlite(tmp_path / "x.db", folder)
        out = run("codex-logs", "show", "--db", str(tmp_path / "x.db"))
        assert out.returncode == 2
        assert (
            out.stderr
            == "codex-logs show: error: no sessions in the database yet (run 'codex-logs sync' first)\n"
        )


class TestEdges:
    def test_an_unknown_flag_names_the_subcommand(self, db: Path) -> None:
        """query --bogus: the error line names 'codex-logs query'."""
        out = run("codex-logs", "query", "--db", str(db), "--bogus")
        assert out.returncode == 2
        assert out.stderr == "codex-logs query: error: unrecognized arguments: --bogus\n"

    def test_a_folder_as_db_says_so(self, tmp_path: Path) -> None:
        """--db naming a folder is not 'no database': it says it is a folder."""
        out = run("codex-logs", "query", "--db", str(tmp_path))
        assert out.returncode == 2
        assert f"{tmp_path} is a folder, not a database file" in out.stderr

    def test_durations_read_alike(self) -> None:
        """One duration format for sessions, query and show."""
        from codex_logging._cli.output import duration

        cases = [
            (0.0004, "0ms"),
            (0.85, "850ms"),
            (1.25, "1.25s"),
            (12.34, "12.3s"),
            (245, "4m05s"),
            (7380, "2h03m"),
        ]
        assert [duration(s) for s, _ in cases] == [text for _, text in cases]
        assert duration(None) == duration(float("nan")) == duration(-1) == "-"


class TestAbandoned:
    """A session without an end whose processes are all gone reads `abandoned`."""

    CHILD = (
        "import logging, sys, time\n"
        "from codex_logging import CodexHandler, session_scope\n"
        "logging.getLogger().addHandler(CodexHandler())\n"
        "with session_scope(sys.argv[1]):\n"
        "    logging.getLogger('w').warning('working')\n"
        "    print('in', flush=True)\n"
        "    time.sleep(60)\n"
    )

    def test_killed_process_reads_abandoned_a_live_one_running(self, tmp_path: Path) -> None:
        """kill -9 leaves no end: `sessions` says abandoned; while it lives, running (-)."""
        import socket

        folder = tmp_path / ".codex" / "sessions"
        env = {**os.environ, "CODEX_SESSIONS_DIR": str(folder)}
        env.pop("CODEX_SESSION_ID", None)
        procs = [
            subprocess.Popen([sys.executable, "-c", self.CHILD, sid], env=env, stdout=subprocess.PIPE, text=True)
            for sid in ("killed", "alive")
        ]  # fmt: skip
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline() == "in\n"
            procs[0].kill()
            procs[0].wait(timeout=30)
            # a session started on another machine is never judged from here
            other = {
                "ts": 1.0,
                "kind": "start",
                "pid": procs[0].pid,
                "host": socket.gethostname() + "-x",
            }
            (folder / "elsewhere.ndjson").write_text(json.dumps(other) + "\n")
            db = tmp_path / "x.db"
            sync_to_sqlite(db, folder)
            rows = {
                r["session_id"]: r["status"]
                for r in map(
                    json.loads,
                    run("codex-logs", "sessions", "--db", str(db), "--json").stdout.splitlines(),
                )
            }
            assert rows == {"killed": "abandoned", "alive": None, "elsewhere": None}
            text = run("codex-logs", "sessions", "--db", str(db)).stdout
            (killed,) = [line for line in text.splitlines() if line.startswith("killed  ")]
            assert killed.split("  ")[3] == "abandoned"  # id, start, end (-), status
        finally:
            for proc in procs:
                proc.kill()
                proc.communicate(timeout=30)  # reaps it and closes its pipe

    def test_a_reused_pid_is_not_the_process(self, tmp_path: Path) -> None:
        """A live pid that started after the record (the pid was used again) counts as gone."""
        import socket

        from codex_logging._mirror.liveness import abandoned, process_gone

        here = socket.gethostname()
        me = os.getpid()
        assert process_gone(me, time.time()) is False  # this process, started before now
        assert process_gone(me, 0.0) is True  # "written" in 1970: not this process
        start = json.dumps({"ts": 0.0, "kind": "start", "pid": me, "host": here})
        assert abandoned([start]) is True
        assert abandoned([]) is False  # no start record: nothing to tell
        no_host = json.dumps({"ts": 0.0, "kind": "start", "pid": me})
        assert abandoned([start, no_host]) is False


class TestOddValues:
    """Values other writers leave in a file never break a read nor reach the terminal raw."""

    def test_nan_huge_times_escaped_levels_and_ascii_escapes(self, tmp_path: Path) -> None:
        folder = tmp_path / "s"
        folder.mkdir()
        lines = [
            '{"ts": 1e20, "message": "far", "level": "\\u001b]0;pwned\\u0007"}',
            '{"ts": NaN, "message": "nan", "n": Infinity}',
            '{"ts": 5.0, "kind": "end", "status": "ok", "duration_s": Infinity, "message": "e"}',
            json.dumps({"ts": 6.0, "message": "accent", "user": "René"}),  # written as "Ren\\u00e9"
        ]
        (folder / "o.ndjson").write_text("\n".join(lines) + "\n")
        db = str(tmp_path / "x.db")
        sync_to_sqlite(db, folder)
        for args in (
            ["query", "--all"],
            ["show", "o", "--all", "--color", "always"],
            ["query", "--where", "n>1", "--all"],
            ["query", "--where", "user=René", "--json"],
        ):
            out = run("codex-logs", *args, "--db", db)
            assert out.returncode == 0, (args, out.stderr)
            raw = [c for c in out.stdout if (ord(c) < 0x20 and c not in "\n\t\x1b") or c == "\x07"]
            assert raw == [], args
            assert "pwned\x07" not in out.stdout
        found = run("codex-logs", "query", "--where", "user=René", "--json", "--db", db).stdout
        assert [json.loads(line)["message"] for line in found.splitlines()] == ["accent"]
        grep = run("codex-logs", "query", "--grep", "RENÉ", "--json", "--db", db).stdout
        assert [json.loads(line)["message"] for line in grep.splitlines()] == ["accent"]


class TestLiveness:
    """The edges of telling a gone process: no /proc, odd records, pid 0."""

    def test_odd_records_say_nothing(self) -> None:
        import socket

        from codex_logging._mirror.liveness import abandoned

        here = socket.gethostname()
        gone = {"ts": 0.0, "kind": "start", "pid": 2**22 + 12345, "host": here}
        assert abandoned([json.dumps(gone)], host=here) is True
        for bad in (
            "{not json",
            "[1, 2]",
            None,
            json.dumps({**gone, "pid": "7"}),
            json.dumps({**gone, "ts": "x"}),
        ):
            assert abandoned([json.dumps(gone), bad], host=here) is False, bad
        assert abandoned([json.dumps(gone)], host=here + "-other") is False

    def test_pid_zero_and_no_proc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins

        from codex_logging._mirror import liveness

        assert liveness.process_gone(0, 0.0) is False
        assert liveness.process_gone(-5, 0.0) is False
        real_open = builtins.open

        def no_proc(path: object, *args: object, **kwargs: object) -> object:
            if str(path).startswith("/proc/"):
                raise FileNotFoundError(path)
            return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(builtins, "open", no_proc)
        # Without /proc a live pid cannot be told from a reused one: it is not gone.
        assert liveness.process_gone(os.getpid(), 0.0) is False
        assert liveness._boot_time() is None

    def test_another_users_process_exists(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from codex_logging._mirror import liveness

        def refused(pid: int, sig: int) -> None:
            raise PermissionError(pid)

        monkeypatch.setattr(liveness.os, "kill", refused)
        assert liveness.process_gone(os.getpid(), time.time()) is False
