"""Compacting a PostgreSQL mirror in place (``compact_mirror``).

A mirror made before the compact tables (docs/mirror.md, "Each value stored
once") keeps every row in the old ``session_events`` table. The next writer to
connect migrates it (``_postgres/db.py``, ``migrate``): the compact tables and
the views first, then the old rows move over in batches, each batch deleted
from the old table and written to the new ones in one transaction, then the
emptied table is dropped, which gives its space back to the file system.
:func:`compact_mirror` does the same on demand, and says what it saved.
"""

from __future__ import annotations

from typing import Any, Final

from codex_logging._errors import DatabaseLockedError, DatabaseNotFoundError
from codex_logging._postgres.db import (
    BUSY_TIMEOUT,
    LEGACY_TABLE,
    MIGRATIONS,
    MOVING,
    SCHEMA_VERSION,
    MoveProgress,
    compact_row,
    connect,
    display_url,
    estimated_rows,
    migrate,
    schema_version,
    table_exists,
    translated,
)

#: Rows of the old table the dry run writes into a scratch copy of the compact table.
SAMPLE_ROWS: Final = 20_000

_SIZE: Final = "SELECT pg_database_size(current_database())"


def compact_mirror(
    url: str, *, dry_run: bool = False, progress: MoveProgress | None = None
) -> tuple[int, int]:
    """Move a PostgreSQL mirror's rows into the compact tables; return its size before and after.

    Resumable: killed at any point, a rerun (or the next sync) goes on from
    the last committed batch, with the same rows as an uninterrupted run. Syncs
    and reads may go on meanwhile.

    The dry run changes nothing. It estimates the size after from a sample of
    the old rows (at most :data:`SAMPLE_ROWS`, a random share of the table's
    pages): they are written, with the compact table's indexes, into a
    temporary table in a transaction that is rolled back; their bytes per row
    times the old table's rows replace the old table and its indexes.

    Args:
        url: A ``postgresql://`` URL.
        dry_run: Only estimate.
        progress: Told (rows moved, rows to move) after each batch.

    Returns:
        ``(bytes before, bytes after)`` of the database (``pg_database_size``);
        for a dry run, the bytes after are the estimate.

    Raises:
        PostgresNotInstalledError: psycopg is not installed.
        DatabaseNotFoundError: The database has no mirror.
        DatabaseLockedError: A reader kept the old table locked past the busy
            timeout, so it could not be dropped yet (the rows have moved; run again).
        DatabaseError: The server cannot be reached or refuses.
    """
    name = display_url(url)
    conn = connect(url)
    try:
        with translated(name):
            if not table_exists(conn, "session_events"):
                msg = f"{name} has no session_events table (run 'codex-logs sync --db URL' first)"
                raise DatabaseNotFoundError(msg)
            (before,) = conn.execute(_SIZE).fetchone()
            if dry_run:
                return int(before), int(before) + _estimated_change(conn)
        migrate(conn, name, BUSY_TIMEOUT, progress)
        with translated(name):
            if schema_version(conn) < SCHEMA_VERSION:
                msg = (
                    f"{name}: the rows have moved, but a reader kept {LEGACY_TABLE} locked:"
                    " run again to drop it"
                )
                raise DatabaseLockedError(msg)
            (after,) = conn.execute(_SIZE).fetchone()
        return int(before), int(after)
    finally:
        conn.close()


def _estimated_change(conn: Any) -> int:
    """Return the bytes the move would add (negative: save), from a sample of the old rows."""
    version = schema_version(conn)
    old = "session_events" if version < MOVING else LEGACY_TABLE
    if version > MOVING or not table_exists(conn, old):
        return 0
    (old_bytes,) = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (old,)).fetchone()
    rows = estimated_rows(conn, old)
    if not rows:
        return -int(old_bytes)
    share = min(100.0, 100.0 * SAMPLE_ROWS / rows)
    columns = "source_id, session_id, seq, ts, kind, level, logger, role, message, data"
    sample_sql = f"SELECT {columns} FROM {old} TABLESAMPLE SYSTEM (%s) LIMIT %s"  # noqa: S608
    with conn.transaction(force_rollback=True):
        sample = conn.execute(sample_sql, (share, SAMPLE_ROWS)).fetchall()
        if len(sample) < min(rows, 100):  # few pages drawn: take the first rows
            sample = conn.execute(
                f"SELECT {columns} FROM {old} LIMIT %s",  # noqa: S608 - constants
                (SAMPLE_ROWS,),
            ).fetchall()
        _scratch_table(conn)
        empty = _scratch_bytes(conn)
        keys = {key: n for n, key in enumerate({row[:2] for row in sample})}
        with conn.cursor().copy("COPY codex_scratch_rows FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(("int8", "int8", "float8", "int8", "int2", *("text",) * 6))
            for row in sample:
                copy.write_row(compact_row(conn, keys, row))
        per_row = (_scratch_bytes(conn) - empty) / len(sample)
    return round(per_row * rows) - int(old_bytes)


def _scratch_table(conn: Any) -> None:
    """Make ``codex_scratch_rows``: a temporary ``session_rows`` with its indexes."""
    (_name, statements) = MIGRATIONS[MOVING - 1]
    for statement in statements:
        if "ON session_rows" in statement or "TABLE IF NOT EXISTS session_rows" in statement:
            conn.execute(
                statement.replace(
                    "TABLE IF NOT EXISTS session_rows", "TEMP TABLE codex_scratch_rows"
                )
                .replace("INDEX IF NOT EXISTS session_rows", "INDEX codex_scratch_rows")
                .replace("ON session_rows", "ON codex_scratch_rows")
            )


def _scratch_bytes(conn: Any) -> int:
    (size,) = conn.execute("SELECT pg_total_relation_size('codex_scratch_rows')").fetchone()
    return int(size)
