"""The viewer's web application: two pages, two JSON reads, static files, one guard.

Starlette routes the requests and Jinja2 renders the pages with autoescaping
on, so every value from a record is text in the page; the transcript is drawn
by ``static/session.js`` with ``textContent``, never as markup. The guard in
front of every request refuses a ``Host`` header that is not this server's
(DNS rebinding) and anything but GET and HEAD, and adds a strict
Content-Security-Policy to every response (docs/viewer.md, "Safety").
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from codex_logging._errors import (
    CodexLoggingError,
    InvalidFilterError,
    InvalidSessionId,
    UnknownSessionError,
    hide_secrets,
)
from codex_logging._mirror.filters import (
    MAX_TAIL,
    Filters,
    check_level,
    finite_number,
    parse_where,
)
from codex_logging._settings import ID_CHARACTERS, validate_session_id
from codex_logging._viewer.backend import Backend, event_view

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE: Final = os.path.dirname(os.path.abspath(__file__))

#: Sent with every response: scripts, styles and requests from this origin only.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
NO_STORE: Final = (b"cache-control", b"no-store")
STATIC_CACHE: Final = (b"cache-control", b"private, max-age=86400")

#: Sessions per page of the sessions list; events per page of a transcript.
SESSIONS_PER_PAGE: Final = 100
EVENTS_PER_PAGE: Final = 200
MAX_EVENTS_PER_PAGE: Final = 1000

#: The minimum levels the transcript's level filter offers.
LEVEL_CHOICES: Final = ("debug", "info", "warning", "error", "critical")
ROLE_CHOICES: Final = ("user", "assistant", "system", "tool")


#: The bound host of a server on every address, as ``allowed_hosts`` writes it.
_EVERY_ADDRESS: Final = frozenset({"0.0.0.0", "[::]"})  # noqa: S104 - compared, not bound


class Guard:
    """Refuse unknown ``Host`` headers and methods other than GET/HEAD; add the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(host.lower() for host in allowed_hosts)
        #: The ports of a server on every address (``--host 0.0.0.0`` or
        #: ``::``, among its hosts): any IP address with that port is its
        #: own. An address is no name another site can point at this machine.
        self.any_address = {
            port
            for address, _, port in (host.rpartition(":") for host in self.allowed)
            if address in _EVERY_ADDRESS
        }

    def _answers_to(self, host: str) -> bool:
        if host in self.allowed:
            return True
        if not self.any_address:
            return False
        address, _, port = host.rpartition(":")
        if port not in self.any_address:
            return False
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()

        cache = STATIC_CACHE if scope["path"].startswith("/static/") else NO_STORE

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS, cache]
            await send(message)

        if not self._answers_to(host):
            text = "unknown Host header: this viewer answers only to its own address\n"
            await PlainResponse(text, 421)(scope, receive, secured)
            return
        if scope["method"] not in {"GET", "HEAD"}:
            refused = PlainResponse("read-only: GET and HEAD only\n", 405, {"allow": "GET, HEAD"})
            await refused(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


class _JSONResponse(Response):
    """JSON whose non-ASCII characters go as escapes.

    So a lone surrogate (an escaped ``\\udfff`` in an older hook's line, kept
    as it was read) goes out as that escape, where UTF-8 cannot encode it.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Return ``content`` as compact JSON bytes."""
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _asset_version() -> str:
    digest = hashlib.sha256()
    folder = os.path.join(HERE, "static")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


#: In the static files' addresses (``?v=``): a changed file is a new address,
#: so the browser may keep each one a day.
ASSET_VERSION: Final = _asset_version()


class PlainResponse(Response):
    """A short text answer."""

    media_type = "text/plain; charset=utf-8"


def allowed_hosts(host: str, port: int) -> set[str]:
    """Return the ``Host`` header values this server answers to: loopback names and ``host``.

    On every address (``0.0.0.0``, ``::``), :class:`Guard` also answers to any
    IP address of the machine.
    """
    names = {"localhost", "127.0.0.1", "[::1]"}
    names.add(f"[{host}]" if ":" in host else host)
    return {f"{name}:{port}" for name in names}


# -- formatting, for the templates --------------------------------------------


def when(ts: float | None) -> str:
    """Local date and time to the second, as the command line shows times.

    The time is rounded to the millisecond first, as the transcript's rows
    and the command line round it: a start at ``…:00.9996`` is ``…:01``.
    """
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(round(ts, 3)))
    except (OverflowError, ValueError, OSError):  # another tool's time past any date
        return str(ts)


def duration(seconds: float | None) -> str:
    """``0.35 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def number(value: int | None) -> str:
    """``1,000,000``; ``-`` for None."""
    return "-" if value is None else f"{int(value):,}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
        autoescape=True,  # every {{ value }} is escaped, whatever the template's name
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(when=when, duration=duration, number=number)
    # The first page's events keep their fields in the record's order, as the
    # events the page fetches later do (tojson sorts keys by default).
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


# -- the application ----------------------------------------------------------


class Viewer:
    """The pages and JSON reads of one mirror."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.env = _environment()

    def page(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            db_name=self.backend.name, assets=ASSET_VERSION, **context
        )
        return HTMLResponse(html, code)

    def failure(self, exc: CodexLoggingError, *, json: bool) -> Response:
        code = 503
        if isinstance(exc, UnknownSessionError):
            code = 404
        elif isinstance(exc, (InvalidFilterError, InvalidSessionId)):
            code = 400
        text = hide_secrets(str(exc), getattr(self.backend, "url", None))
        if json:
            return _JSONResponse({"error": text}, code)
        return self.page("error.html", code, message=text, status=code)

    def sessions(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip() or None
        status = request.query_params.get("status") or None
        offset = _whole(request.query_params.get("offset"), 0)
        try:
            rows: list[dict[str, Any]] = []
            if q is not None and _ID_PART.fullmatch(q) is None:
                total = 0  # no session id holds it (nor is it a pattern to build)
            else:
                total, rows = self.backend.sessions(q, status, offset, SESSIONS_PER_PAGE)
        except CodexLoggingError as exc:
            return self.failure(exc, json=False)
        return self.page(
            "sessions.html",
            rows=rows,
            total=total,
            q=q or "",
            status=status or "",
            offset=offset,
            per_page=SESSIONS_PER_PAGE,
        )

    def session(self, request: Request) -> Response:
        sid = request.path_params["session_id"]
        params = request.query_params
        try:
            validate_session_id(sid)
            summary = self.backend.session(sid)
            # The first page of the transcript comes with the page: one round
            # trip less before the first screen.
            first = self.first_page(sid, params, EVENTS_PER_PAGE)
        except CodexLoggingError as exc:
            return self.failure(exc, json=False)
        return self.page(
            "session.html",
            s=summary,
            sid=sid,
            level=params.get("level", ""),
            role=params.get("role", ""),
            logger=params.get("logger", ""),
            where=params.get("where", ""),
            q=params.get("q", ""),
            levels=LEVEL_CHOICES,
            roles=ROLE_CHOICES,
            page_size=EVENTS_PER_PAGE,
            first=first,
        )

    def first_page(self, sid: str, params: Any, limit: int) -> dict[str, Any]:
        """Return one page of events as the JSON read and the session page give it.

        Raises:
            CodexLoggingError: A bad filter, cursor or time, or the database's error.
        """
        after = params.get("after") or None
        rows: list[dict[str, Any]] = []
        following: str | None = None
        filters = _filters(sid, params)
        at = params.get("at")
        if at and not after:
            after = self.backend.cursor_at(sid, _moment(at))
        # An "at" past the last event: nothing to show, the end.
        if not at or after is not None:
            rows, following = self.backend.events(filters, after, limit)
        shown = [event_view(row) for row in rows]
        return {"events": shown, "after": after, "cursor": following, "more": len(rows) == limit}

    def events(self, request: Request) -> Response:
        sid = request.path_params["session_id"]
        params = request.query_params
        limit = min(_whole(params.get("limit"), EVENTS_PER_PAGE) or 1, MAX_EVENTS_PER_PAGE)
        try:
            return _JSONResponse(self.first_page(sid, params, limit))
        except CodexLoggingError as exc:
            return self.failure(exc, json=True)

    def timeline(self, request: Request) -> Response:
        sid = request.path_params["session_id"]
        try:
            validate_session_id(sid)
            shape = self.backend.timeline(sid)
        except CodexLoggingError as exc:
            return self.failure(exc, json=True)
        return _JSONResponse(shape)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        del request, exc
        return self.page("error.html", 404, message="no such page", status=404)


def create_app(backend: Backend, hosts: Iterable[str]) -> ASGIApp:
    """Return the viewer of ``backend``, answering to the ``hosts`` (``name:port``) only."""
    viewer = Viewer(backend)
    routes = [
        Route("/", viewer.sessions),
        Route("/s/{session_id:str}", viewer.session),
        Route("/api/s/{session_id:str}/events", viewer.events),
        Route("/api/s/{session_id:str}/timeline", viewer.timeline),
        Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, viewer.not_found)
    return Guard(app, hosts)


#: What a part of a session id can be: 1 to 128 of its characters.
_ID_PART: Final = re.compile(rf"[{ID_CHARACTERS}]{{1,128}}")


def _whole(text: str | None, default: int) -> int:
    # A count or an offset: ASCII digits, at most what SQLite and PostgreSQL hold.
    if not text or not text.isascii() or not text.isdigit():
        return default
    return min(int(text), MAX_TAIL)


def _moment(text: str) -> float:
    value = finite_number(text)
    if value is None:
        msg = f"invalid time {text!r}: Unix seconds"
        raise InvalidFilterError(msg)
    return value


def _filters(sid: str, params: Any) -> Filters:
    for name in ("level", "role", "logger", "q", "where"):
        if "\0" in (params.get(name) or ""):  # no text in either database holds one
            msg = f"invalid {name}: it holds a NUL character"
            raise InvalidFilterError(msg)
    level = params.get("level") or None
    role = params.get("role") or None
    logger = params.get("logger") or None
    grep = params.get("q") or None
    where = params.get("where") or None
    return Filters(
        session_id=validate_session_id(sid),
        min_level=None if level is None else check_level(level),
        role=role,
        logger=logger,
        grep=grep,
        fields=() if where is None else (parse_where(where),),
    )
