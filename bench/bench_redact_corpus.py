"""Recall and false positives of our redaction beside detect-secrets', on the same corpora.

The corpora are tests/redaction_corpus.py: fake secrets in the shapes real logs
hold, and ordinary lines. Ours: each case logged through CodexHandler and
CodexProcessor (redaction on); a secret is caught when it is not in the record
written, an ordinary line is damaged when its message changed. detect-secrets
(optional, ``pip install -e '.[bench]'``), two ways: the same cases written
with ``redact=False`` to an NDJSON file scanned as a file (its default plugins
and filters), and each logged text scanned alone as ``--string`` does; a
secret is caught, an ordinary line flagged, when anything is reported on it.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codex_logging import CodexHandler, CodexProcessor
from tests.redaction_corpus import Case, ordinary_lines, secret_cases


def _log(handler: CodexHandler, run: Any) -> None:
    logger = logging.getLogger("bench-corpus")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        run(logger)
    finally:
        logger.removeHandler(handler)


def _log_case(logger: logging.Logger, case: Case) -> None:
    if case.template is not None:
        logger.info(case.template[0], case.template[1])
    elif case.text is not None:
        logger.info(case.text, extra=case.fields)
    else:
        logger.info("fields", extra=case.fields)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ours(folder: Path) -> dict[str, tuple[int, int]]:
    """Return ``{path: (caught, total)}`` for secrets and ``(damaged, total)`` for ordinary lines."""
    cases, lines = secret_cases(), ordinary_lines()
    _log(CodexHandler(folder, "h"), lambda lg: [_log_case(lg, c) for c in cases])
    processor = CodexProcessor(folder, "p")
    for case in cases:
        fields = case.template[1] if case.template else case.fields
        event = case.template[0] if case.template else case.text or "fields"
        processor(None, "info", {"event": event, **fields})
    _log(CodexHandler(folder, "oh"), lambda lg: [lg.info(line) for line in lines])
    for line in lines:
        processor(None, "info", {"event": line, "session_id": "op"})
    out = {}
    for name in ("h", "p"):
        records = _records(folder / f"{name}.ndjson")
        caught = sum(
            c.secret not in json.dumps(r, ensure_ascii=False)
            for c, r in zip(cases, records, strict=True)
        )
        out[f"secrets, {'handler' if name == 'h' else 'processor'}"] = (caught, len(cases))
    for name in ("oh", "op"):
        records = _records(folder / f"{name}.ndjson")
        damaged = sum(r["message"] != line for line, r in zip(lines, records, strict=True))
        out[f"ordinary, {'handler' if name == 'oh' else 'processor'}"] = (damaged, len(lines))
    return out


def detect_secrets_rates(folder: Path) -> dict[str, tuple[tuple[int, int], tuple[int, int]]] | None:
    """``{mode: ((caught, cases), (flagged, lines))}`` for detect-secrets, or None.

    A case counts as caught, and an ordinary line as flagged, when
    detect-secrets reports anything on it (some plugins report only a prefix,
    so the values are not compared).
    """
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    cases, lines = secret_cases(), ordinary_lines()
    _log(CodexHandler(folder, "raw", redact=False), lambda lg: [_log_case(lg, c) for c in cases])
    _log(CodexHandler(folder, "rawo", redact=False), lambda lg: [lg.info(line) for line in lines])
    found: dict[str, dict[int, list[str]]] = {}  # line number: the values found there
    for name in ("raw", "rawo"):
        collection = SecretsCollection()
        with default_settings():
            collection.scan_file(str(folder / f"{name}.ndjson"))
        per_line: dict[int, list[str]] = {}
        for _, secret in collection:
            per_line.setdefault(secret.line_number, []).append(secret.secret_value or "")
        found[name] = per_line
    caught = sum(1 for number in range(1, len(cases) + 1) if found["raw"].get(number))
    flagged = sum(1 for number in range(1, len(lines) + 1) if found["rawo"].get(number))
    out = {"file": ((caught, len(cases)), (flagged, len(lines)))}
    # The same plugins on each logged text alone (detect-secrets' ad hoc
    # string scan, as `detect-secrets scan --string` does): no file filters.
    from detect_secrets.core.scan import scan_line

    def hits(text: str) -> bool:
        with default_settings():
            return any(True for _ in scan_line(text))

    texts = [c.text if c.text is not None else str(c.template or c.fields) for c in cases]
    out["string"] = (
        (sum(hits(t) for t in texts), len(cases)),
        (sum(hits(line) for line in lines), len(lines)),
    )
    return out


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mine = ours(Path(tmp))
        took = time.perf_counter() - start
        theirs = detect_secrets_rates(Path(tmp))
    rows = [
        "Redaction corpora (tests/redaction_corpus.py): secrets caught, ordinary lines changed",
        "",
        "| scanner | secrets caught | recall | ordinary lines changed | false positives |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for way in ("handler", "processor"):
        caught, total = mine[f"secrets, {way}"]
        damaged, lines = mine[f"ordinary, {way}"]
        rows.append(
            f"| codex_logging ({way}) | {caught}/{total} | {caught / total:.1%} | {damaged}/{lines} | {damaged / lines:.1%} |"
        )
    if theirs is None:
        rows.append("| detect-secrets | not installed | | | |")
    else:
        for mode, label in (
            ("file", "file scan of the NDJSON"),
            ("string", "each text alone, --string"),
        ):
            (caught, total), (flagged, lines) = theirs[mode]
            rows.append(
                f"| detect-secrets ({label}) | {caught}/{total} | {caught / total:.1%} | {flagged}/{lines} | {flagged / lines:.1%} |"
            )
    rows.append(f"\n(ours, both corpora both ways: {took:.2f} s)")
    return "\n".join(rows)


if __name__ == "__main__":
    print(main())
