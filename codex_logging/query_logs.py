"""``python -m codex_logging.query_logs``: print the latest events of the database.

Example::

    python -m codex_logging.query_logs --session-id run-42 --tail 20 --json
"""

from __future__ import annotations

import sys

from codex_logging._cli.main import query_main
from codex_logging._sqlite.read import follow, query, sessions

main = query_main

__all__ = ["follow", "main", "query", "sessions"]

if __name__ == "__main__":
    sys.exit(main())
