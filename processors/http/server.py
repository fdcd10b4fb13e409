"""Run the HTTP app with uvicorn in a thread beside the processor's consumer loop.

The listening socket is bound here, in the caller's thread, so a taken port
fails ``serve()`` with a clear error instead of ending the server thread
silently; stop with ``server.should_exit = True`` then ``thread.join()``.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import uvicorn
from fastapi import FastAPI

from tocsin.core.config import Wiring
from tocsin.core.errors import ConfigError

START_TIMEOUT_S = 10.0
SWITCH_INTERVAL_S = 0.001
"""GIL switch interval while the API runs beside the consumer loop (CPython's default is 5 ms).

A request needs the GIL back after each socket call; with the loop busy in
pure Python, every such wait lasts a full interval, so at 5 ms a /health
costs ~20 ms and 200 requests/s cannot keep up. At 1 ms it costs ~1-4 ms,
and nothing changes while no request is in flight (no thread waits).
"""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host is one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise ConfigError(f"api.http_addr: cannot resolve host {host!r}")
    family, kind, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it a
    # keep-alive response split in two writes waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"api.http_addr: cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(another process on that port? set TOCSIN_HTTP_ADDR)") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, cfg: Wiring, *, start_timeout_s: float = START_TIMEOUT_S,
          switch_interval_s: float | None = SWITCH_INTERVAL_S) -> tuple[uvicorn.Server, threading.Thread]:
    """Starts uvicorn on ``cfg.api.http_addr`` in a daemon thread; returns once it accepts connections.

    Lowers the process's GIL switch interval to ``switch_interval_s`` (never
    raises it; None leaves it alone) so requests are not starved by the loop.
    """
    sock = bind(cfg.api.host, cfg.api.port)
    if switch_interval_s is not None and sys.getswitchinterval() > switch_interval_s:
        sys.setswitchinterval(switch_interval_s)
    # http="auto" takes httptools (C parser, ~100 us less CPU per request than h11) when installed.
    tls = {"ssl_certfile": cfg.api.tls_certfile, "ssl_keyfile": cfg.api.tls_keyfile} if cfg.api.tls_certfile else {}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=2, **tls)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tocsin-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError(f"api.http_addr: the HTTP server did not start on {cfg.api.http_addr}")
        time.sleep(0.01)
    return server, thread


def stop(server: uvicorn.Server, thread: threading.Thread, timeout_s: float = 5.0) -> None:
    """Asks uvicorn to exit and waits for its thread; calling it twice is harmless."""
    server.should_exit = True
    thread.join(timeout_s)
