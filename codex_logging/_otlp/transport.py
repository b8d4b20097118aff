"""OTLP/HTTP: where to send, with which headers, and the retries (docs/scale-out.md, "OTLP export").

The settings are the OpenTelemetry SDKs' own environment variables; a
request is a POST of a protobuf ``ExportLogsServiceRequest`` with
``urllib`` (no new dependency). Nothing here prints a header's value, and
every message names the endpoint through :func:`hide_secrets`.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import functools
import gzip
import http.client
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

if TYPE_CHECKING:
    from google.protobuf.message import Message

from codex_logging._errors import OtlpConfigError, OtlpExportError, hide_secrets

DEFAULT_ENDPOINT: Final = "http://localhost:4318/v1/logs"
#: Seconds, as the SDKs' default ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10000 ms).
DEFAULT_TIMEOUT: Final = 10.0
#: The answers worth another try (the OTLP/HTTP specification's list).
RETRYABLE: Final = frozenset({429, 502, 503, 504})
#: Tries per request, and the longest wait between two (a Retry-After is capped too).
ATTEMPTS: Final = 6
MAX_WAIT: Final = 30.0
FIRST_WAIT: Final = 0.5
_CONTENT_TYPE: Final = "application/x-protobuf"


def _env(name: str) -> tuple[str, str]:
    """Return ``(variable, value)``: ``OTEL_EXPORTER_OTLP_LOGS_<name>``, else ``..._<name>``.

    The value is ``""`` when neither is set.
    """
    for key in (f"OTEL_EXPORTER_OTLP_LOGS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = os.environ.get(key, "").strip()
        if value:
            return key, value
    return f"OTEL_EXPORTER_OTLP_{name}", ""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how requests go.

    Attributes:
        endpoint: The full URL requests are POSTed to.
        headers: Extra request headers (their values are never shown).
        timeout: Seconds per request.
        gzip: Whether bodies are gzip-compressed.
    """

    endpoint: str
    headers: Mapping[str, str]
    timeout: float
    gzip: bool

    @property
    def key(self) -> str:
        """The endpoint as the watermark knows it: scheme, host, port and path only.

        Without user info or query, so a rotated credential there does not
        send every line again.
        """
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path or '/'}"

    @property
    def shown(self) -> str:
        """The endpoint for messages, any password in it hidden."""
        return hide_secrets(self.endpoint, self.endpoint)


def settings(endpoint: str | None = None) -> Settings:
    """Return the settings: the arguments, else the SDKs' environment variables.

    ``endpoint`` and ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` are used as they
    are; ``OTEL_EXPORTER_OTLP_ENDPOINT`` is a base that gets ``/v1/logs``
    appended; else ``http://localhost:4318/v1/logs``. Headers from
    ``..._HEADERS`` (``key=value,...``, percent-decoded), the timeout from
    ``..._TIMEOUT`` (milliseconds), gzip when ``..._COMPRESSION`` is ``gzip``.

    Raises:
        OtlpConfigError: A setting is not valid (the message shows no header value).
    """
    url = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip()
    if not url:
        base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        url = base.rstrip("/") + "/v1/logs" if base else DEFAULT_ENDPOINT
    _check_url(url)
    headers = _headers()
    timeout = DEFAULT_TIMEOUT
    variable, given = _env("TIMEOUT")
    if given:
        try:
            timeout = float(given) / 1000
        except ValueError:
            timeout = -1
        if not 0.001 <= timeout < 86400:
            msg = f"{variable}: expected milliseconds from 1 to 86400000, got {given!r}"
            raise OtlpConfigError(msg)
    variable, given = _env("COMPRESSION")
    compression = (given or "none").lower()
    if compression not in {"gzip", "none"}:
        msg = f"{variable}: expected gzip or none, got {compression!r}"
        raise OtlpConfigError(msg)
    return Settings(url, headers, timeout, compression == "gzip")


def _headers() -> dict[str, str]:
    """Return the headers of ``OTEL_EXPORTER_OTLP_[LOGS_]HEADERS`` (see :func:`settings`)."""
    headers: dict[str, str] = {}
    variable, given = _env("HEADERS")
    for item in given.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        name = unquote(key.strip())
        if not equals or not _TOKEN.fullmatch(name):
            msg = f"{variable}: expected key=value pairs, got a pair named {name!r}"
            raise OtlpConfigError(hide_secrets(msg))
        try:
            text = unquote(value.strip(), errors="strict")
            text.encode("latin-1")
        except UnicodeError:
            # HTTP sends a header's value as Latin-1 bytes (RFC 9110 5.5).
            msg = f"{variable}: the value of {name!r} is not Latin-1 text, which HTTP cannot send"
            raise OtlpConfigError(msg) from None
        if any(c in text for c in "\r\n\0"):
            msg = f"{variable}: the value of {name!r} holds a line break"
            raise OtlpConfigError(msg)
        headers[name] = text
    return headers


#: A header's name (RFC 9110's token).
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def file_settings(path: str) -> Settings:
    """Return the settings of a file destination: its watermarks go by ``file://`` and the path."""
    return Settings(Path(path).as_uri(), {}, DEFAULT_TIMEOUT, gzip=False)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
        msg = f"the OTLP endpoint must be an http:// or https:// URL with a host, got {url!r}"
        raise OtlpConfigError(hide_secrets(msg, url))
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        msg = (
            f"the OTLP endpoint {url!r} holds a blank, a control or a character beyond ASCII:"
            " percent-encode it (%20, %C3%B6)"
        )
        raise OtlpConfigError(hide_secrets(msg, url))
    del port


def _request_target(config: Settings) -> tuple[str, dict[str, str]]:
    """Return the URL a request goes to and the headers its user info makes.

    ``http://user:password@host/...``: the host alone is connected to (urllib
    would look up ``user:password@host`` as a name), and the user info is
    sent as Basic authentication, unless the headers set ``Authorization``.
    """
    parts = urlsplit(config.endpoint)
    if "@" not in parts.netloc:
        return config.endpoint, {}
    userinfo, _, where = parts.netloc.rpartition("@")
    url = urlunsplit((parts.scheme, where, parts.path, parts.query, parts.fragment))
    if any(name.lower() == "authorization" for name in config.headers):
        return url, {}
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    return url, {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send a 302's GET without the body.

    The 3xx comes back as an ``HTTPError`` (see :func:`post`).
    """

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect)


class RefusedError(Exception):
    """The endpoint refused a request for good (a 4xx other than 429): not retried."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        self.status = status


def _wait(seconds: float, stop: threading.Event | None) -> None:
    """Sleep ``seconds``, or until ``stop`` is set (an interrupted export waits no more)."""
    if stop is None:
        time.sleep(seconds)
    else:
        stop.wait(seconds)


#: Waits between tries; the tests replace it to count the waits.
sleep: Callable[[float, threading.Event | None], None] = _wait


def post(config: Settings, body: bytes, stop: threading.Event | None = None) -> tuple[int, bytes]:
    """POST ``body`` to the endpoint, retrying what may succeed later; return the 2xx answer.

    429, 502, 503, 504 and connection errors (refused, reset, timed out,
    closed without an answer) are tried again, up to :data:`ATTEMPTS` tries,
    waiting as ``Retry-After`` says (seconds or an HTTP date; at most
    :data:`MAX_WAIT`) or else an exponential backoff with jitter.

    Args:
        config: Where and how.
        body: The serialized request.
        stop: Set when the export is interrupted: the wait between tries ends
            and no further try is made.

    Returns:
        The status and the body of the answer.

    Raises:
        RefusedError: A 4xx other than 429 (the request is at fault: not retried).
        OtlpExportError: Still failing after the last try, or a 3xx/5xx not retried.
    """
    url, headers = _request_target(config)
    headers.update({"Content-Type": _CONTENT_TYPE, "User-Agent": "codex-logging"})
    headers.update(config.headers)
    if config.gzip:
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    backoff = FIRST_WAIT
    pause: float | None = None  # what a Retry-After asked for
    problem = ""
    tries = 0
    for attempt in range(ATTEMPTS):
        if attempt:
            if stop is None or not stop.is_set():
                sleep(jitter(backoff) if pause is None else pause, stop)
            if stop is not None and stop.is_set():  # before the wait, or during it
                problem += " (interrupted: no further try)"
                break
            backoff = min(MAX_WAIT, backoff * 2)
            pause = None
        tries += 1
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) checked in settings()
        try:
            with _OPENER.open(request, timeout=config.timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            text = _answer_text(exc)
            if status not in RETRYABLE:
                raise _refusal(config, exc, text) from None
            problem = f"HTTP {status}" + (f": {text}" if text else "")
            pause = _retry_after(exc.headers.get("Retry-After"))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = str(reason) or type(reason).__name__
            if isinstance(reason, socket.timeout | TimeoutError):
                problem = f"no answer within {config.timeout:g} s"
    msg = f"cannot send to the OTLP endpoint {config.shown} after {tries} tries: {problem}"
    raise OtlpExportError(hide_secrets(msg, config.endpoint))


def _refusal(config: Settings, exc: urllib.error.HTTPError, text: str) -> Exception:
    """Return the error of an answer not worth another try (see :func:`post`)."""
    status = exc.code
    if 400 <= status < 500:
        return RefusedError(status, text)
    if 300 <= status < 400:
        # Not followed: the endpoint is to be set to where it points.
        where = exc.headers.get("Location") or "no Location"
        text = f"a redirect to {where}, not followed (set the endpoint to it)"
        text = hide_secrets(text, where)
    msg = f"the OTLP endpoint {config.shown} answered HTTP {status}" + (f": {text}" if text else "")
    return OtlpExportError(hide_secrets(msg, config.endpoint))


def _answer_text(exc: urllib.error.HTTPError) -> str:
    """Return the error an endpoint gave: a ``google.rpc.Status`` message, or its text."""
    try:
        raw = exc.read(4096)
    except (OSError, http.client.HTTPException):
        return ""
    kind = exc.headers.get("Content-Type", "")
    if "protobuf" in kind:
        try:
            found = _status_type()()
            found.ParseFromString(raw)
            return " ".join(found.message.split())[:300]
        except Exception:
            return ""
    return " ".join(raw.decode("utf-8", "replace").split())[:300]


@functools.cache
def _status_type() -> type[Message]:
    """Return the class of ``google.rpc.Status``, the body of an OTLP/HTTP error answer.

    Built from its definition (code 1, message 2, details 3 as bytes here)
    with protobuf's own factory: ``googleapis-common-protos`` is not needed.
    """
    proto = descriptor_pb2.FileDescriptorProto(name="codex_rpc_status.proto", package="codex.rpc")
    status = proto.message_type.add(name="Status")
    field = descriptor_pb2.FieldDescriptorProto
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(name="details", number=3, type=field.TYPE_BYTES, label=field.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    found: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("codex.rpc.Status")
    )
    return found


def _retry_after(value: str | None) -> float | None:
    """Return the seconds a ``Retry-After`` asks for (capped at :data:`MAX_WAIT`), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(MAX_WAIT, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return min(MAX_WAIT, max(0.0, when.timestamp() - time.time()))


def jitter(wait: float) -> float:
    """Return ``wait`` spread by up to a fifth, so many exporters do not retry in step."""
    return wait * (0.8 + 0.4 * random.random())  # noqa: S311 - not for security
