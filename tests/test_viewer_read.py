"""The reads behind the web viewer: sessions pages, event pages after a cursor, the timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._errors import DatabaseError, InvalidFilterError, UnknownSessionError
from codex_logging._mirror.filters import Filters
from codex_logging._sqlite import read
from tests.test_read import NOW, mirror, scope, write

__all__ = ["mirror"]  # the fixture, imported for its use here


def test_sessions_page_newest_first_with_search_status_and_paging(mirror: Path) -> None:
    count, rows = read.sessions_page(mirror)
    assert count == 2
    assert [r["session_id"] for r in rows] == ["b", "a"]
    assert rows[1]["status"] == "error"
    assert rows[0]["status"] is None
    assert read.sessions_page(mirror, search="A")[1][0]["session_id"] == "a"
    assert read.sessions_page(mirror, search="%")[0] == 0  # LIKE wildcards are text
    assert [r["session_id"] for r in read.sessions_page(mirror, status="running")[1]] == ["b"]
    assert [r["session_id"] for r in read.sessions_page(mirror, status="error")[1]] == ["a"]
    assert read.sessions_page(mirror, status="ok")[0] == 0
    count, rows = read.sessions_page(mirror, offset=1, limit=1)
    assert (count, [r["session_id"] for r in rows]) == (2, ["a"])
    with pytest.raises(InvalidFilterError, match="unknown status"):
        read.sessions_page(mirror, status="bogus")


def test_events_page_follows_seq_after_the_cursor_with_filters(mirror: Path) -> None:
    first, following = read.events_page(mirror, Filters(session_id="a"), limit=3)
    assert ([e["seq"] for e in first], following) == ([1, 2, 3], 3)
    rest, following = read.events_page(mirror, Filters(session_id="a"), after=3, limit=100)
    assert ([e["seq"] for e in rest], following) == ([4, 5, 6, 7], 7)
    assert read.events_page(mirror, Filters(session_id="a"), after=7) == ([], 7)
    warnings, following = read.events_page(mirror, Filters(session_id="a", min_level=30))
    assert [e["message"] for e in warnings] == ["Über careful", "broke", "session end"]
    assert following == 7  # the rows that did not match are not read again
    errors, _ = read.events_page(mirror, Filters(session_id="a", min_level=40))
    assert [e["seq"] for e in errors] == [3, 5]
    tool, _ = read.events_page(mirror, Filters(session_id="a", role="tool", grep="über"))
    assert [e["seq"] for e in tool] == [2]
    assert read.events_page(mirror, Filters(session_id="a", logger="nobody")) == ([], 7)
    with pytest.raises(UnknownSessionError):
        read.events_page(mirror, Filters(session_id="zzz"))


def test_events_page_sees_rows_synced_later(tmp_path: Path, mirror: Path) -> None:
    _rows, last = read.events_page(mirror, Filters(session_id="a"))
    write(tmp_path / "sessions", "a", [{"ts": NOW + 30, "message": "late", "pid": 12}])
    sync_to_sqlite(mirror, tmp_path / "sessions")
    new, _ = read.events_page(mirror, Filters(session_id="a"), after=last)
    assert [e["message"] for e in new] == ["late"]


def test_timeline_lanes_spans_alerts_and_bins(mirror: Path) -> None:
    shape = read.timeline(mirror, "a", bins=10)
    assert shape["start"] == NOW
    assert shape["end"] == NOW + 15
    assert sum(shape["bins"]) == 7
    assert shape["exact"] is True
    lanes = {p["pid"]: p for p in shape["processes"]}
    assert set(lanes) == {11, 12}
    assert lanes[11]["spans"] == [[NOW, NOW + 5, "error"]]
    assert lanes[12]["spans"] == [[NOW + 10, NOW + 15, "ok"]]
    assert [a[1] for a in lanes[11]["alerts"]] == ["WARNING", "ERROR", "ERROR"]
    assert sum(lanes[11]["bins"]) == 5
    with pytest.raises(UnknownSessionError):
        read.timeline(mirror, "zzz")


def test_timeline_of_a_large_session_counts_slices_without_pids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(read, "TIMELINE_EXACT_EVENTS", 3)
    folder = tmp_path / "s"
    write(
        folder,
        "big",
        [
            *scope(NOW, 1)[:1],
            *({"ts": NOW + i, "message": str(i), "pid": 1} for i in range(9)),
            scope(NOW, 1)[1],
        ],
    )
    sync_to_sqlite(tmp_path / "db", folder)
    shape = read.timeline(tmp_path / "db", "big", bins=4)
    assert shape["exact"] is False
    assert sum(shape["bins"]) == 11
    assert shape["processes"][0]["bins"] is None
    assert shape["processes"][0]["spans"] == [[NOW, NOW + 5, "ok"]]


def test_an_end_without_its_start_still_draws_a_span(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write(folder, "x", [{"ts": NOW, "message": "m", "pid": 3}, scope(NOW, 3)[1]])
    sync_to_sqlite(tmp_path / "db", folder)
    (lane,) = read.timeline(tmp_path / "db", "x")["processes"]
    assert lane["spans"] == [[NOW, NOW + 5, "ok"]]


def test_pages_need_the_mirror_tables(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE logs (ts, session, kind, message)")
    conn.close()
    with pytest.raises(DatabaseError, match="no session mirror"):
        read.sessions_page(db)
