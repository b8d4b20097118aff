"""CodexProcessor with levels of the program's own, and a stdlib logger behind a queue listener."""

from __future__ import annotations

import logging
import logging.handlers
import queue
from pathlib import Path
from typing import Any

import pytest

from codex_logging import CodexHandler, CodexProcessor
from tests.conftest import read_lines


class TestOwnLevels:
    @pytest.mark.parametrize(
        ("event", "level", "levelno"),
        [
            ({"level": "success", "level_number": 25}, "SUCCESS", 25),
            ({"level": "notice", "level_number": True}, "NOTICE", None),  # not a number
            ({"level": "Level 35"}, "LEVEL 35", 35),
            ({"level": "Level 3x"}, "LEVEL 3X", None),
            ({"level": "chatter"}, "CHATTER", None),
        ],
    )
    def test_the_number_of_a_level_is_kept_when_it_is_known(
        self, tmp_path: Path, event: dict[str, Any], level: str, levelno: int | None
    ) -> None:
        CodexProcessor(tmp_path, "p")(None, "info", {"event": "hello", **event})
        (rec,) = read_lines(tmp_path / "p.ndjson")
        assert (rec["level"], rec.get("levelno")) == (level, levelno)

    def test_a_level_registered_with_logging(self, tmp_path: Path) -> None:
        logging.addLevelName(23, "VERBOSE_CODEX_TEST")
        CodexProcessor(tmp_path, "p")(None, "info", {"event": "hi", "level": "verbose_codex_test"})
        (rec,) = read_lines(tmp_path / "p.ndjson")
        assert (rec["level"], rec["levelno"]) == ("VERBOSE_CODEX_TEST", 23)


class TestBehindAQueue:
    def _logger(self, listener_handlers: list[logging.Handler]) -> logging.Logger:
        records: queue.Queue[logging.LogRecord] = queue.Queue()
        front = logging.handlers.QueueHandler(records)
        front.listener = logging.handlers.QueueListener(records, *listener_handlers)  # type: ignore[attr-defined]
        logger = logging.getLogger(f"queued.{len(listener_handlers)}")
        logger.handlers[:] = [front]
        logger.propagate = False
        return logger

    def test_left_to_the_handler_behind_the_listener(self, tmp_path: Path) -> None:
        """The CodexHandler behind the listener writes it: the processor does not write it twice."""
        logger = self._logger([CodexHandler(tmp_path / "h")])
        CodexProcessor(tmp_path / "p", "p")(logger, "info", {"event": "once"})
        assert not (tmp_path / "p").exists()

    def test_written_when_the_listener_has_no_codex_handler(self, tmp_path: Path) -> None:
        logger = self._logger([logging.NullHandler()])
        CodexProcessor(tmp_path / "p", "p")(logger, "info", {"event": "mine"})
        (rec,) = read_lines(tmp_path / "p" / "p.ndjson")
        assert rec["message"] == "mine"
