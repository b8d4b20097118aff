"""What each ``codex-logs`` command does, once its arguments are parsed (``main.py``).

The work is done by the functions users call (``_sqlite``, ``_postgres``,
``_mirror.prune``); these pick the database and print the results. This is the
one place a ``postgresql://`` URL or a path picks the database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from codex_logging._cli.output import (
    Failing,
    Progress,
    Transcript,
    escape,
    one_line,
    print_events,
    session_line,
    to_json,
    use_colour,
)
from codex_logging._errors import (
    CodexLoggingError,
    DatabaseDamagedError,
    DatabaseError,
    DatabaseNotFoundError,
    InvalidFilterError,
    hide_secrets,
)
from codex_logging._mirror import filters as _filters
from codex_logging._mirror.prune import Mirror, prune
from codex_logging._mirror.target import SyncReport
from codex_logging._settings import (
    ENV_DB_PATH,
    check_found_database,
    db_path,
    is_postgres_url,
    project_paths,
    sessions_dir_path,
)
from codex_logging._sqlite import read as _read
from codex_logging._sqlite.migrate import compact_mirror as compact_sqlite
from codex_logging._sqlite.prune import SqliteMirror
from codex_logging._sqlite.sync import sync_to_sqlite


def db_sources(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Return ``--db`` and ``CODEX_LOG_DB_PATH``: what an error may quote, password and all."""
    return getattr(args, "db", None), os.environ.get(ENV_DB_PATH)


def postgres_url(args: argparse.Namespace) -> str | None:
    """Return ``--db`` or ``CODEX_LOG_DB_PATH`` when it holds a ``postgresql://`` URL."""
    value = args.db or os.environ.get(ENV_DB_PATH)
    return value if is_postgres_url(value) else None


def sqlite_db(args: argparse.Namespace) -> str:
    """Return the SQLite database: --db, the environment, or the nearest .codex/."""
    path, _folder, found = project_paths(args.db, None)
    if path is None and not os.environ.get(ENV_DB_PATH) and found is None:
        msg = (
            f"no database: no .codex/ with a sessions folder or session_logs.db in"
            f" {os.getcwd()} or any parent (pass --db or set {ENV_DB_PATH})"
        )
        raise DatabaseNotFoundError(msg)
    if args.db is None and not os.environ.get(ENV_DB_PATH):
        check_found_database(db_path(path))  # found by the search: not named by the user
    return db_path(path)


def _events(args: argparse.Namespace, session_id: str | None) -> Iterator[list[dict[str, Any]]]:
    # The batches query and show print: the latest events, then with
    # --follow each poll's new ones, from PostgreSQL or SQLite.
    options = {
        "since": args.since,
        "until": args.until,
        "level": args.level,
        "grep": args.grep,
        "role": args.role,
        "where": args.where,
    }
    tail = None if args.all else args.tail
    url = postgres_url(args)
    if url is not None:
        from codex_logging._postgres.read import (  # noqa: PLC0415 - psycopg only here
            follow_postgres,
            query_where,
        )

        where = _filters.build(session_id=session_id, kind=args.kind, **options)
        if args.follow:
            yield from follow_postgres(url, where, tail)
        else:
            yield query_where(url, where, tail)
        return
    database = sqlite_db(args)
    if args.follow:
        yield from _read.follow(database, session_id, tail, args.kind, **options)
    else:
        yield _read.query(database, session_id, tail, args.kind, **options)


def cmd_query(args: argparse.Namespace) -> int:
    for batch in _events(args, args.session_id):
        print_events(batch, args.json, sys.stdout)
    return 0


def latest_session(args: argparse.Namespace) -> str:
    """Return the session that started last in the database.

    Raises:
        DatabaseError: The database holds no session.
    """
    url = postgres_url(args)
    if url is not None:
        from codex_logging._postgres.read import latest_session_postgres  # noqa: PLC0415 - psycopg only here

        latest = latest_session_postgres(url)
    else:
        latest = _read.latest_session(sqlite_db(args))
    if latest is None:
        msg = "no sessions in the database yet (run 'codex-logs sync' first)"
        raise DatabaseError(msg)
    return latest


def cmd_show(args: argparse.Namespace) -> int:
    if args.session and args.session_id and args.session != args.session_id:
        msg = f"two sessions named: {args.session} and --session-id {args.session_id}"
        raise InvalidFilterError(msg)
    session_id = args.session or args.session_id or latest_session(args)
    if args.json:
        for batch in _events(args, session_id):
            print_events(batch, args.json, sys.stdout)
        return 0
    transcript = Transcript(sys.stdout, colour=use_colour(sys.stdout, args.color))
    for batch in _events(args, session_id):
        transcript.write(batch)
    return 0


def sync_round(
    args: argparse.Namespace,
    shown: set[str] | None = None,
    *,
    quiet_idle: bool = False,
    rebuild: bool = False,
) -> SyncReport:
    progress = Progress(sys.stderr) if sys.stderr.isatty() else None
    url = postgres_url(args)
    database, folder, _found = project_paths(None if url else args.db, args.sessions_dir)
    try:
        if url is not None:
            from codex_logging._postgres.sync import sync_to_postgres  # noqa: PLC0415 - psycopg only here

            report = sync_to_postgres(url, folder, session_id=args.session_id, progress=progress)
        else:
            report = sync_to_sqlite(
                database, folder, session_id=args.session_id, progress=progress, rebuild=rebuild
            )
    finally:
        if progress is not None:
            progress.done()
    standing = set()
    for warning in report.warnings:
        # A --watch started before the first session says "no sessions folder
        # yet" once, not every round; a file skipped round after round for
        # the same reason (a symlink, a hard link, another folder's session)
        # is said again only once it stopped for a round.
        if shown is not None and warning.startswith("no sessions folder"):
            if warning in shown:
                continue
            shown.add(warning)
        elif shown is not None and ": skipped, " in warning:
            standing.add(warning)
            if warning in shown:
                continue
        print(f"warning: {one_line(warning, *db_sources(args))}", file=sys.stderr)
    if shown is not None:
        shown.difference_update(w for w in list(shown) if ": skipped, " in w)
        shown.update(standing)
    if quiet_idle and not (report.rows_inserted or report.lines_quarantined):
        return report  # --watch says nothing of a round that found nothing new
    print(
        f"synced {report.files:,} file{'s' if report.files != 1 else ''}:"
        f" {report.rows_inserted:,} rows inserted, {report.lines_quarantined:,} lines quarantined",
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


def _watch_round(args: argparse.Namespace, shown: set[str], failing: Failing) -> None:
    # A database that fails after the first round (a PostgreSQL server
    # restarting, a lock held too long) does not end --watch: the round is
    # retried, and each cause is said once (docs/cli.md), until one succeeds.
    try:
        sync_round(args, shown, quiet_idle=True)
    except DatabaseDamagedError:
        raise  # it does not heal by waiting: one line, exit 2
    except DatabaseError as exc:
        failing.failed(one_line(str(exc), *db_sources(args)))
        return
    failing.succeeded()


def cmd_sync(args: argparse.Namespace) -> int:
    rebuild = getattr(args, "rebuild", False)  # codex-import-ndjson has no --rebuild
    if rebuild and postgres_url(args) is not None:
        msg = "--rebuild is for a SQLite mirror: a PostgreSQL database is repaired on its server"
        raise InvalidFilterError(msg)
    if args.watch is None:
        sync_round(args, rebuild=rebuild)
        return 0
    stopped = [False]
    shown: set[str] = set()
    failing = Failing("the database answers again: syncing resumed")
    # Ctrl-C ends the wait, never a round halfway; one last round then runs.
    with _interrupt_as_flag(stopped):
        sync_round(args, shown, rebuild=rebuild)  # a wrong --db fails here: one line, exit 2
        while True:
            deadline = time.monotonic() + args.watch
            while not stopped[0] and time.monotonic() < deadline:
                time.sleep(min(0.1, args.watch))
            _watch_round(args, shown, failing)
            if stopped[0]:
                break
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    url = postgres_url(args)
    if url is not None:
        from codex_logging._postgres.read import sessions_postgres  # noqa: PLC0415 - psycopg only here

        rows = sessions_postgres(url, args.session_id)
    else:
        rows = _read.sessions(sqlite_db(args), args.session_id)
    out = sys.stdout
    for row in rows:
        if args.json:
            out.write(to_json(row) + "\n")
            continue
        out.write(session_line(row) + "\n")
    out.flush()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    url = postgres_url(args)
    shown = [False]

    def progress(moved: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\rmoved {moved:,} of {total:,} rows ({moved / max(total, 1):.0%})")
            sys.stderr.flush()
            shown[0] = True

    if url is not None and args.grep_index is not None:
        msg = '--grep-index is for a SQLite mirror (docs/mirror.md, "The grep index")'
        raise InvalidFilterError(msg)
    try:
        if url is not None:
            from codex_logging._postgres.migrate import compact_mirror  # noqa: PLC0415 - psycopg only here

            name = hide_secrets(url)
            before, after = compact_mirror(url, dry_run=args.dry_run, progress=progress)
        else:
            name = sqlite_db(args)
            index = None if args.grep_index is None else args.grep_index == "on"
            before, after = compact_sqlite(
                name, dry_run=args.dry_run, progress=progress, grep_index=index
            )
    finally:
        if shown[0]:
            sys.stderr.write("\n")
    what = "expected after" if args.dry_run else "now"
    sys.stdout.write(
        f"{escape(name)}: {_mib(before)} before, {_mib(after)} {what}"
        f" ({after / max(before, 1):.2f}x)\n"
    )
    return 0


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def open_mirror(url: str | None, args: argparse.Namespace, folder: str) -> Mirror:
    """Open the database prune works on: PostgreSQL at ``url``, else the SQLite file.

    Raises:
        DatabaseNotFoundError: There is no database or no sessions folder.
        DatabaseError: The database cannot be used.
    """
    if url is not None:
        from codex_logging._postgres.prune import PostgresMirror  # noqa: PLC0415 - psycopg only here

        _check_folder(folder)
        return PostgresMirror(url, folder, read_only=args.dry_run)
    mirror = SqliteMirror(sqlite_db(args), read_only=args.dry_run)
    try:
        _check_folder(folder)
    except BaseException:
        mirror.close()
        raise
    return mirror


def _check_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        msg = f"no sessions folder at {folder}"
        raise DatabaseNotFoundError(msg)


def cmd_prune(args: argparse.Namespace) -> int:
    _path, given, _found = project_paths(args.db, args.sessions_dir)
    folder = sessions_dir_path(given)
    with contextlib.closing(open_mirror(postgres_url(args), args, folder)) as mirror:
        report = prune(
            mirror,
            folder,
            older_than=args.older_than,
            rows=args.rows,
            dry_run=args.dry_run,
            session_id=args.session_id,
        )
    if args.json:
        fields = {
            "dry_run": report.dry_run,
            "retired": report.retired,
            "kept": [{"session_id": sid, "reason": why} for sid, why in report.kept],
            "files_deleted": report.files_deleted,
            "rows_deleted": report.rows_deleted,
        }
        print(to_json(fields), flush=True)
        return 0
    verb = "would retire" if report.dry_run else "retired"
    for sid in report.retired:
        print(f"{verb} {sid}")
    for sid, why in report.kept:
        print(f"kept {sid}: {escape(why)}")
    done = len(report.retired)
    summary = f"{verb} {done} session{'s' if done != 1 else ''}: "
    if report.dry_run:
        summary += "nothing deleted (--dry-run)"
    else:
        summary += f"{report.files_deleted:,} files and {report.rows_deleted:,} rows deleted"
    print(summary, flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the web viewer (docs/viewer.md) until Ctrl-C."""
    try:
        from codex_logging._viewer.backend import (  # noqa: PLC0415 - the viewer extra, on use only
            Backend,
            PostgresBackend,
            SqliteBackend,
        )
        from codex_logging._viewer.server import serve  # noqa: PLC0415
    except ImportError as exc:
        msg = f"the viewer needs its extra: pip install '.[viewer]' in a checkout ({exc})"
        raise ViewerNotInstalledError(msg) from None
    url = postgres_url(args)
    backend: Backend
    if url is not None:
        backend = PostgresBackend(url)
        backend.sessions(None, None, 0, 1)  # a wrong URL fails here: one line, exit 2
    else:
        database = sqlite_db(args)
        if not os.path.exists(database):
            msg = f"no database at {database} (run 'codex-logs sync' first)"
            raise DatabaseNotFoundError(msg)
        backend = SqliteBackend(database)
        backend.sessions(None, None, 0, 1)
    try:
        serve(backend, args.host, args.port)
    except OSError as exc:
        msg = f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        raise ServeError(msg) from None
    return 0


class ViewerNotInstalledError(CodexLoggingError):
    """``codex-logs serve`` without the ``viewer`` extra installed."""


class ServeError(CodexLoggingError):
    """The viewer's address cannot be listened on."""
