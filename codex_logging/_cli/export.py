"""``codex-logs export otlp``: the session files to an OTLP/HTTP endpoint (docs/cli.md).

The work is :func:`codex_logging.sync_to_otlp`, imported only when the
command runs (it needs the ``otlp`` extra).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from codex_logging._cli.output import Failing, one_line, to_json
from codex_logging._errors import CodexLoggingError, DatabaseError, OtlpConfigError, OtlpExportError
from codex_logging._settings import project_paths

if TYPE_CHECKING:
    from codex_logging._mirror.target import SyncReport


def _sources(args: argparse.Namespace) -> tuple[str | None, ...]:
    """Return what a message may quote, password and all: the endpoints given."""
    return (
        args.endpoint,
        os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )


class _PipeClosedError(CodexLoggingError, BrokenPipeError):
    """The reader of the output went away (``| head``): the export ends quietly."""


class _OutputError(CodexLoggingError, OSError):
    """The output cannot be written (a full disk behind ``> file``)."""


def export_round(
    args: argparse.Namespace, *, quiet_idle: bool = False, stop: threading.Event | None = None
) -> SyncReport:
    """Run one export and print what it did; ``stop`` ends an endpoint's retries."""
    from codex_logging._otlp.sync import sync_to_otlp  # noqa: PLC0415 - the otlp extra only here

    _database, folder, _found = project_paths(None, args.sessions_dir)
    out = sys.stdout
    write = None
    if args.json and args.dry_run:

        def write(line: str) -> None:
            # Written while the files are read: an error of the output is not
            # the session file's (the sync would skip the file for it).
            try:
                out.write(line + "\n")
            except BrokenPipeError:
                raise _PipeClosedError from None
            except OSError as exc:
                msg = f"cannot write the output: {exc.strerror or exc}"
                raise _OutputError(msg) from None

    report = sync_to_otlp(
        args.endpoint,
        folder,
        session_id=args.session_id,
        dry_run=args.dry_run,
        write=write,
        output=args.output,
        stop=stop,
    )
    for warning in report.warnings:
        print(f"warning: {one_line(warning, *_sources(args))}", file=sys.stderr)
    if args.json and not args.dry_run:
        fields = {
            "files": report.files,
            "records_sent": report.rows_inserted,
            "lines_quarantined": report.lines_quarantined,
            "bytes_read": report.bytes_read,
            "warnings": len(report.warnings),
        }
        out.write(to_json(fields) + "\n")
        out.flush()
    elif not args.json and not (quiet_idle and not report.rows_inserted):
        verb = "would send" if args.dry_run else "sent"
        print(
            f"exported {report.files:,} file{'s' if report.files != 1 else ''}:"
            f" {verb} {report.rows_inserted:,} records,"
            f" {report.lines_quarantined:,} lines quarantined",
            flush=True,
        )
    return report


def cmd_export(args: argparse.Namespace) -> int:
    """``codex-logs export otlp``: once, or every ``--watch`` seconds until Ctrl-C."""
    if (args.format == "otlp-json") != (args.output is not None):
        msg = "--format otlp-json and --output FILE go together (the file of JSON lines)"
        raise OtlpConfigError(msg)
    if args.output is not None and args.endpoint is not None:
        msg = "--endpoint and --output exclude each other: one destination per export"
        raise OtlpConfigError(msg)
    if args.watch is None:
        export_round(args)
        return 0
    # Ctrl-C ends the loop, and the tries and waits of a round whose
    # endpoint is down: its batch is sent again by the next export.
    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopped.set()

    failing = Failing("the endpoint answers again: export resumed")
    previous = signal.signal(signal.SIGINT, stop)
    try:
        try:
            export_round(args, stop=stopped)  # a wrong setting or folder fails here: exit 2
        except OtlpExportError as exc:  # an endpoint not up yet: as in any later round
            failing.failed(one_line(str(exc), *_sources(args)), again=not stopped.is_set())
        while not stopped.wait(args.watch):
            _watch_round(args, failing, stopped)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def _watch_round(args: argparse.Namespace, failing: Failing, stop: threading.Event) -> None:
    # An endpoint that is down does not end --watch: said once, tried again
    # each round (the watermark did not move), until it answers.
    try:
        export_round(args, quiet_idle=True, stop=stop)
    except (OtlpExportError, DatabaseError) as exc:
        failing.failed(one_line(str(exc), *_sources(args)), again=not stop.is_set())
        return
    failing.succeeded()
