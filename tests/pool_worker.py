"""Worker functions for the multiprocessing pool tests (importable by spawned children)."""

from __future__ import annotations

import logging

from codex_logging import CodexHandler


def configure() -> None:
    """Pool initializer: a CodexHandler from the environment, as a hook script would have."""
    root = logging.getLogger()
    if not any(isinstance(h, CodexHandler) for h in root.handlers):
        root.addHandler(CodexHandler())
    root.setLevel(logging.INFO)


def work(n: int) -> int:
    """Log one numbered record and return the number."""
    logging.getLogger("pool").info("item %d", n)
    return n
