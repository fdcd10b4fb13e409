"""What both sinks expose to Prometheus: consumer lag per group and partition, and a standalone /metrics.

Every sink metric is named ``tocsin_sink_*`` and lives on prometheus_client's
default registry: a standalone sink serves that registry on ``metrics_addr``
(``host:port``, through ``tocsin.core.promserve``), and under ``tocsin start all`` the processor's HTTP API adds the
``tocsin_sink_*`` families of the same registry to its own /metrics.
"""

from __future__ import annotations

from typing import Any

from tocsin.core.promserve import MetricsServer, parse_addr, register, unregister

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


__all__ = ["LAG_INTERVAL_S", "PREFIX", "MetricsServer", "consumer_lag", "parse_addr", "register", "unregister"]
