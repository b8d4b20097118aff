"""``prune`` against a SQLite mirror: the reads and the delete of ``_mirror.prune.Mirror``.

Every statement runs through ``translated``: a damaged database is a
:class:`DatabaseDamagedError` that names it and says how to rebuild it, and
before any file goes the whole database passes SQLite's ``quick_check``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Final

from codex_logging._errors import DatabaseError, DatabaseNotFoundError
from codex_logging._mirror.schema import TABLES
from codex_logging._mirror.target import Mark
from codex_logging._sqlite.db import (
    BUSY_TIMEOUT,
    atomic,
    connect,
    connect_readonly,
    quick_check,
    remember_state,
    translated,
)

#: Sessions with an ``end`` record, when their last end and last event were.
_CANDIDATES: Final = """
    SELECT e.session_id, MAX(e.ts) AS end_ts,
        (SELECT MAX(f.ts) FROM session_events f WHERE f.session_id = e.session_id) AS last_ts
    FROM session_events e
    WHERE e.kind <> 'message' AND e.kind = 'end'
    GROUP BY e.session_id
    HAVING MAX(e.ts) IS NOT NULL
    ORDER BY e.session_id
"""


class SqliteMirror:
    """The rows and watermarks of a SQLite mirror.

    Args:
        database: The database file; never created.
        read_only: Only read (``--dry-run``).
        busy_timeout: Seconds to wait for a sync's write lock.

    Raises:
        DatabaseNotFoundError: There is no file at ``database``.
        DatabaseError: The database cannot be opened.
    """

    def __init__(
        self, database: str, *, read_only: bool, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        if not os.path.isfile(database):
            msg = f"no database at {database} (run 'codex-logs sync' first)"
            raise DatabaseNotFoundError(msg)
        self.name = database
        self.busy_timeout = busy_timeout
        self.checked = False  # quick_check passed
        self.wrote = False  # rows were deleted
        self.conn = (connect_readonly if read_only else connect)(database)

    def check(self) -> None:
        """Run SQLite's ``quick_check``: raise :class:`DatabaseDamagedError` unless it passes."""
        quick_check(self.conn, self.name)
        self.checked = True

    def candidates(self) -> list[tuple[str, float, float]]:
        """Return ``(session, last end ts, last ts)`` of every session with an ``end``."""
        with translated(self.name, self.busy_timeout):
            return list(self.conn.execute(_CANDIDATES).fetchall())

    def has_session(self, session_id: str) -> bool:
        """Return whether the session has any row."""
        with translated(self.name, self.busy_timeout):
            found = self.conn.execute(
                "SELECT 1 FROM session_events WHERE session_id = ? LIMIT 1", (session_id,)
            ).fetchone()
        return found is not None

    def watermark(self, session_id: str) -> Mark | None:
        """Return the session's watermark."""
        with translated(self.name, self.busy_timeout):
            found = self.conn.execute(
                "SELECT byte_offset, head_len, head_sha256, file_dev, file_ino, seq"
                " FROM session_ingest_watermark WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return None if found is None else tuple(found)

    def event_keys(
        self, session_id: str, first: int, last: int
    ) -> Iterator[tuple[int, float | None, str | None]]:
        """Yield ``(seq, ts, kind)`` of the events ``first..last``; every column is read."""
        with translated(self.name, self.busy_timeout):
            # message and data are fetched, not only measured: their pages
            # (overflow pages too) are read, so damage there raises.
            for seq, ts, kind, *_rest in self.conn.execute(
                "SELECT seq, ts, kind, level, logger, role, message, data FROM session_events"
                " WHERE session_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                (session_id, first, last),
            ):
                yield seq, ts, kind

    def error_keys(self, session_id: str, first: int, last: int) -> Iterator[tuple[int, int]]:
        """Yield ``(seq, byte_offset)`` of the quarantined lines ``first..last``."""
        with translated(self.name, self.busy_timeout):
            for seq, offset, _error, _raw in self.conn.execute(
                "SELECT seq, byte_offset, error, raw FROM session_ingest_errors"
                " WHERE session_id = ? AND seq BETWEEN ? AND ? ORDER BY seq, byte_offset",
                (session_id, first, last),
            ):
                yield seq, offset

    def delete_rows(self, session_id: str) -> int:
        """Delete the session's rows, quarantined lines, watermark and summary."""
        self.wrote = True
        with atomic(self.conn, self.name, self.busy_timeout):
            # The compact rows (``session_events`` is a view over them: docs/mirror.md),
            # then the session's other tables, its key last.
            deleted = self.conn.execute(
                "DELETE FROM session_rows"
                " WHERE sid = (SELECT id FROM session_keys WHERE session_id = ?)",
                (session_id,),
            ).rowcount
            for table in (*(t for t in TABLES if t != "session_events"), "session_keys"):
                self.conn.execute(
                    f"DELETE FROM {table} WHERE session_id = ?",  # noqa: S608 - constants
                    (session_id,),
                )
        return deleted

    def finish(self) -> None:
        """Give the space back: ``VACUUM``."""
        try:
            with translated(self.name, self.busy_timeout):
                self.conn.execute("VACUUM")
        except DatabaseError as exc:
            msg = f"pruned, but cannot VACUUM: {exc}"
            raise type(exc)(msg) from exc

    def close(self) -> None:
        """Close the connection; record the file's state for the next sync once checked."""
        self.conn.close()
        if self.checked and self.wrote:
            remember_state(self.name)  # a prune's own writes: the next sync need not check
