"""Screenshots of the web viewer's two pages, from demo data, into docs/.

Records sessions in a fresh folder as programs do (the demo of
``scripts/codex_end_to_end.py``, then a run whose worker fails with a
traceback and one with a warning), syncs them, starts ``codex-logs serve`` on
a free port, and has headless Chromium save ``docs/viewer-sessions.png`` and
``docs/viewer-session.png``. Needs the ``viewer`` and ``test`` extras and
Debian's ``chromium`` and ``chromium-driver``::

    python scripts/viewer_screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: One run of an agent: two processes, a warning, then a failing tool with its traceback.
FAILING_RUN = """
import logging, os, subprocess, sys, time
from codex_logging import CodexHandler, session_scope
logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
log = logging.getLogger("agent")
WORKER = '''
import logging, time
from codex_logging import CodexHandler, session_scope
logging.basicConfig(level=logging.INFO, handlers=[CodexHandler()])
log = logging.getLogger("tool.pytest")
with session_scope():
    for step in range(6):
        log.info("collected %d tests in tests/test_sync.py", 40 + step, extra={"role": "tool"})
        time.sleep(0.05)
    log.warning("retrying: database is locked", extra={"role": "tool", "attempt": 2})
    time.sleep(0.1)
    log.info("212 passed, 1 skipped", extra={"role": "tool", "duration_s": 8.4})
'''
with session_scope(meta={"task": "fix the flaky sync test", "user": "alice"}):
    log.info("Why does test_sync fail on CI?", extra={"role": "user"})
    log.info("Let me run the tests first.", extra={"role": "assistant"})
    subprocess.run([sys.executable, "-c", WORKER], check=True)
    log.info("<script>alert('a logged tag is text')</script>", extra={"role": "assistant"})
    for i in range(8):
        log.info("reading engine.py, part %d", i, extra={"role": "tool", "lines": 120})
        time.sleep(0.03)
    try:
        {}["watermark"]
    except KeyError:
        log.exception("the patch does not apply", extra={"role": "tool", "tool": "git"})
    if os.environ.get("FAIL"):
        raise RuntimeError("no tool call in 3 attempts")
"""


def record(folder: Path) -> None:
    """Record the demo sessions under ``folder/.codex``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CODEX_SESSION_ID", None)
    for _ in range(2):
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "codex_end_to_end.py")],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )
    subprocess.run([sys.executable, "-c", FAILING_RUN], cwd=folder, env=env, check=True)
    subprocess.run(
        [sys.executable, "-c", FAILING_RUN],
        cwd=folder,
        env={**env, "FAIL": "1"},
        check=False,
        capture_output=True,
    )
    subprocess.run([str(BIN / "codex-logs"), "sync"], cwd=folder, env=env, check=True)


def start_server(folder: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``codex-logs serve`` on a free port; return it and its URL."""
    server = subprocess.Popen(
        [str(BIN / "codex-logs"), "serve", "--port", "0"],
        cwd=folder,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    return server, line.split()[2]


def browser(width: int, height: int) -> object:
    """Return a headless Chromium through selenium, started as the tests start it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(prefix='codex-chromium-')}",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> int:
    """Record, serve, and save both screenshots."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.wait import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        record(folder)
        server, url = start_server(folder)
        driver = browser(1280, 760)
        try:
            driver.get(url)  # type: ignore[attr-defined]
            driver.save_screenshot(str(ROOT / "docs" / "viewer-sessions.png"))  # type: ignore[attr-defined]
            rows = driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr.status-error a")  # type: ignore[attr-defined]
            driver.get(rows[0].get_attribute("href"))  # type: ignore[attr-defined]
            wait = WebDriverWait(driver, 10)  # type: ignore[arg-type]
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#timeline svg")))
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".ev details")))
            driver.find_elements(By.CSS_SELECTOR, ".ev details summary")[0].click()  # type: ignore[attr-defined]
            time.sleep(0.3)
            driver.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
            driver.set_window_size(1280, 1330)  # type: ignore[attr-defined]
            time.sleep(0.5)
            driver.save_screenshot(str(ROOT / "docs" / "viewer-session.png"))  # type: ignore[attr-defined]
        finally:
            driver.quit()  # type: ignore[attr-defined]
            server.terminate()
            server.wait(10)
    print("wrote docs/viewer-sessions.png and docs/viewer-session.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
