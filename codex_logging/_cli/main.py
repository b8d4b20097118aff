"""The command line: ``codex-logs``, ``query_logs`` and ``codex-import-ndjson``.

This module parses the arguments; what each command does is in
``commands.py``, and the work in the functions users call (``_sqlite/``,
``_postgres/``, ``_mirror/prune.py``). Every error a user can cause is one
line on stderr and exit status 2, and nothing from a record reaches the
terminal raw: control characters are escaped (docs/cli.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from codex_logging._cli.commands import (
    cmd_migrate,
    cmd_prune,
    cmd_query,
    cmd_serve,
    cmd_sessions,
    cmd_show,
    cmd_sync,
    db_sources,
)
from codex_logging._cli.export import cmd_export
from codex_logging._cli.output import one_line
from codex_logging._errors import CodexLoggingError
from codex_logging._mirror import filters as _filters
from codex_logging._settings import (
    validate_session_id,
)

EXIT_USAGE: Final = 2
#: Cut short by Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED: Final = 130
#: ``sync --watch`` seconds: shorter only spins the CPU; a longer period is cron's job.
WATCH_MIN: Final = 0.01
WATCH_MAX: Final = 86400


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the arguments it refuses: a URL given without --db
        # keeps no password, and a control character no power (docs/production.md).
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message, *sys.argv[1:])}\n")


def _checked(check: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:  # InvalidSessionId, InvalidFilterError
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = check.__name__
    return convert


def _number(kind: type[int | float], low: float, high: float, what: str) -> Callable[[str], Any]:
    """Return a flag's converter: a ``kind`` from ``low`` to ``high``, else one line and exit 2."""

    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not low <= value <= high:  # also NaN and infinities
            msg = f"expected {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return convert


_session_id = _checked(validate_session_id)

#: The options several commands take, by flag: the keywords of ``add_argument``.
_SHARED: Final[dict[str, dict[str, Any]]] = {
    "--db": {"help": "the database (default: $CODEX_LOG_DB_PATH, else the nearest .codex/)"},
    "--sessions-dir": {
        "help": "the NDJSON folder (default: $CODEX_SESSIONS_DIR, else the nearest .codex/)"
    },
    "--session-id": {"type": _session_id, "help": "only this session"},
    "--json": {"action": "store_true", "help": "one JSON object per line"},
    "--watch": {
        "type": _number(
            float, WATCH_MIN, WATCH_MAX, f"a number of seconds from {WATCH_MIN} to {WATCH_MAX}"
        ),
        "metavar": "SECONDS",
    },
}


def _add_shared(parser: Any, *flags: str, **keywords: Any) -> None:
    """Add the options ``flags`` as :data:`_SHARED` has them, with ``keywords`` on top."""
    for flag in flags:
        parser.add_argument(flag, **{**_SHARED[flag], **keywords})


def _run(prog: str, action: Callable[[], int], args: argparse.Namespace) -> int:
    try:
        return action()
    except BrokenPipeError:
        # `| head` closed the pipe: stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        _quiet_stdout()
        return 0
    except CodexLoggingError as exc:
        # One line, whatever the message: a driver's error may span several;
        # and no password, whatever shape the URL has (docs/production.md).
        # A flag only a read found bad is named as argparse names one.
        flag = getattr(exc, "flag", None)
        text = f"argument {flag}: {exc}" if flag else str(exc)
        print(f"{prog}: error: {one_line(text, *db_sources(args))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Ctrl-C ends --follow, --watch and serve: their normal way out. Any
        # other command was cut short: 130, as a shell says of SIGINT.
        open_ended = getattr(args, "follow", False) or getattr(args, "watch", None)
        return 0 if open_ended or getattr(args, "command", None) == "serve" else EXIT_INTERRUPTED
    except OSError as exc:
        # Anything the commands do not turn into a message of their own:
        # most often the output itself (a full disk behind `> file`).
        print(f"{prog}: error: {one_line(str(exc), *db_sources(args))}", file=sys.stderr)
        _quiet_stdout()
        return EXIT_USAGE


def _quiet_stdout() -> None:
    # What is left in stdout's buffer is not flushed again at exit.
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# -- query ------------------------------------------------------------------


def _query_options(tail: int = 20, session: str = "only this session (default: all)") -> _Parser:
    # Shared by query_logs, codex-logs query and show, defined once; show
    # prints more by default and names one session.
    parent = _Parser(add_help=False)
    _add_shared(parent, "--db")
    _add_shared(parent, "--session-id", help=session)
    parent.add_argument(
        "--tail",
        type=_number(int, 1, _filters.MAX_TAIL, f"a whole number from 1 to {_filters.MAX_TAIL}"),
        default=tail,
        metavar="N",
        help=f"the latest N events (default {tail})",
    )
    parent.add_argument(
        "--kind",
        type=_checked(_filters.check_kind),
        help="only events of this kind: start, message, end",
    )
    parent.add_argument(
        "--level",
        type=_checked(_filters.check_level),
        metavar="LEVEL",
        help=(
            "only events at this level or above: debug, info, warning, error, critical,"
            " a level name the mirror holds (success, trace, 'level 25') or a number"
        ),
    )
    when = _checked(_filters.parse_time)
    parent.add_argument(
        "--since", type=when, metavar="TIME", help="only events since TIME: ISO time or 10m, 2h, 3d"
    )
    parent.add_argument(
        "--until", type=when, metavar="TIME", help="only events before TIME (same forms)"
    )
    parent.add_argument(
        "--all", action="store_true", help="every event that matches, not only the latest N"
    )
    parent.add_argument(
        "--grep",
        metavar="TEXT",
        help="only events whose message or a field's value holds TEXT (any case)",
    )
    parent.add_argument(
        "--where",
        action="append",
        default=[],
        type=_checked(_filters.parse_where),
        metavar="KEY=VALUE",
        help="only events whose field KEY is VALUE; also KEY!=VALUE, KEY>N, KEY<N (repeatable)",
    )
    parent.add_argument("--role", help="only events with this role: user, assistant, system, tool")
    parent.add_argument(
        "--follow", action="store_true", help="then print new events as syncs land, until Ctrl-C"
    )
    _add_shared(parent, "--json", help="one JSON object per line, with every field")
    return parent


def query_main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m codex_logging.query_logs``; ``argv`` and the result as for :func:`main`."""
    parser = _Parser(
        prog="python -m codex_logging.query_logs",
        description="Print the latest events of the session log database, oldest first.",
        parents=[_query_options()],
        epilog="example: python -m codex_logging.query_logs --session-id run-42 --tail 50 --json",
    )
    args = parser.parse_args(argv)
    return _run(parser.prog, lambda: cmd_query(args), args)


# -- sync -------------------------------------------------------------------


def _add_sync_options(parser: argparse.ArgumentParser, *, importer: bool) -> None:
    # codex-import-ndjson keeps its older contract: --session ID | --all (docs/cli.md).
    which = parser.add_mutually_exclusive_group(required=importer)
    _add_shared(which, "--session-id", metavar="ID")
    which.add_argument("--session", type=_session_id, dest="session_id", help=argparse.SUPPRESS)
    which.add_argument(
        "--all",
        action="store_true",
        help="every session file" + ("" if importer else " (the default)"),
    )
    _add_shared(parser, "--db", "--sessions-dir")
    if not importer:
        _add_shared(parser, "--watch", help="sync again every SECONDS until Ctrl-C")
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help="move a damaged SQLite database aside (NAME.damaged-TIME) and mirror"
            " every session file afresh",
        )


# -- entry points -----------------------------------------------------------


def _version() -> str:
    from codex_logging import __version__  # noqa: PLC0415 - avoids an import cycle

    return __version__


def _add_commands(commands: Any) -> None:
    sync = commands.add_parser(
        "sync",
        help="mirror the NDJSON session files into the database",
        description="Mirror the NDJSON session files into SQLite, exactly once.",
        epilog="example: codex-logs sync --all --watch 5",
    )
    _add_sync_options(sync, importer=False)
    sync.set_defaults(run=cmd_sync)
    query_parser = commands.add_parser(
        "query",
        parents=[_query_options()],
        help="print the latest events, oldest first",
        description="Print the latest events of the session log database, oldest first.",
        epilog="example: codex-logs query --session-id run-42 --level warning --since 2h",
    )
    query_parser.set_defaults(run=cmd_query)
    show = commands.add_parser(
        "show",
        parents=[_query_options(100, "the session, as SESSION (default: the latest)")],
        help="print a session as a transcript (the latest session by default)",
        description=(
            "Print one session as a person reads it: time, level, role, logger, message and"
            " fields, tracebacks under their line, start and end marks. The latest session"
            " when none is named; the latest 100 events unless --all or --tail."
        ),
        epilog="example: codex-logs show run-42 --all --where tool=git",
    )
    show.add_argument("session", nargs="?", type=_session_id, help="the session (default: latest)")
    show.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour: on a terminal without NO_COLOR (auto, the default), always or never",
    )
    show.set_defaults(run=cmd_show)
    sessions = commands.add_parser(
        "sessions",
        help="one line per session: id, start, end, status, events and counts",
        description="List the sessions in the database: id, start, end, status, events, counts.",
        epilog="example: codex-logs sessions --json",
    )
    _add_shared(sessions, "--db", "--session-id", "--json")
    sessions.set_defaults(run=cmd_sessions)
    pruner = commands.add_parser(
        "prune",
        help="retire sessions that ended before a time",
        description=(
            "Delete the NDJSON files of sessions that ended more than AGE ago, once every byte"
            " is in the mirror; with --rows also their rows. A file not fully synced or"
            " written to since is kept."
        ),
        epilog="example: codex-logs prune --older-than 30d --dry-run",
    )
    pruner.add_argument(
        "--older-than",
        required=True,
        type=_checked(_filters.parse_age),
        metavar="AGE",
        help="sessions whose end is older than AGE: 90s, 10m, 2h, 30d, 2w",
    )
    pruner.add_argument("--rows", action="store_true", help="also delete their rows, then VACUUM")
    pruner.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    _add_shared(pruner, "--session-id", "--db", "--sessions-dir")
    _add_shared(pruner, "--json", help="one JSON object")
    pruner.set_defaults(run=cmd_prune)
    migrator = commands.add_parser(
        "migrate",
        help="bring the mirror to the compact layout, in place",
        description=(
            "Move an older mirror's rows to the compact layout (each value stored once),"
            " in batches: safe to interrupt and run again. Then give the space back."
            " A sync does the move too; this shows its progress."
        ),
        epilog="example: codex-logs migrate --dry-run",
    )
    _add_shared(migrator, "--db")
    migrator.add_argument(
        "--dry-run", action="store_true", help="print the size expected after; change nothing"
    )
    migrator.add_argument(
        "--grep-index",
        choices=("on", "off"),
        help="build (on) or drop (off) the full-text index --grep answers from (SQLite)",
    )
    migrator.set_defaults(run=cmd_migrate)
    _add_serve(commands)
    _add_export(commands)


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="send the sessions as OpenTelemetry logs (otlp)",
        description="Send the session files' new lines to another system, at least once.",
        epilog="example: codex-logs export otlp --endpoint http://collector:4318/v1/logs",
    )
    kinds = export.add_subparsers(
        dest="export_to", required=True, parser_class=_Parser, metavar="FORMAT"
    )
    otlp = kinds.add_parser(
        "otlp",
        help="OTLP logs over HTTP (protobuf), from a watermark of its own",
        description=(
            "Send every session file's new lines as OTLP logs to an OpenTelemetry endpoint"
            " (a Collector, or a backend that takes OTLP/HTTP), at least once: a batch's"
            " watermark moves only once the endpoint acknowledged it. Needs the otlp extra:"
            " pip install '.[otlp]' in a checkout. Honours OTEL_EXPORTER_OTLP_* and"
            " OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES (docs/scale-out.md)."
        ),
        epilog="example: codex-logs export otlp --endpoint http://otel:4318/v1/logs --watch 30",
    )
    otlp.add_argument(
        "--endpoint",
        metavar="URL",
        help=(
            "the URL to POST to, as is (default: $OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, else"
            " $OTEL_EXPORTER_OTLP_ENDPOINT/v1/logs, else http://localhost:4318/v1/logs)"
        ),
    )
    _add_shared(otlp, "--session-id", metavar="ID")
    _add_shared(otlp, "--sessions-dir")
    _add_shared(otlp, "--watch", help="export again every SECONDS until Ctrl-C")
    otlp.add_argument(
        "--format",
        choices=("protobuf", "otlp-json"),
        default="protobuf",
        help="protobuf over HTTP (the default), or otlp-json: JSON lines of LogsData to --output",
    )
    otlp.add_argument(
        "--output",
        metavar="FILE",
        help="with --format otlp-json: the file to append to (the Collector's otlpjsonfile format)",
    )
    otlp.add_argument(
        "--dry-run", action="store_true", help="build the requests, send none, move no watermark"
    )
    _add_shared(
        otlp,
        "--json",
        help="with --dry-run: each request as one OTLP/JSON line; else the report as JSON",
    )
    otlp.set_defaults(run=cmd_export)


def _add_serve(commands: Any) -> None:
    server = commands.add_parser(
        "serve",
        help="a local, read-only web viewer of the mirror",
        description=(
            "Serve a read-only web viewer of the mirror (SQLite or a postgresql:// URL):"
            " the sessions, and each session's timeline and transcript, followed live."
            " Needs the viewer extra: pip install '.[viewer]' in a checkout."
        ),
        epilog="example: codex-logs serve --port 8700",
    )
    _add_shared(server, "--db")
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only)",
    )
    server.add_argument(
        "--port",
        type=_port,
        default=8700,
        help="the port (default 8700; 0 picks a free one)",
    )
    server.set_defaults(run=cmd_serve)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        msg = f"expected a port from 0 to 65535, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``codex-logs``.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    parser = _Parser(
        prog="codex-logs",
        description="Sync session logs into SQLite, query them, and retire old ones.",
        epilog="example: codex-logs sync && codex-logs query --tail 20",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    _add_commands(commands)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        # argparse would only say that COMMAND is missing.
        names = ", ".join(commands.choices)
        parser.error(f"unrecognized option {argv[0]} before COMMAND (one of {names})")
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's parser, so the error names the command
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return _run(f"codex-logs {args.command}", lambda: int(args.run(args)), args)


def import_main(argv: Sequence[str] | None = None) -> int:
    """Run ``codex-import-ndjson``, the importer under the name older scripts know.

    ``argv`` and the result are as for :func:`main`.
    """
    parser = _Parser(
        prog="codex-import-ndjson",
        description=(
            "Import NDJSON session files into SQLite (as codex-logs sync does):"
            " one session (--session-id ID) or every one (--all); one of them is required."
        ),
        epilog="example: codex-import-ndjson --session-id run-42",
    )
    _add_sync_options(parser, importer=True)
    args = parser.parse_args(argv)
    args.watch = None
    return _run(parser.prog, lambda: cmd_sync(args), args)
