"""``codex-logs serve``: bind, say the address, serve until Ctrl-C (docs/viewer.md).

The socket is bound before the address is printed, so a script that reads the
printed URL can connect at once; uvicorn serves the application on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import sys
from typing import TextIO

import uvicorn

from codex_logging._viewer.app import allowed_hosts, create_app
from codex_logging._viewer.backend import Backend

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost``, ``127.x.y.z`` or ``::1``."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_public(host: str, port: int, err: TextIO) -> bool:
    """Say on ``err`` that ``host`` is reachable from other machines; return whether it is."""
    if is_loopback(host):
        return False
    print(
        f"warning: serving on {host}, not only this machine: anyone who can reach"
        f" {host}:{port} can read every session in the mirror",
        file=err,
        flush=True,
    )
    return True


def bind(host: str, port: int) -> socket.socket:
    """Return a listening socket on ``host:port`` (port 0: any free port).

    Raises:
        OSError: The address cannot be bound (taken, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host == "localhost":
        host = "127.0.0.1"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    backend: Backend, host: str, port: int, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> None:
    """Serve the viewer of ``backend`` on ``host:port`` until interrupted.

    Raises:
        OSError: The address cannot be bound.
    """
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    hosts = allowed_hosts(host, bound)
    if warn_if_public(host, bound, err) and host in {"0.0.0.0", "::"}:  # noqa: S104
        hosts |= allowed_hosts(socket.gethostname(), bound)
    shown = "127.0.0.1" if host == "localhost" else host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"codex-logs viewer: http://{shown}:{bound}/ (read-only; Ctrl-C stops it)", file=out)
    out.flush()
    config = uvicorn.Config(
        create_app(backend, hosts),
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    with contextlib.closing(sock), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve(sockets=[sock]))
