"""The mirror's shared vocabulary: the event and session columns, the levels.

The sync writes ``session_events`` and the read side selects from it; both take
the column list from here, so a column is added in one place.
"""

from __future__ import annotations

from typing import Final

#: The columns of ``session_events``, in table order (docs/mirror.md, "Schema").
EVENT_COLUMNS: Final = (
    "session_id",
    "seq",
    "ts",
    "kind",
    "level",
    "logger",
    "role",
    "message",
    "data",
)

#: The tables that hold a session's rows, in both databases; prune's ``--rows``
#: deletes a session from each of them.
TABLES: Final = (
    "session_events",
    "session_ingest_errors",
    "session_ingest_watermark",
    "session_summary",
    "session_summary_pids",
)

#: The columns of the ``sessions`` view the read commands show, in their order
#: (the SQLite and the PostgreSQL views both have them).
SESSION_COLUMNS: Final = (
    "session_id",
    "start_time",
    "end_time",
    "status",
    "events",
    "messages",
    "warnings",
    "errors",
    "processes",
    "duration_s",
    "start_ts",
    "end_ts",
)

#: Level names and their numbers, as the stdlib ``logging`` module has them.
LEVELS: Final = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

#: Other spellings older hooks write, stored as they came.
LEVEL_ALIASES: Final = {"WARN": "WARNING", "FATAL": "CRITICAL"}
