"""CodexHandler with records built off the usual path: a message that is not text, a traceback as text."""

from __future__ import annotations

import logging
from pathlib import Path

from codex_logging import CodexHandler
from tests.conftest import read_lines


class Note:
    def __str__(self) -> str:
        return "note %s of %s"


def test_a_message_that_is_not_text_is_its_str(tmp_path: Path) -> None:
    handler = CodexHandler(tmp_path, session_id="h")
    log = logging.getLogger("handler.records")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info(42)
    log.info(Note(), 1, 2)
    assert [r["message"] for r in read_lines(tmp_path / "h.ndjson")] == ["42", "note 1 of 2"]


def test_a_traceback_given_as_text_is_kept(tmp_path: Path) -> None:
    """A record from another process (a socket or queue listener) carries exc_text, no exc_info."""
    handler = CodexHandler(tmp_path, session_id="h")
    tb = 'Traceback (most recent call last):\n  File "w.py", line 1, in <module>\nKeyError: 1'
    handler.handle(
        logging.makeLogRecord(
            {"name": "remote", "levelno": logging.ERROR, "levelname": "ERROR", "msg": "failed",
             "exc_text": tb}
        )
    )  # fmt: skip
    (rec,) = read_lines(tmp_path / "h.ndjson")
    assert (rec["message"], rec["level"], rec["exc"]) == ("failed", "ERROR", tb)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class ReprOnly:
    def __str__(self) -> str:
        raise ValueError("cannot render postgresql://app:Hunter2Secret@db/prod")

    def __repr__(self) -> str:
        return "<ReprOnly>"


class OwnRecord(logging.LogRecord):
    """A record class with a getMessage of its own (as some frameworks install)."""

    def getMessage(self) -> str:
        return str(self.msg) % self.args


def test_arguments_that_do_not_fit_are_written_beside_the_message(tmp_path: Path) -> None:
    """As structlog keeps such an event: the record is written, not dropped."""
    handler = CodexHandler(tmp_path, session_id="h")
    log = logging.getLogger("handler.records.args")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("user %s logged in from %s", "bob")  # noqa: PLE1206 - the case tested
    log.info("retry %d", "three")
    log.info("obj %s", Unprintable())
    log.info("%(x)s", {"y": 1})
    log.info("token %s", "ghp_" + "a1B2" * 9, "extra")  # noqa: PLE1205 - the case tested
    handler.handle(OwnRecord("own", logging.INFO, "f.py", 1, "%s and %s", ("one",), None))
    log.info(ReprOnly())  # a message object whose str() raises: its repr
    log.info(Unprintable())
    assert handler.dropped == 0
    assert [r["message"] for r in read_lines(tmp_path / "h.ndjson")] == [
        "user %s logged in from %s ('bob',)",
        "retry %d ('three',)",
        "obj %s (<unprintable Unprintable>,)",
        "%(x)s {'y': 1}",
        "token %s ('[REDACTED]', 'extra')",
        "%s and %s ('one',)",
        "<ReprOnly>",
        "<unprintable Unprintable>",
    ]


def test_a_kind_of_its_own_is_a_message_keeping_it(tmp_path: Path) -> None:
    """kind is start, message or end (docs/record-format.md): another is kept as extra.kind."""
    handler = CodexHandler(tmp_path, session_id="h")
    log = logging.getLogger("handler.records.kind")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("a", extra={"kind": "end", "status": "ok"})
    log.info("b", extra={"kind": "tool_call"})
    log.info("c", extra={"kind": 5})
    records = read_lines(tmp_path / "h.ndjson")
    assert [(r["kind"], r.get("extra.kind")) for r in records] == [
        ("end", None),
        ("message", "tool_call"),
        ("message", "5"),
    ]
