"""The README's example works when pasted into a file and run, and every docs page opens with an example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_readme_example_runs_and_queries(tmp_path: Path) -> None:
    """The README's Python block writes a session that codex-logs query then reads back."""
    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)[0]
    (tmp_path / "example.py").write_text(code)
    subprocess.run([sys.executable, "example.py"], cwd=tmp_path, check=True, timeout=60)
    out = subprocess.run(
        [str(BIN / "codex-logs"), "query", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["kind"], e["message"]) for e in events] == [
        ("start", "session start"),
        ("message", "step A"),
        ("end", "session end"),
    ]
    assert events[1]["role"] == "tool"


def test_every_docs_page_opens_with_an_example() -> None:
    """Each page under docs/ has a code block before its first second-level heading."""
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        head = text.split("\n## ", 1)[0]
        assert "```" in head, page.name


def test_every_test_named_in_guarantees_exists() -> None:
    """Each promise in docs/guarantees.md names tests that are really there."""
    import importlib

    named = re.findall(
        r"`(test_\w+\.py)((?:::\w+)+)`", (ROOT / "docs" / "guarantees.md").read_text()
    )
    assert len(named) > 20
    for module_file, dotted in named:
        target: object = importlib.import_module(f"tests.{module_file[:-3]}")
        for part in dotted.strip(":").split("::"):
            target = getattr(target, part, None)
            assert target is not None, f"{module_file}{dotted} does not exist"


def test_every_subcommand_has_help_with_an_example_and_is_in_cli_docs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each codex-logs subcommand has help ending in an example and a section in docs/cli.md."""
    from codex_logging._cli.main import import_main, main, query_main

    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.split()[0] for line in listing.splitlines()]
    assert commands == ["sync", "query", "show", "sessions", "prune", "migrate", "serve", "export"]
    docs = (ROOT / "docs" / "cli.md").read_text()
    for command in commands:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert _last_paragraph(capsys.readouterr().out).startswith(f"example: codex-logs {command}")
        assert f"## `codex-logs {command}`" in docs
    for entry, name in (
        (import_main, "codex-import-ndjson"),
        (query_main, "python -m codex_logging.query_logs"),
    ):
        with pytest.raises(SystemExit):
            entry(["--help"])
        assert _last_paragraph(capsys.readouterr().out).startswith(f"example: {name}")
        assert f"## `{name}`" in docs


def _last_paragraph(text: str) -> str:
    """The help's last paragraph with argparse's line wrapping undone."""
    return " ".join(text.strip().split("\n\n")[-1].split())


def _section_code(page: str, heading: str) -> str:
    """The Python blocks of one second-level section of a docs page, in order."""
    text = (ROOT / "docs" / page).read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.DOTALL))


#: Each host's section of docs/configuration.md -> (session, what its records say).
HOST_SECTIONS = {
    "`CodexHandler` (stdlib `logging`)": (
        "run-42",
        [
            {"message": "step 1 of 3", "role": "tool", "tokens": 812},
            {"message": "a level of the program's own", "level": "Level 25", "levelno": 25},
            {"message": "step failed", "level": "ERROR"},
        ],
    ),
    "structlog": (
        "docs",
        [
            {"message": "step B", "role": "assistant", "tokens": 812},
            {"message": "step failed", "level": "ERROR"},
        ],
    ),
    "loguru": (
        "docs",
        [
            {"message": "step B", "level": "SUCCESS", "levelno": 25, "role": "tool"},
            {"message": "step failed", "level": "ERROR"},
            {"message": "order placed", "customer_ref": "[REDACTED]"},
        ],
    ),
}


@pytest.mark.parametrize("heading", list(HOST_SECTIONS))
def test_each_host_section_of_the_configuration_page_runs(tmp_path: Path, heading: str) -> None:
    """The snippets of each host's section run as a program and write what the page says."""
    if heading == "loguru":
        pytest.importorskip("loguru")
    session, expected = HOST_SECTIONS[heading]
    (tmp_path / "example.py").write_text(_section_code("configuration.md", heading))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    env["CODEX_SESSION_ID"] = "docs"
    env["CODEX_SESSIONS_DIR"] = str(tmp_path / ".codex" / "sessions")
    env["CODEX_LOG_DB_PATH"] = str(tmp_path / ".codex" / "session_logs.db")
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "codex_logging:" not in done.stderr
    subprocess.run([str(BIN / "codex-logs"), "sync"], cwd=tmp_path, env=env, check=True, timeout=60)
    out = subprocess.run(
        [str(BIN / "codex-logs"), "query", "--json", "--session-id", session, "--kind", "message"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    written = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(written) == len(expected)
    for record, fields in zip(written, expected, strict=True):
        assert {key: record.get(key) for key in fields} == fields
    failed = next(r for r in written if r["message"] == "step failed")
    assert failed["exc"].endswith("ZeroDivisionError: division by zero")


def _section_blocks(page: str, heading: str) -> list[str]:
    """The Python blocks under one second-level heading of a docs page."""
    text = (ROOT / "docs" / page).read_text()
    body = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.DOTALL)


#: For each section of docs/configuration.md whose snippets run: the session
#: ids its snippet makes, each holding one record from a child process.
RUN_SECTIONS = {
    "asyncio": [f"job-{n}" for n in range(6)],
    "Subprocesses": [f"worker-{n}" for n in range(4)],
    "Process pools": ["pool-first", "pool-second"],
}


@pytest.mark.parametrize("heading", sorted(RUN_SECTIONS))
def test_configuration_snippets_run(heading: str, tmp_path: Path) -> None:
    """Each snippet of the section runs as a program; its sessions sync and hold the child's record."""
    (block,) = _section_blocks("configuration.md", heading)
    (tmp_path / "snippet.py").write_text(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    env["HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    subprocess.run([str(BIN / "codex-logs"), "sync"], cwd=tmp_path, env=env, check=True, timeout=60)
    for sid in RUN_SECTIONS[heading]:
        out = subprocess.run(
            [str(BIN / "codex-logs"), "query", "--session-id", sid, "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        events = [json.loads(line) for line in out.stdout.splitlines()]
        assert events[0]["kind"] == "start"
        assert events[-1]["kind"] == "end"
        assert [e["message"] for e in events].count("child step") == 1
        assert len({e["pid"] for e in events}) == 2  # the parent's and its child's
