"""The web viewer (``codex-logs serve``) in a real browser, against a real server subprocess."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._cli.output import local_time
from tests.browser import BIN, browser, serve
from tests.conftest import synced_text
from tests.test_read import NOW, scope, write

__all__ = ["browser", "serve"]  # fixtures, imported for their use here

SCRIPT = "<script>document.title='owned'</script><b>bold?</b>"
TAG = "<img src=x onerror=\"document.title='owned'\">"
TRACEBACK = (
    "Traceback (most recent call last):\n  File \"agent.py\", line 3, in run\nKeyError: 'watermark'"
)


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """run-1: two processes, a warning, an error with a traceback, a logged tag; run-2 and run-3."""
    folder = tmp_path / "sessions"
    first, second = (
        scope(NOW, 11, "error", error_type="KeyError", error="'watermark'"),
        scope(NOW + 1, 12),
    )
    write(folder, "run-1", [
        first[0], second[0],
        {"ts": NOW + 1.5, "level": "INFO", "logger": "agent", "message": "Why does it fail?", "pid": 11, "role": "user"},
        {"ts": NOW + 2, "level": "WARNING", "logger": "tool.shell", "message": "retrying: database is locked", "pid": 12, "role": "tool", "attempt": 2, "note": TAG, "__proto__": "a field like any other"},
        {"ts": NOW + 3, "level": "INFO", "logger": "agent", "message": SCRIPT, "pid": 11, "role": "assistant"},
        {"ts": NOW + 4, "level": "ERROR", "logger": "agent", "message": "the patch does not apply", "pid": 11, "role": "tool", "exc": TRACEBACK},
        first[1], second[1],
    ])  # fmt: skip
    write(folder, "run-2", scope(NOW + 100, 21))
    write(
        folder, "run-3", [{"ts": NOW + 200, "message": "still going", "pid": 31, "level": "INFO"}]
    )
    db = tmp_path / "m.db"
    sync_to_sqlite(db, folder)
    return db


def wait_for(driver: Any, css: str, count: int = 1, timeout: float = 10) -> list[Any]:
    """The elements matching ``css`` once there are at least ``count`` of them."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{css}: {len(found)} of {count} after {timeout} s"
            return list(found)
        time.sleep(0.05)


def texts(elements: list[Any]) -> list[str]:
    return [e.text for e in elements]


def get(
    port: int, path: str, host: str | None = None, method: str = "GET"
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers={"Host": host or f"127.0.0.1:{port}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_sessions_page_lists_the_sessions_newest_first_and_searches(
    browser: Any, serve: Any, mirror: Path
) -> None:
    server = serve(mirror)
    browser.get(server.url)
    rows = wait_for(browser, "#sessions tbody tr", 3)
    assert [r.find_element("css selector", ".sid").text for r in rows] == [
        "run-3",
        "run-2",
        "run-1",
    ]
    assert texts(wait_for(browser, "#sessions .pill", 3)) == ["running", "ok", "error"]
    first = rows[2].text
    assert "2" in first  # processes
    box = browser.find_element("css selector", "input[name=q]")
    box.send_keys("run-2\n")
    wait_for(browser, "#sessions tbody tr")
    assert texts(browser.find_elements("css selector", "#sessions .sid")) == ["run-2"]


def test_session_page_shows_the_timeline_and_the_transcript_with_text_as_text(
    browser: Any, serve: Any, mirror: Path
) -> None:
    server = serve(mirror)
    browser.get(server.url + "s/run-1")
    lanes = wait_for(browser, "#timeline svg text.label", 3)
    assert texts(lanes) == ["events", "pid 11", "pid 12"]
    assert len(browser.find_elements("css selector", "#timeline .span-error")) == 1
    assert len(browser.find_elements("css selector", "#timeline .span-ok")) == 1
    assert (
        len(browser.find_elements("css selector", "#timeline .mark-error")) == 2
    )  # error row, failed end
    assert len(browser.find_elements("css selector", "#timeline .mark-warning")) == 1
    events = wait_for(browser, "#events .ev", 8)
    assert "session start" in events[0].text
    assert "retrying: database is locked" in events[3].text
    assert "attempt=2" in events[3].text
    assert f"note={TAG}" in events[3].text  # a field's value is text too
    assert "__proto__=a field like any other" in events[3].text  # not the object's prototype
    assert browser.find_elements("css selector", "#events img") == []
    # A logged tag is text: shown as typed, never run or parsed.
    assert SCRIPT in events[4].text
    assert browser.title == "run-1 · codex-logs"
    assert browser.find_elements("css selector", "#events .ev .msg b") == []
    # The traceback is folded: its last line shows, the rest opens on click.
    details = events[5].find_element("css selector", "details")
    assert details.get_attribute("open") is None
    assert details.find_element("css selector", "summary").text == "KeyError: 'watermark'"
    assert not details.find_element("css selector", "pre").is_displayed()
    details.find_element("css selector", "summary").click()
    assert details.find_element("css selector", "pre").is_displayed()
    assert "agent.py" in details.find_element("css selector", "pre").text
    assert "session end (error, KeyError: 'watermark', 5.00 s)" in events[6].text
    # Each event has a link of its own, which opens the page at that event.
    link = events[5].find_element("css selector", "a.t").get_attribute("href")
    assert link.endswith("?after=5#e-6")
    browser.get(link)
    target = wait_for(browser, "#events .ev.target")
    assert target[0].get_attribute("id") == "e-6"
    assert "from the start" in browser.find_element("css selector", "#from-start").text


def test_filters_narrow_the_transcript(browser: Any, serve: Any, mirror: Path) -> None:
    server = serve(mirror)
    browser.get(server.url + "s/run-1")
    wait_for(browser, "#events .ev", 8)
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("css selector", "select[name=level]")).select_by_value("warning")
    browser.find_element("css selector", "#filters button").click()
    wait_for(browser, "#live")
    rows = wait_for(browser, "#events .ev", 3)
    time.sleep(0.3)
    rows = browser.find_elements("css selector", "#events .ev")
    assert [r.get_attribute("id") for r in rows] == ["e-4", "e-6", "e-7"]
    assert "level=warning" in browser.current_url
    browser.get(server.url + "s/run-1?role=user")
    rows = wait_for(browser, "#events .ev")
    time.sleep(0.3)
    assert texts(browser.find_elements("css selector", "#events .ev .msg")) == ["Why does it fail?"]
    browser.get(server.url + "s/run-1?logger=tool.shell&q=LOCKED")
    wait_for(browser, "#events .ev")
    time.sleep(0.3)
    assert [
        r.get_attribute("id") for r in browser.find_elements("css selector", "#events .ev")
    ] == ["e-4"]
    # a field: typed into the form as --where takes it
    browser.get(server.url + "s/run-1")
    wait_for(browser, "#events .ev", 8)
    browser.find_element("css selector", "input[name=where]").send_keys("attempt>1")
    browser.find_element("css selector", "#filters button").click()
    wait_for(browser, "#live")
    time.sleep(0.3)
    assert "where=attempt%3E1" in browser.current_url
    assert [
        r.get_attribute("id") for r in browser.find_elements("css selector", "#events .ev")
    ] == ["e-4"]


def test_a_newly_synced_row_appears_without_reload(
    browser: Any, serve: Any, mirror: Path, tmp_path: Path
) -> None:
    server = serve(mirror)
    browser.get(server.url + "s/run-3")
    wait_for(browser, "#events .ev")
    wait_for(browser, "#live")
    browser.execute_script("document.body.dataset.marker = 'same page'")
    write(
        tmp_path / "sessions",
        "run-3",
        [{"ts": NOW + 201, "message": "a new line", "pid": 31, "level": "WARNING"}],
    )
    sync_to_sqlite(mirror, tmp_path / "sessions")
    rows = wait_for(browser, "#events .ev", 2, timeout=10)
    assert "a new line" in rows[1].text
    assert browser.execute_script("return document.body.dataset.marker") == "same page"


def test_the_guard_refuses_other_hosts_and_writes_and_sends_a_strict_policy(
    serve: Any, mirror: Path
) -> None:
    server = serve(mirror)
    ok = get(server.port, "/")
    assert ok.status == 200
    policy = ok.getheader("Content-Security-Policy")
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert ok.getheader("X-Content-Type-Options") == "nosniff"
    assert ok.getheader("Cache-Control") == "no-store"
    assert (
        get(server.port, "/static/viewer.css").getheader("Cache-Control").endswith("max-age=86400")
    )
    for host in (f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert get(server.port, "/", host).status == 200
    # DNS rebinding: a page of another name that resolves here is refused.
    for host in (
        "evil.example",
        f"evil.example:{server.port}",
        "127.0.0.1",
        f"127.0.0.1:{server.port + 1}",
    ):
        refused = get(server.port, "/", host)
        assert refused.status == 421, host
        assert "default-src 'self'" in refused.getheader("Content-Security-Policy")
    posted = get(server.port, "/", method="POST")
    assert (posted.status, posted.getheader("Allow")) == (405, "GET, HEAD")
    assert get(server.port, "/static/session.js").status == 200
    assert get(server.port, "/s/nope").status == 404
    assert get(server.port, "/s/bad%20id").status == 400
    assert get(server.port, "/api/s/run-1/events?after=zz").status == 400


def test_on_every_address_any_ip_address_is_its_own(serve: Any, mirror: Path) -> None:
    """--host 0.0.0.0: reached at the machine's IP address, not refused; a name still is."""
    server = serve(mirror, "--host", "0.0.0.0")
    port = server.port
    for host in (f"192.0.2.7:{port}", f"10.1.2.3:{port}", f"[2001:db8::1]:{port}"):
        assert get(port, "/", host).status == 200, host
    for host in (
        f"evil.example:{port}", f"192.0.2.7:{port + 1}", "192.0.2.7", f"[x]:{port}", f"*:{port}",
    ):  # fmt: skip
        assert get(port, "/", host).status == 421, host


def test_the_event_pages_follow_their_cursor(serve: Any, mirror: Path) -> None:
    server = serve(mirror)

    def page(query: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/api/s/run-1/events?{query}")
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body

    first = page("limit=3")
    assert [e["seq"] for e in first["events"]] == [1, 2, 3]
    assert first["more"] is True
    rest = page(f"limit=10&after={first['cursor']}")
    assert [e["seq"] for e in rest["events"]] == [4, 5, 6, 7, 8]
    assert rest["more"] is False
    assert page(f"at={NOW + 2.5}&limit=1")["events"][0]["seq"] == 5
    assert page(f"at={NOW + 999}")["events"] == []
    assert page("at=nan")["error"].startswith("invalid time")


def test_serve_without_a_database_or_the_extra_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "codex-logs"), "serve", "--db", str(tmp_path / "none.db"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("codex-logs serve: error: no database at")
    blocked = "import sys; sys.modules['starlette'] = None\nfrom codex_logging._cli.main import main\nsys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", blocked, "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "pip install '.[viewer]' in a checkout" in out.stderr
    out = subprocess.run(
        [str(BIN / "codex-logs"), "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "expected a port from 0 to 65535" in out.stderr


def test_only_loopback_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    from codex_logging._viewer.server import is_loopback, warn_if_public

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "example.org"))
    assert warn_if_public("127.0.0.1", 8700, sys.stderr) is False
    assert capsys.readouterr().err == ""
    assert warn_if_public("0.0.0.0", 8700, sys.stderr) is True
    assert capsys.readouterr().err.startswith("warning: serving on 0.0.0.0")


def test_postgres_mirror_in_the_browser(
    browser: Any, serve: Any, pg_url: str, tmp_path: Path, mirror: Path
) -> None:
    from codex_logging import sync_to_postgres

    sync_to_postgres(pg_url, tmp_path / "sessions")
    server = serve(pg_url)
    browser.get(server.url)
    rows = wait_for(browser, "#sessions tbody tr", 3)
    assert [r.find_element("css selector", ".sid").text for r in rows] == [
        "run-3",
        "run-2",
        "run-1",
    ]
    browser.get(server.url + "s/run-1")
    assert texts(wait_for(browser, "#timeline svg text.label", 3)) == ["events", "pid 11", "pid 12"]
    events = wait_for(browser, "#events .ev", 8)
    assert SCRIPT in events[4].text
    assert "session end (error" in events[6].text
    browser.get(server.url + "s/run-1?level=error")
    wait_for(browser, "#events .ev", 2)
    time.sleep(0.3)
    assert len(browser.find_elements("css selector", "#events .ev")) == 2
    # The next page and the live poll go on from the last row's cursor.
    write(
        tmp_path / "sessions",
        "run-1",
        [{"ts": NOW + 50, "message": "late", "pid": 12, "level": "ERROR"}],
    )
    sync_to_postgres(pg_url, tmp_path / "sessions")
    rows = wait_for(browser, "#events .ev", 3)
    assert "late" in rows[2].text


def test_a_click_on_the_timeline_opens_the_transcript_at_that_moment(
    browser: Any, serve: Any, mirror: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    server = serve(mirror)
    browser.get(server.url + "s/run-1?role=tool")
    timeline = wait_for(browser, "#timeline svg")[0]
    width = timeline.size["width"]
    # The plot spans NOW to NOW + 6 right of the lane labels: click about NOW + 3.
    labels = 96 * width / float(timeline.get_dom_attribute("viewBox").split()[2])
    x = labels + (width - labels) * 0.5 - width / 2
    ActionChains(browser).move_to_element_with_offset(timeline, x, 0).click().perform()
    wait_for(browser, "#from-start")
    assert "at=" in browser.current_url
    assert "role=tool" in browser.current_url  # the filters are kept
    rows = wait_for(browser, "#events .ev")
    time.sleep(0.3)
    # The tool's rows from that moment on: not the warning at NOW + 2, the error at NOW + 4.
    rows = browser.find_elements("css selector", "#events .ev")
    assert [r.get_attribute("id") for r in rows] == ["e-6"]


def test_values_utf8_or_json_cannot_hold_go_out_all_the_same(serve: Any, tmp_path: Path) -> None:
    """An escaped lone surrogate (no UTF-8 for it) and a NaN pid (no JSON for it), from another tool."""
    db = synced_text(
        tmp_path,
        '{"ts":1796600005.5,"message":"lone","x":"\\udfff","y":["\\ud800"]}\n'
        '{"ts":1796600006.5,"message":"nan","pid":NaN,"v":Infinity}\n',
    )
    server = serve(db)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/api/s/s/events")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body
    lone, nan = json.loads(body)["events"]
    assert lone["fields"] == {"x": "\udfff", "y": '["\ud800"]'}
    assert (nan["pid"], nan["fields"]) == (None, {"v": "Infinity"})


def test_times_are_rounded_as_the_command_line_rounds_them(
    browser: Any, serve: Any, tmp_path: Path
) -> None:
    """Times show the same in the viewer as in query and show: 0.4 ms before a second, and a time
    whose product by 1000 rounds the other way (.4385 is .438 by its exact value)."""
    times = [1795442580.9996, 1795442586.4385]
    db = synced_text(
        tmp_path,
        "".join(f'{{"ts":{ts},"kind":"message","session_id":"s","pid":7}}\n' for ts in times),
    )
    server = serve(db)
    browser.get(server.url + "s/s")
    rows = wait_for(browser, "#events .ev", 2)
    shown = [local_time(ts) for ts in times]
    assert [s[-6:] for s in shown] == ["01.000", "06.438"]
    assert [r.find_element("css selector", ".t").text for r in rows] == [s[11:] for s in shown]


def test_times_no_date_can_hold_are_shown_as_numbers(
    browser: Any, serve: Any, tmp_path: Path
) -> None:
    """Another tool's ``ts`` past any date (1e300): the pages show the number, never NaN or a 500."""
    db = synced_text(
        tmp_path,
        '{"ts":1e300,"kind":"start","session_id":"s","pid":7}\n'
        '{"ts":1e300,"message":"far","pid":7}\n',
    )
    server = serve(db)
    assert get(server.port, "/").status == 200
    assert get(server.port, "/s/s").status == 200
    browser.get(server.url + "s/s")
    rows = wait_for(browser, "#events .ev", 2)
    assert [r.find_element("css selector", ".t").text for r in rows] == ["1e+300"] * 2
    assert "1e+300 (link" in rows[0].find_element("css selector", ".t").get_attribute("title")
    assert "NaN" not in browser.find_element("css selector", "body").text
