"""The viewer's app called in-process over ASGI: error pages, bad parameters, odd rows, other scopes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from codex_logging import sync_to_sqlite
from codex_logging._cli.output import local_time
from codex_logging._viewer.app import create_app, duration, when
from codex_logging._viewer.backend import PostgresBackend, SqliteBackend, event_view
from tests.conftest import synced_text
from tests.test_prune import old_session

HOST = "127.0.0.1:8000"


def call(app: Any, path: str, query: str = "", kind: str = "http") -> list[dict[str, Any]]:
    """Run one request through the ASGI app; return the messages it sent."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", HOST.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def response(app: Any, path: str, query: str = "") -> tuple[int, str]:
    sent = call(app, path, query)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body.decode()


@pytest.fixture
def app(tmp_path: Path) -> Any:
    folder = tmp_path / "sessions"
    old_session(folder, "run-1")
    db = tmp_path / "m.db"
    sync_to_sqlite(db, folder)
    return create_app(SqliteBackend(str(db)), {HOST})


class TestPages:
    def test_an_unknown_page_is_the_404_page(self, app: Any) -> None:
        status, body = response(app, "/nope/deeper")
        assert status == 404
        assert "no such page" in body

    def test_a_bad_offset_is_the_first_page(self, app: Any) -> None:
        status, body = response(app, "/", "offset=abc")
        assert status == 200
        assert "run-1" in body

    def test_a_database_gone_is_a_503_page(self, app: Any, tmp_path: Path) -> None:
        (tmp_path / "m.db").unlink()
        status, body = response(app, "/")
        assert status == 503
        assert "no database at" in body

    def test_the_timeline_of_an_unknown_or_invalid_session(self, app: Any) -> None:
        status, body = response(app, "/api/s/nobody/timeline")
        assert status == 404
        assert "nobody" in json.loads(body)["error"]
        status, body = response(app, "/api/s/bad%20id/timeline")
        assert status == 400
        assert "invalid session id" in json.loads(body)["error"]

    def test_a_websocket_gets_nothing_and_lifespan_passes(self, app: Any) -> None:
        assert call(app, "/", kind="websocket") == []
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]


class TestOddParameters:
    """Numbers past 64 bits, other scripts' digits, a NUL, a search no id can hold: never a 500."""

    @pytest.mark.parametrize(
        ("path", "query", "status"),
        [
            ("/", "offset=9223372036854775808", 200),
            ("/", "offset=99999999999999999999999", 200),
            ("/", "offset=%D9%A3", 200),  # an Arabic-Indic three: not a count here
            ("/s/run-1", "after=99999999999999999999999", 400),
            ("/api/s/run-1/events", "after=9223372036854775808", 400),
            ("/api/s/run-1/events", "after=%D9%A3", 400),
            ("/api/s/run-1/events", "after=%20%201", 400),
            ("/api/s/run-1/events", "limit=99999999999999999999999", 200),
            ("/api/s/run-1/events", "q=%00", 400),
            ("/api/s/run-1/events", "where=tool%3D%00", 400),
            ("/", "q=" + "x" * 60000, 200),
            ("/", "q=%00", 200),
        ],
    )
    def test_answered_as_a_page_or_a_400(
        self, app: Any, path: str, query: str, status: int
    ) -> None:
        assert response(app, path, query)[0] == status

    def test_a_search_no_session_id_holds_lists_none(self, app: Any) -> None:
        _, body = response(app, "/", "q=run 1")
        assert "run-1" not in body

    def test_a_moment_past_the_last_event_follows_from_the_end(self, app: Any) -> None:
        """The page shows nothing yet and polls after the last event, not from the first."""
        status, body = response(app, "/api/s/run-1/events", "at=99999999999")
        page = json.loads(body)
        assert (status, page["events"], page["after"], page["cursor"]) == (200, [], "4", "4")


class TestFirstPage:
    def test_fields_keep_the_records_order(self, tmp_path: Path) -> None:
        """The page's first events show their fields as the later fetched ones do: record order."""
        db = synced_text(tmp_path, '{"ts":1796600000.5,"message":"m","zeta":1,"alpha":2}\n')
        app = create_app(SqliteBackend(str(db)), {HOST})
        status, body = response(app, "/s/s")
        embedded = body.split('<script type="application/json" id="first-page">', 1)[1]
        first = json.loads(embedded.split("</script>", 1)[0])
        assert (status, list(first["events"][0]["fields"])) == (200, ["zeta", "alpha"])
        _, fetched = response(app, "/api/s/s/events")
        assert list(json.loads(fetched)["events"][0]["fields"]) == ["zeta", "alpha"]


class TestFormatting:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(None, "-"), (float("inf"), "-"), (0.354, "0.35 s"), (12.34, "12.3 s"),
         (245, "4 min 05 s"), (7380, "2 h 03 min")],
    )  # fmt: skip
    def test_durations(self, seconds: float | None, text: str) -> None:
        assert duration(seconds) == text

    def test_no_time_is_a_dash(self) -> None:
        assert when(None) == "-"

    def test_a_time_is_rounded_to_the_millisecond_as_the_rows_show_it(self) -> None:
        """The page's start time agrees with its first row's (rounded, then cut to the second)."""
        ts = 1795442580.9996
        assert when(ts) == local_time(ts)[:19]
        assert when(ts).endswith(":01")
        assert when(1795442580.4385) == local_time(1795442580.4385)[:19]

    @pytest.mark.parametrize("data", ["{not json", "[1, 2]", None])
    def test_a_row_whose_data_is_not_an_object_shows_its_columns(self, data: str | None) -> None:
        row = {"seq": 3, "cursor": "c", "ts": 1.0, "kind": None, "level": "INFO", "logger": "a"}
        view = event_view({**row, "role": None, "message": "hi", "data": data})
        assert (view["anchor"], view["message"], view["pid"], view["exc"]) == (
            "e-3",
            "hi",
            None,
            None,
        )
        assert view["fields"] == {}


class TestPostgresCursor:
    @pytest.mark.parametrize("cursor", ["nonsense", "inf|src|1", "1.5|src|x"])
    def test_a_bad_cursor_is_a_400(self, cursor: str) -> None:
        # Refused while the cursor is read, before the server is reached.
        app = create_app(PostgresBackend("postgresql://nobody@/nothing?host=/nonexistent"), {HOST})
        status, body = response(app, "/api/s/run-1/events", f"after={cursor}")
        assert status == 400
        assert json.loads(body)["error"] == f"invalid cursor {cursor!r}"

    def test_the_cursor_at_a_moment_sorts_before_every_row_then(self) -> None:
        backend = PostgresBackend("postgresql://nobody@/nothing?host=/nonexistent")
        assert backend.cursor_at("run-1", 12.5) == "12.5||-1"
