"""The command line: ``codex-logs``, ``query_logs`` and ``codex-import-ndjson``.

The CLI parses and prints; the work is done by the functions users call. Every
error a user can cause is one line on stderr and exit status 2 (SPEC "Command
line").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, Final, NoReturn, TextIO

from codex_logging._db import connect_readonly, table_names
from codex_logging._errors import CodexLoggingError, DatabaseError, UnknownSessionError
from codex_logging._settings import db_path, validate_session_id
from codex_logging._sync import SyncReport, sync_to_sqlite

EXIT_USAGE: Final = 2
_COLUMNS: Final = "session_id, seq, ts, kind, level, logger, role, message, data"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        msg = f"expected a positive number of seconds, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _session_id(text: str) -> str:
    try:
        return validate_session_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _query_options() -> _Parser:
    # Shared by query_logs and codex-logs query, defined once (STYLE).
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--db", help="the database (default: $CODEX_LOG_DB_PATH or .codex/session_logs.db)"
    )
    parent.add_argument("--session-id", type=_session_id, help="only this session (default: all)")
    parent.add_argument(
        "--tail",
        type=_positive_int,
        default=20,
        metavar="N",
        help="the latest N events (default 20)",
    )
    parent.add_argument("--kind", help="only events of this kind: start, message, end")
    parent.add_argument(
        "--json", action="store_true", help="one JSON object per line, with every field"
    )
    return parent


def _run(prog: str, action: Callable[[], int]) -> int:
    try:
        return action()
    except CodexLoggingError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `| head` closed the pipe: stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# -- query ------------------------------------------------------------------


def query(
    database: str | None,
    session_id: str | None,
    tail: int,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Return the latest ``tail`` events, oldest first.

    Within a session "latest" is file order (``seq``); across sessions, ``ts``.
    Reads ``session_events``, or the older ``logs(ts, session, kind, message)``
    table when that is all the database has.

    Args:
        database: The database path; by default the environment's.
        session_id: Only this session.
        tail: How many events.
        kind: Only events of this kind.

    Returns:
        One dict per event.

    Raises:
        DatabaseNotFoundError: There is no database.
        UnknownSessionError: The session has no events.
        DatabaseError: The database has neither table.
    """
    path = db_path(database)
    with contextlib.closing(connect_readonly(path)) as conn:
        conn.row_factory = sqlite3.Row
        tables = table_names(conn)
        if "session_events" in tables:
            table, session_col, seq_col = "session_events", "session_id", "seq"
            columns = _COLUMNS
        elif "logs" in tables:
            table, session_col, seq_col = "logs", "session", "rowid"
            columns = "session AS session_id, rowid AS seq, ts, kind, message"
        else:
            msg = f"{path} has no session_events or logs table"
            raise DatabaseError(msg)
        where, params = [], []
        if session_id is not None:
            probe = f"SELECT 1 FROM {table} WHERE {session_col} = ? LIMIT 1"  # noqa: S608
            found = conn.execute(probe, (session_id,))
            if found.fetchone() is None:
                msg = f"unknown session {session_id} in {path}"
                raise UnknownSessionError(msg)
            where.append(f"{session_col} = ?")
            params.append(session_id)
            order = f"{seq_col} DESC"
        else:
            order = f"ts DESC, {session_col} DESC, {seq_col} DESC"
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {columns} FROM {table}"  # noqa: S608 - names from constants, values as ?
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} LIMIT ?"
        rows = conn.execute(sql, (*params, tail)).fetchall()
    return [dict(row) for row in reversed(rows)]


def _local_time(ts: object) -> str:
    if isinstance(ts, int | float):
        local = datetime.fromtimestamp(ts, tz=timezone.utc).astimezone()
        return local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return "" if ts is None else str(ts)


def _print_events(events: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    for event in events:
        if as_json:
            data = event.pop("data", None)
            merged: dict[str, Any] = {}
            if isinstance(data, str):
                with contextlib.suppress(ValueError):
                    loaded = json.loads(data)
                    if isinstance(loaded, dict):
                        merged.update(loaded)
            # The normalised columns win: ts in seconds, kind always set.
            merged.update({k: v for k, v in event.items() if v is not None or k not in merged})
            out.write(json.dumps(merged, ensure_ascii=False, default=str) + "\n")
            continue
        message = "" if event.get("message") is None else str(event["message"])
        role = event.get("role")
        if role:
            message = f"[{role}] {message}"
        fields = (
            _local_time(event.get("ts")),
            str(event.get("session_id") or ""),
            f"{event.get('kind') or '':<7}",
            f"{event.get('level') or '':<8}",
            str(event.get("logger") or "-"),
            message.replace("\n", "\n    "),
        )
        out.write("  ".join(fields) + "\n")


def _cmd_query(args: argparse.Namespace) -> int:
    events = query(args.db, args.session_id, args.tail, args.kind)
    _print_events(events, args.json, sys.stdout)
    sys.stdout.flush()
    return 0


def query_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m codex_logging.query_logs``.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    parser = _Parser(
        prog="python -m codex_logging.query_logs",
        description="Print the latest events of the session log database, oldest first.",
        parents=[_query_options()],
        epilog="example: python -m codex_logging.query_logs --session-id run-42 --tail 50 --json",
    )
    args = parser.parse_args(argv)
    return _run(parser.prog, lambda: _cmd_query(args))


# -- sync -------------------------------------------------------------------


class _Progress:
    """Files, lines and rate on one refreshed stderr line, only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.shown = 0.0

    def __call__(self, session_id: str, report: SyncReport) -> None:
        now = time.monotonic()
        if now - self.shown < 0.2:
            return
        self.shown = now
        lines = report.rows_inserted + report.lines_quarantined
        rate = lines / max(now - self.started, 1e-9)
        self.stream.write(
            f"\r{report.files} files, {lines:,} lines, {rate:,.0f} lines/s ({session_id})\x1b[K"
        )
        self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _sync_round(args: argparse.Namespace) -> SyncReport:
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        report = sync_to_sqlite(
            args.db, args.sessions_dir, session_id=args.session, progress=progress
        )
    finally:
        if progress is not None:
            progress.done()
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"synced {report.files} file{'s' if report.files != 1 else ''}:"
        f" {report.rows_inserted} rows inserted, {report.lines_quarantined} lines quarantined",
        flush=True,
    )
    return report


@contextlib.contextmanager
def _interrupt_as_flag(flag: list[bool]) -> Iterator[None]:
    def stop(_signum: int, _frame: object) -> None:
        flag[0] = True

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cmd_sync(args: argparse.Namespace) -> int:
    if args.watch is None:
        _sync_round(args)
        return 0
    stopped = [False]
    # Ctrl-C ends the wait, never a round halfway; one last round then runs.
    with _interrupt_as_flag(stopped):
        while not stopped[0]:
            _sync_round(args)
            deadline = time.monotonic() + args.watch
            while not stopped[0] and time.monotonic() < deadline:
                time.sleep(min(0.1, args.watch))
        _sync_round(args)
    return 0


def _add_sync_options(parser: argparse.ArgumentParser, *, watch: bool) -> None:
    which = parser.add_mutually_exclusive_group(required=not watch)
    which.add_argument("--session", type=_session_id, metavar="ID", help="only this session")
    which.add_argument("--all", action="store_true", help="every session file (the default)")
    parser.add_argument(
        "--db", help="the database (default: $CODEX_LOG_DB_PATH or .codex/session_logs.db)"
    )
    parser.add_argument(
        "--sessions-dir", help="the NDJSON folder (default: $CODEX_SESSIONS_DIR or .codex/sessions)"
    )
    if watch:
        parser.add_argument(
            "--watch",
            type=_positive_float,
            metavar="SECONDS",
            help="sync again every SECONDS until Ctrl-C",
        )


# -- sessions ---------------------------------------------------------------


def _cmd_sessions(args: argparse.Namespace) -> int:
    path = db_path(args.db)
    with contextlib.closing(connect_readonly(path)) as conn:
        if "sessions" not in table_names(conn):
            msg = f"{path} has no sessions view (run 'codex-logs sync' first)"
            raise DatabaseError(msg)
        rows = conn.execute(
            "SELECT session_id, start_ts, end_ts, status, events"
            " FROM sessions ORDER BY start_ts, session_id"
        ).fetchall()
    out = sys.stdout
    for sid, start, end, status, events in rows:
        if args.json:
            record = {
                "session_id": sid,
                "start": start,
                "end": end,
                "status": status,
                "events": events,
            }
            out.write(json.dumps(record) + "\n")
        else:
            out.write(
                f"{sid}  {_local_time(start) or '-'}  {_local_time(end) or '-'}"
                f"  {status or '-'}  {events}\n"
            )
    out.flush()
    return 0


# -- entry points -----------------------------------------------------------


def _version() -> str:
    from codex_logging import __version__  # noqa: PLC0415 - avoids an import cycle

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``codex-logs``.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    parser = _Parser(
        prog="codex-logs",
        description="Sync session logs into SQLite and query them.",
        epilog="example: codex-logs sync && codex-logs query --tail 20",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    sync = commands.add_parser(
        "sync",
        help="mirror the NDJSON session files into the database",
        description="Mirror the NDJSON session files into SQLite, exactly once.",
        epilog="example: codex-logs sync --all --watch 5",
    )
    _add_sync_options(sync, watch=True)
    sync.set_defaults(run=_cmd_sync)
    query_parser = commands.add_parser(
        "query",
        parents=[_query_options()],
        help="print the latest events, oldest first",
        description="Print the latest events of the session log database, oldest first.",
        epilog="example: codex-logs query --session-id run-42 --kind end --json",
    )
    query_parser.set_defaults(run=_cmd_query)
    sessions = commands.add_parser(
        "sessions",
        help="one line per session: id, start, end, status, events",
        description="List the sessions in the database: id, start, end, status, events.",
        epilog="example: codex-logs sessions --json",
    )
    sessions.add_argument(
        "--db", help="the database (default: $CODEX_LOG_DB_PATH or .codex/session_logs.db)"
    )
    sessions.add_argument("--json", action="store_true", help="one JSON object per line")
    sessions.set_defaults(run=_cmd_sessions)
    args = parser.parse_args(argv)
    return _run(f"codex-logs {args.command}", lambda: int(args.run(args)))


def import_main(argv: Sequence[str] | None = None) -> int:
    """Run ``codex-import-ndjson``, the importer under the name older scripts know.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    parser = _Parser(
        prog="codex-import-ndjson",
        description="Import NDJSON session files into SQLite (as codex-logs sync does).",
        epilog="example: codex-import-ndjson --session run-42",
    )
    _add_sync_options(parser, watch=False)
    args = parser.parse_args(argv)
    args.watch = None
    return _run(parser.prog, lambda: _cmd_sync(args))
