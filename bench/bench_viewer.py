"""The web viewer: the sessions page at 10,000 sessions, a session's first screen at 1,000,000 events.

One mirror holds SESSIONS small sessions (a start, two messages, an end) and
one session of EVENTS events from 4 processes, with a warning every 1,000
events and an error every 10,000 (so the timeline has alerts to mark). A real
``codex-logs serve`` subprocess answers; each time is the median wall time of
one HTTP request over loopback, the first (cold) one left out:

- the sessions page (the first 100 of them, newest first) and a search;
- the big session's page, the first page of its transcript (200 events), a
  page from its middle, the timeline, a filtered first page (``level=error``);
- with headless Chromium (when selenium and chromium are installed): from the
  start of navigation to the first transcript rows in the page, and to the
  timeline drawn, as the page's own clock marks them (``performance.mark``).

Targets: the sessions page < 200 ms; a session's first screen (the page,
which carries the first 200 events) < 300 ms. ``BENCH_VIEWER_EVENTS`` and
``BENCH_VIEWER_SESSIONS`` set smaller sizes for a quick run.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codex_logging._sqlite.db import atomic, connect, rebuild_summary

EVENTS = int(os.environ.get("BENCH_VIEWER_EVENTS", "1000000"))
SESSIONS = int(os.environ.get("BENCH_VIEWER_SESSIONS", "10000"))
REPEATS = int(os.environ.get("BENCH_VIEWER_REPEATS", "7"))
BIN = Path(sys.executable).parent
T0 = 1_795_000_000.0


def build(db: Path) -> None:
    """Write the rows straight into a new mirror, then its summary, as bench_query does."""
    with contextlib.closing(connect(str(db))) as conn, atomic(conn, str(db)):
        rows = []
        for s in range(SESSIONS):
            sid, ts = f"run-{s:05d}", T0 - 86_400 + s * 7
            for i, (kind, level) in enumerate(
                (("start", "INFO"), ("message", "INFO"), ("message", "WARNING"), ("end", "INFO"))
            ):
                data = f'{{"pid": {1000 + s % 50}, "status": "{"error" if s % 9 == 0 else "ok"}"}}'
                rows.append((sid, i + 1, ts + i, kind, level, "agent", None, f"step {i}", data))
        conn.executemany("INSERT INTO session_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        rows = []
        for i in range(EVENTS):
            pid = 4000 + i % 4
            kind = "start" if i < 4 else "end" if i >= EVENTS - 4 else "message"
            level = "ERROR" if i % 10_000 == 9 else "WARNING" if i % 1000 == 7 else "INFO"
            data = (
                f'{{"ts": {T0 + i * 0.01}, "message": "event {i}", "pid": {pid},'
                f' "role": "tool", "step": {i}, "status": "ok"}}'
            )
            rows.append(("big", i + 1, T0 + i * 0.01, kind, level, "agent.tool", "tool",
                         f"event {i}", data))  # fmt: skip
            if len(rows) == 100_000:
                conn.executemany(
                    "INSERT INTO session_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                rows = []
        conn.executemany("INSERT INTO session_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        rebuild_summary(conn)


def timed(port: int, path: str) -> tuple[float, int]:
    """Median seconds of GET ``path`` (the first, cold request left out) and its size."""
    times, size = [], 0
    for _ in range(REPEATS + 1):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        times.append(time.perf_counter() - start)
        conn.close()
        assert response.status == 200, (path, response.status, body[:200])
        size = len(body)
    return statistics.median(times[1:]), size


def in_browser(url: str) -> tuple[float, float] | None:
    """Seconds from navigation to the first transcript rows, and to the timeline, in Chromium."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        return None
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        return None
    profile = tempfile.mkdtemp(prefix="codex-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_bin))
    try:
        rows, lanes = [], []
        mark = "return performance.getEntriesByName(arguments[0]).map(e => e.startTime)"
        for _ in range(REPEATS + 1):
            driver.get("about:blank")
            driver.get(url)
            for name, found in (("codex-first-rows", rows), ("codex-timeline", lanes)):
                deadline = time.monotonic() + 60
                while not (seen := driver.execute_script(mark, name)):
                    assert time.monotonic() < deadline, name
                    time.sleep(0.01)
                found.append(seen[0] / 1000)  # ms from the start of navigation
            assert driver.find_elements(By.CSS_SELECTOR, "#events .ev")
        return statistics.median(rows[1:]), statistics.median(lanes[1:])
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> str:
    """Build the mirror, serve it, and return the Markdown table."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "viewer.db"
        start = time.perf_counter()
        build(db)
        built = time.perf_counter() - start
        server = subprocess.Popen(
            [str(BIN / "codex-logs"), "serve", "--db", str(db), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[2]
            port = int(url.rsplit(":", 1)[1].strip("/"))
            middle = EVENTS // 2
            cases = [
                (f"sessions page ({SESSIONS + 1:,} sessions, first 100)", "/", 200),
                ("sessions page, search 'run-09' and status error", "/?q=run-09&status=error", 200),
                (f"session page ({EVENTS:,} events), its first 200 events in it", "/s/big", 300),
                ("the first transcript page alone (JSON)", "/api/s/big/events?limit=200", None),
                ("a transcript page from its middle", f"/api/s/big/events?after={middle}", None),
                ("the first page with level=error", "/api/s/big/events?level=error", None),
                ("its timeline (120 slices, 4 processes)", "/api/s/big/timeline", None),
            ]
            title = (
                f"Web viewer: {EVENTS:,} events in one session, {SESSIONS:,} other sessions"
                f" (mirror built in {built:.0f} s); median of {REPEATS} requests, first left out."
            )
            lines = [
                title,
                "",
                "| request | median | size | target |",
                "| --- | ---: | ---: | --- |",
            ]
            for name, path, target in cases:
                seconds, size = timed(port, path)
                goal = f"< {target} ms" if target else ""
                lines.append(
                    f"| {name} | {seconds * 1000:.1f} ms | {size / 1024:.1f} KiB | {goal} |"
                )
            drawn = in_browser(url + "s/big")
            if drawn is not None:
                lines.append(
                    f"| in Chromium: navigation to the first rows drawn | {drawn[0] * 1000:.0f} ms | |"
                    " < 300 ms |"
                )
                lines.append(
                    f"| in Chromium: navigation to the timeline drawn | {drawn[1] * 1000:.0f} ms | | |"
                )
        finally:
            server.terminate()
            server.wait(10)
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
