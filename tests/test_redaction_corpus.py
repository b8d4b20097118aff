"""Both corpora through the handler and the processor: recall and ordinary lines changed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from codex_logging import CodexHandler, CodexProcessor
from tests.conftest import read_lines
from tests.redaction_corpus import Case, ordinary_fields, ordinary_lines, secret_cases

#: The targets of docs/redaction.md ("Measured").
MIN_RECALL = 0.98
MAX_ORDINARY_CHANGED = 0.01


def _handler_records(tmp_path: Path, log: Any) -> list[dict[str, Any]]:
    handler = CodexHandler(tmp_path, "corpus")
    logger = logging.getLogger("corpus")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
    return read_lines(tmp_path / "corpus.ndjson")


def _leaks(case: Case, record: dict[str, Any]) -> bool:
    return case.secret in json.dumps(record, ensure_ascii=False) or case.secret in str(record)


def _log_case(logger: logging.Logger, case: Case) -> None:
    if case.template is not None:
        logger.info(case.template[0], case.template[1])
    elif case.text is not None:
        logger.info(case.text, extra=case.fields)
    else:
        logger.info("fields", extra=case.fields)


def _process_case(processor: CodexProcessor, case: Case) -> None:
    if case.template is not None:
        template, args = case.template
        processor(None, "info", {"event": template, **args})
    else:
        processor(None, "info", {"event": case.text or "fields", **case.fields})


class TestSecretCorpus:
    def test_corpus_size(self) -> None:
        """At least 150 secrets across the families and 300 ordinary lines."""
        cases = secret_cases()
        assert len(cases) >= 150
        assert {c.family for c in cases} >= {
            "provider",
            "config",
            "command",
            "http",
            "url",
            "keys",
            "structure",
        }
        assert len(ordinary_lines()) >= 300

    def test_recall_through_the_handler(self, tmp_path: Path) -> None:
        cases = secret_cases()
        records = _handler_records(tmp_path, lambda logger: [_log_case(logger, c) for c in cases])
        assert len(records) == len(cases)
        leaked = [c for c, r in zip(cases, records, strict=True) if _leaks(c, r)]
        recall = 1 - len(leaked) / len(cases)
        assert recall >= MIN_RECALL, [(c.family, c.text or c.fields) for c in leaked]

    def test_recall_through_the_processor(self, tmp_path: Path) -> None:
        cases = secret_cases()
        processor = CodexProcessor(tmp_path, "corpus")
        for case in cases:
            _process_case(processor, case)
        records = read_lines(tmp_path / "corpus.ndjson")
        leaked = [c for c, r in zip(cases, records, strict=True) if _leaks(c, r)]
        recall = 1 - len(leaked) / len(cases)
        assert recall >= MIN_RECALL, [(c.family, c.text or c.fields) for c in leaked]


class TestOrdinaryCorpus:
    def test_ordinary_lines_through_the_handler(self, tmp_path: Path) -> None:
        lines = ordinary_lines()
        records = _handler_records(tmp_path, lambda logger: [logger.info(line) for line in lines])
        changed = [
            (line, r["message"])
            for line, r in zip(lines, records, strict=True)
            if r["message"] != line or r.get("redacted")
        ]
        assert len(changed) / len(lines) <= MAX_ORDINARY_CHANGED, changed

    def test_ordinary_lines_through_the_processor(self, tmp_path: Path) -> None:
        lines = ordinary_lines()
        processor = CodexProcessor(tmp_path, "corpus")
        for line in lines:
            processor(None, "info", {"event": line})
        records = read_lines(tmp_path / "corpus.ndjson")
        changed = [
            (line, r["message"])
            for line, r in zip(lines, records, strict=True)
            if r["message"] != line or r.get("redacted")
        ]
        assert len(changed) / len(lines) <= MAX_ORDINARY_CHANGED, changed

    @pytest.mark.parametrize("fields", ordinary_fields(), ids=",".join)
    def test_ordinary_fields_stay(self, tmp_path: Path, fields: dict[str, Any]) -> None:
        """Names holding key, token or auth that are not secrets keep their values, both ways."""
        (record,) = _handler_records(tmp_path, lambda logger: logger.info("m", extra=fields))
        assert {k: record[k] for k in fields} == fields
        assert "redacted" not in record
        CodexProcessor(tmp_path, "p")(None, "info", {"event": "m", **fields})
        (record,) = read_lines(tmp_path / "p.ndjson")
        assert {k: record[k] for k in fields} == fields
