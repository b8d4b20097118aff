"""The command line, run as users run it: console scripts and python -m in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._cli import import_main, main, query_main
from tests.conftest import db_connection

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
        out = run("codex-logs", "query", "--db", str(db), "--kind", "x' OR '1'='1")
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
            (("codex-logs", "query", "--db", "{db}", "--tail", "-1"), "positive whole number"),
            (("codex-logs", "query", "--bogus"), "unrecognized arguments"),
            (("codex-logs", "sync", "--watch", "soon"), "positive number of seconds"),
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
            (("codex-import-ndjson",), "is required"),
            (("codex-logs",), "required"),
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


class TestSync:
    def test_sync_and_import_and_sessions(self, tmp_path: Path) -> None:
        """codex-logs sync, codex-import-ndjson and codex-logs sessions over the defaults."""
        folder = tmp_path / ".codex" / "sessions"
        folder.mkdir(parents=True)
        (folder / "s1.ndjson").write_text(
            '{"ts": 1, "kind": "start"}\n{"ts": 2, "kind": "end", "status": "ok"}\n'
        )
        env = {"CODEX_SESSIONS_DIR": str(folder), "CODEX_LOG_DB_PATH": str(tmp_path / "x.db")}
        out = run("codex-import-ndjson", "--session", "s1", env=env)
        assert (out.returncode, out.stdout) == (
            0,
            "synced 1 file: 2 rows inserted, 0 lines quarantined\n",
        )
        out = run("codex-logs", "sync", "--all", env=env)
        assert out.stdout == "synced 1 file: 0 rows inserted, 0 lines quarantined\n"
        out = run("codex-logs", "sessions", "--json", env=env)
        assert json.loads(out.stdout) == {
            "session_id": "s1",
            "start": 1.0,
            "end": 2.0,
            "status": "ok",
            "events": 2,
        }
        assert run("codex-logs", "sessions", env=env).stdout.split()[-2:] == ["ok", "2"]

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


class TestDocs:
    def test_every_subcommand_is_documented_with_an_example(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each subcommand has help ending in an example and appears in docs/cli.md."""
        docs = (ROOT / "docs" / "cli.md").read_text()
        for command in ("sync", "query", "sessions"):
            with pytest.raises(SystemExit):
                main([command, "--help"])
            assert "example: codex-logs " + command in capsys.readouterr().out
            assert f"codex-logs {command}" in docs
        for name in ("codex-import-ndjson", "python -m codex_logging.query_logs"):
            assert name in docs


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
        assert out == "synced 1 file: 30000 rows inserted, 0 lines quarantined\n"
        assert b"lines/s (big)" in seen
        assert seen.endswith(b"\r\x1b[K")
