"""``codex-logs migrate`` against a SQLite mirror: to the compact layout, in place.

The schema's own migrations do the work (``_sqlite/db.py``: the rows move in
batches, each in its own transaction, so a killed run goes on where it
stopped); this adds the progress, the ``VACUUM`` that gives the freed pages
back to the file system, and the estimate a ``--dry-run`` prints
(docs/mirror.md, "Moving an existing mirror").
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from typing import Final

from codex_logging._errors import DatabaseError, DatabaseNotFoundError
from codex_logging._sqlite.db import (
    LEGACY_TABLE,
    SCHEMA_VERSION,
    MoveProgress,
    atomic,
    compact_row,
    connect,
    connect_readonly,
    reading,
    refuse_foreign,
    set_grep_index,
    table_names,
    translated,
)

#: Rows of the old table measured in the compact layout for a ``--dry-run``.
SAMPLE_ROWS: Final = 20_000


def compact_mirror(
    path: str,
    *,
    dry_run: bool = False,
    progress: MoveProgress | None = None,
    grep_index: bool | None = None,
) -> tuple[int, int]:
    """Bring the SQLite mirror at ``path`` to the compact layout and give the space back.

    Args:
        path: The database; never created.
        dry_run: Change nothing; estimate the size after.
        progress: Told (rows moved, rows in all) after each batch.
        grep_index: Build (True) or drop (False) the full-text index of
            ``--grep``; None leaves it as it is.

    Returns:
        The database's bytes before, and after (or, for ``dry_run``, the
        bytes expected after: see :func:`estimate`).

    Raises:
        DatabaseNotFoundError: There is no file at ``path``.
        DatabaseError: It cannot be read or written.
    """
    if not os.path.isfile(path):
        msg = f"no database at {path} (run 'codex-logs sync' first)"
        raise DatabaseNotFoundError(msg)
    before = _size(path)
    if dry_run:
        return before, estimate(path)
    with contextlib.closing(connect(path, progress=progress)) as conn:
        if grep_index is not None:
            set_grep_index(conn, path, on=grep_index)
        with translated(path):
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return before, _size(path)


def _size(path: str) -> int:
    return sum(
        os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)
    )


def estimate(path: str) -> int:
    """Return the bytes the mirror at ``path`` is expected to take once compact.

    Up to :data:`SAMPLE_ROWS` rows of the old table, spread evenly over it,
    are written in the compact layout to a scratch database; their bytes per
    row (table and indexes) times the rows, plus every other table and index
    as it is now (SQLite's ``dbstat``), is the estimate. A mirror already
    compact is its size.

    Args:
        path: The database.

    Returns:
        The bytes.
    """
    with contextlib.closing(connect_readonly(path)) as conn, reading(path):
        refuse_foreign(conn, path)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = table_names(conn)
        old = LEGACY_TABLE if LEGACY_TABLE in tables else "session_events"
        if version >= SCHEMA_VERSION or old not in tables:
            return _size(path)
        (rows,) = conn.execute(f"SELECT COUNT(*) FROM {old}").fetchone()  # noqa: S608 - constants
        step = max(1, rows // SAMPLE_ROWS)
        sample = conn.execute(
            f"SELECT session_id, seq, ts, kind, level, logger, role, message, data FROM {old}"  # noqa: S608
            " WHERE rowid % ? = 0 LIMIT ?",
            (step, SAMPLE_ROWS),
        ).fetchall()
        try:
            (old_bytes,) = conn.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE name = ? OR name IN"
                " (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?)",
                (old, old),
            ).fetchone()
        except sqlite3.OperationalError as exc:  # an SQLite built without dbstat
            msg = f"cannot estimate the size of {path}: {exc}"
            raise DatabaseError(msg) from exc
    if not sample:
        return _size(path) - (old_bytes or 0)
    with tempfile.TemporaryDirectory() as scratch:
        trial = os.path.join(scratch, "trial.db")
        with contextlib.closing(connect(trial)) as out:
            empty = _compact_bytes(out)
            with atomic(out, trial):
                keys: dict[str, int] = {}
                rows_out = [compact_row(out, keys, row) for row in sample]
                out.executemany(
                    "INSERT INTO session_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows_out
                )
            per_row = (_compact_bytes(out) - empty) / len(sample)
    return int(_size(path) - (old_bytes or 0) + per_row * rows)


def _compact_bytes(conn: sqlite3.Connection) -> int:
    (found,) = conn.execute(
        "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = 'session_rows' OR name IN"
        " (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'session_rows')"
    ).fetchone()
    return int(found)
