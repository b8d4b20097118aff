"""``prune`` against a SQLite mirror: the reads and the delete of ``_mirror.prune.Mirror``."""

from __future__ import annotations

import os
import sqlite3
from typing import Final

from codex_logging._errors import DatabaseError, DatabaseNotFoundError
from codex_logging._mirror.schema import TABLES
from codex_logging._mirror.target import Mark
from codex_logging._sqlite.db import BUSY_TIMEOUT, atomic, connect, connect_readonly

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
        self.conn = (connect_readonly if read_only else connect)(database)

    def candidates(self) -> list[tuple[str, float, float]]:
        """Return ``(session, last end ts, last ts)`` of every session with an ``end``."""
        return list(self.conn.execute(_CANDIDATES).fetchall())

    def has_session(self, session_id: str) -> bool:
        """Return whether the session has any row."""
        found = self.conn.execute(
            "SELECT 1 FROM session_events WHERE session_id = ? LIMIT 1", (session_id,)
        ).fetchone()
        return found is not None

    def watermark(self, session_id: str) -> Mark | None:
        """Return the session's watermark."""
        found = self.conn.execute(
            "SELECT byte_offset, head_len, head_sha256, file_dev, file_ino"
            " FROM session_ingest_watermark WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        return None if found is None else tuple(found)

    def delete_rows(self, session_id: str) -> int:
        """Delete the session's rows, quarantined lines, watermark and summary."""
        with atomic(self.conn, self.name, self.busy_timeout):
            deleted = 0
            for table in TABLES:
                cursor = self.conn.execute(
                    f"DELETE FROM {table} WHERE session_id = ?",  # noqa: S608 - constants
                    (session_id,),
                )
                if table == "session_events":
                    deleted = cursor.rowcount
        return deleted

    def finish(self) -> None:
        """Give the space back: ``VACUUM``."""
        try:
            self.conn.execute("VACUUM")
        except sqlite3.Error as exc:
            msg = f"pruned, but cannot VACUUM {self.name}: {exc}"
            raise DatabaseError(msg) from exc

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
