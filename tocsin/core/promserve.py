"""Serving Prometheus metrics: prometheus_client's HTTP server on ``host:port`` (``metrics_addr``) over a registry.

Shared by the sinks (the default registry, ``tocsin_sink_*``) and the agent (a registry of its own,
``tocsin_agent_*``), so neither imports the other.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from tocsin.core.errors import ConfigError

log = logging.getLogger(__name__)


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6; an empty host is every address) as (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"metrics_addr {addr!r} is not host:port (e.g. 127.0.0.1:9464)")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    """prometheus_client's HTTP server on a thread over ``registry``; ``close()`` is idempotent.

    Port 0 picks a free port: ``port`` is the bound one after ``start()``.
    """

    def __init__(self, addr: str, registry: CollectorRegistry = REGISTRY, what: str = "sink") -> None:
        self.host, self.port = parse_addr(addr)
        self.registry = registry
        self.what = what
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        if self._server is None:
            self._server, self._thread = start_http_server(self.port, self.host, registry=self.registry)
            self.port = self._server.server_address[1]
            log.info("Serving metrics.", extra={"of": self.what, "addr": f"{self.host}:{self.port}"})

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


def register(collector: Any) -> bool:
    """Registers a per-instance collector on the default registry; False when one already is (tests run
    several sinks in one process: the first one's metrics are shown)."""
    try:
        REGISTRY.register(collector)
    except ValueError:
        return False
    return True


def unregister(collector: Any) -> None:
    with contextlib.suppress(KeyError):
        REGISTRY.unregister(collector)


__all__ = ["MetricsServer", "parse_addr", "register", "unregister"]
