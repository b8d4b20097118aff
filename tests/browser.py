"""Headless Chromium for the viewer's tests, through selenium (Debian's chromium + chromium-driver).

Where the browser, its driver or selenium is missing or the browser cannot
start, the tests that need it are skipped with the reason, except under CI
(``CI`` set), where that is a failure: ``make test`` installs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

BIN = Path(sys.executable).parent

#: The flags the browser runs with here: no sandbox (root in a container), no
#: network of its own (no QUIC, updates, sync or background fetches).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (make test installs it)")


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, one per test module, with a fresh profile."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium = _find("chromium", "chromium-browser")
    driver_bin = _find("chromedriver")
    if chromium is None or driver_bin is None:
        _unavailable(
            "no chromium and chromium-driver found (apt-get install chromium chromium-driver)"
        )
    profile = tempfile.mkdtemp(prefix="codex-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_bin))
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        _unavailable(f"chromium did not start: {exc.msg}")
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Server:
    """A running ``codex-logs serve`` subprocess and its URL."""

    def __init__(self, db: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "codex-logs"), "serve", "--db", db, "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            pytest.fail(f"serve did not start: {self.stderr}", pytrace=False)
        self.url = line.split()[2]
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))
        self.stderr = ""

    def stop(self) -> None:
        # Ctrl-C, as a person stops it: uvicorn shuts down, then re-raises
        # the signal; a SIGINT ends in KeyboardInterrupt and a normal exit,
        # so the process's coverage data is saved (a SIGTERM would kill it).
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _out, self.stderr = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _out, self.stderr = self.process.communicate()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start ``codex-logs serve --db DB --port 0``; stopped after the test."""
    started: list[Server] = []

    def start(db: str | Path, *extra: str) -> Server:
        server = Server(str(db), *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
