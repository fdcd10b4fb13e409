"""What both sinks expose to Prometheus: consumer lag per group and partition, and a standalone /metrics.

Every sink metric is named ``tocsin_sink_*`` and lives on prometheus_client's
default registry: a standalone sink serves that registry on ``metrics_addr``
(``host:port``), and under ``tocsin start all`` the processor's HTTP API adds the
``tocsin_sink_*`` families of the same registry to its own /metrics.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from prometheus_client import REGISTRY, start_http_server

from tocsin.core.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "tocsin_sink_"
LAG_INTERVAL_S = 5.0  # how often the loop refreshes the lag it reports (local state only, no broker call)


def consumer_lag(consumer: Any) -> dict[tuple[str, int], int]:
    """Messages between the position and the last known log end, per assigned partition.

    The high watermark comes with every fetch response (no request of its own), so this is cheap
    enough for the consumer loop; a partition not yet fetched is left out rather than guessed.
    """
    out: dict[tuple[str, int], int] = {}
    try:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            out[(tp.topic, tp.partition)] = max(0, high - consumer.position(tp, timeout_ms=0))
    except Exception:  # a rebalance under way: the next refresh has it
        return out
    return out


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"metrics_addr {addr!r} is not host:port (e.g. 127.0.0.1:9464)")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    """prometheus_client's HTTP server on a thread over the default registry; ``close()`` is idempotent."""

    def __init__(self, addr: str) -> None:
        self.host, self.port = parse_addr(addr)
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        if self._server is None:
            self._server, self._thread = start_http_server(self.port, self.host, registry=REGISTRY)
            log.info("Serving sink metrics.", extra={"addr": f"{self.host}:{self.port}"})

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
