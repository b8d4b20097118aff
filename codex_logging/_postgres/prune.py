"""``prune`` against a PostgreSQL mirror: the reads and the delete of ``_mirror.prune.Mirror``.

Many sessions folders (machines) sync into one PostgreSQL database, each under
its own ``source_id``. A prune runs on one machine, next to one folder: it
looks only at that folder's rows and watermarks, so a file goes only when
every byte of it is in the database under this folder's id, and ``--rows``
deletes only this folder's rows of a retired session (another machine's part
of the same session may still be waiting for its sync).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from codex_logging._errors import DatabaseNotFoundError
from codex_logging._mirror.schema import TABLES
from codex_logging._mirror.target import Mark, existing_source_id
from codex_logging._postgres.db import (
    BUSY_TIMEOUT,
    LEGACY_TABLE,
    connect,
    display_url,
    table_exists,
    transaction,
    translated,
)

#: A source id no folder has: a folder never synced into PostgreSQL matches nothing.
_NO_SOURCE: Final = ""

_CANDIDATES: Final = """
    SELECT session_id, max(ts) FILTER (WHERE kind = 'end') AS end_ts, max(ts) AS last_ts
    FROM session_events
    WHERE source_id = %s
    GROUP BY session_id
    HAVING max(ts) FILTER (WHERE kind = 'end') IS NOT NULL
    ORDER BY session_id
"""


class PostgresMirror:
    """The rows and watermarks of one sessions folder in a PostgreSQL mirror.

    Args:
        url: A ``postgresql://`` URL.
        folder: The sessions folder being pruned.
        read_only: Only read (``--dry-run``).
        busy_timeout: Seconds to wait for a sync's row locks.

    Raises:
        PostgresNotInstalledError: psycopg is not installed.
        DatabaseError: The server cannot be reached or has no mirror tables.
    """

    def __init__(
        self, url: str, folder: str, *, read_only: bool, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.name = display_url(url)
        self.busy_timeout = busy_timeout
        self.source = existing_source_id(folder) or _NO_SOURCE
        self.conn: Any = connect(url, busy_timeout=busy_timeout, read_only=read_only)
        try:
            with translated(self.name):
                synced = table_exists(self.conn, "session_events")
        except BaseException:
            self.conn.close()
            raise
        if not synced:
            self.conn.close()
            msg = f"{self.name} has no session_events table (run 'codex-logs sync --db URL' first)"
            raise DatabaseNotFoundError(msg)

    def candidates(self) -> list[tuple[str, float, float]]:
        """Return ``(session, last end ts, last ts)`` of this folder's ended sessions."""
        with translated(self.name):
            rows = self.conn.execute(_CANDIDATES, (self.source,)).fetchall()
        return [(sid, float(end_ts), float(last_ts)) for sid, end_ts, last_ts in rows]

    def has_session(self, session_id: str) -> bool:
        """Return whether any folder synced rows of the session."""
        with translated(self.name):
            found = self.conn.execute(
                "SELECT 1 FROM session_events WHERE session_id = %s LIMIT 1", (session_id,)
            ).fetchone()
        return found is not None

    def check(self) -> None:
        """Nothing database-wide: the server checks its own pages as it reads them."""

    def watermark(self, session_id: str) -> Mark | None:
        """Return this folder's watermark of the session."""
        with translated(self.name):
            found = self.conn.execute(
                "SELECT byte_offset, head_len, head_sha256, file_dev, file_ino, seq"
                " FROM session_ingest_watermark WHERE source_id = %s AND session_id = %s",
                (self.source, session_id),
            ).fetchone()
        if found is None:
            return None
        offset, head_len, head_hash, dev, ino, seq = found
        return (
            int(offset),
            int(head_len),
            head_hash,
            None if dev is None else int(dev),
            None if ino is None else int(ino),
            int(seq),
        )

    def event_keys(
        self, session_id: str, first: int, last: int
    ) -> Iterator[tuple[int, float | None, str | None]]:
        """Yield ``(seq, ts, kind)`` of this folder's events ``first..last``; read every column."""
        # The lengths make the server read (and decompress) every value.
        rows = self._between(
            "seq, ts, kind, octet_length(level), octet_length(logger), octet_length(role),"
            " octet_length(message), octet_length(data) FROM session_events",
            session_id,
            first,
            last,
            order="seq",
        )
        for seq, ts, kind, *_lengths in rows:
            yield int(seq), ts, kind

    def error_keys(self, session_id: str, first: int, last: int) -> Iterator[tuple[int, int]]:
        """Yield ``(seq, byte_offset)`` of this folder's quarantined lines ``first..last``."""
        rows = self._between(
            "seq, byte_offset, octet_length(error), octet_length(raw), octet_length(raw_bytes)"
            " FROM session_ingest_errors",
            session_id,
            first,
            last,
            order="seq, byte_offset",
        )
        for seq, offset, *_lengths in rows:
            yield int(seq), int(offset)

    def _between(
        self, select: str, session_id: str, first: int, last: int, *, order: str
    ) -> Iterator[tuple[Any, ...]]:
        # SELECT ``select`` (columns FROM a table): this folder's rows of the
        # session with seq ``first..last``, in ``order``.
        with translated(self.name), self.conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {select} WHERE source_id = %s AND session_id = %s"
                f" AND seq BETWEEN %s AND %s ORDER BY {order}",
                (self.source, session_id, first, last),
            )
            yield from cursor

    def delete_rows(self, session_id: str) -> int:
        """Delete this folder's rows, quarantined lines, watermark and summary of the session."""
        with translated(self.name), transaction(self.conn, self.busy_timeout):
            deleted = 0
            for table in TABLES:
                if table == "session_events":
                    deleted = self._delete_events(session_id)
                    continue
                self.conn.execute(
                    f"DELETE FROM {table} WHERE source_id = %s AND session_id = %s",  # noqa: S608 - constants
                    (self.source, session_id),
                )
        return deleted

    def _delete_events(self, session_id: str) -> int:
        # session_events is a view over the compact tables (and the old table
        # while its rows move): the rows go from the tables themselves. The
        # session's key stays: a sync may be about to write under it.
        params = (self.source, session_id)
        by_name = "DELETE FROM {table} WHERE source_id = %s AND session_id = %s"
        if not table_exists(self.conn, "session_rows"):  # a mirror not migrated yet
            return int(self.conn.execute(by_name.format(table="session_events"), params).rowcount)
        deleted = self.conn.execute(
            "DELETE FROM session_rows WHERE sid = (SELECT id FROM session_keys"
            " WHERE source_id = %s AND session_id = %s)",
            params,
        ).rowcount
        if table_exists(self.conn, LEGACY_TABLE):
            deleted += self.conn.execute(by_name.format(table=LEGACY_TABLE), params).rowcount
        return int(deleted)

    def finish(self) -> None:
        """Nothing to do: PostgreSQL's autovacuum gives the space back."""

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
