"""Prometheus exposition of the processor through prometheus-client, one registry per app.

A custom collector reads the view's latest ``Snapshot`` at scrape time, so the
consumer loop keeps plain counters and pays nothing per event for Prometheus,
and two apps in one process (tests) never share metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tocsin.processors.view import ServiceView

PREFIX = "tocsin_processor"
SEVERITIES = ("warning", "critical")
"""Severities always exported (as 0 when none is open), so a dashboard never shows a gap for 'none open'."""


class ProcessorCollector(Collector):
    """Turns one view snapshot into metric families."""

    def __init__(self, view: ServiceView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        snap = self.view.snapshot()
        c = snap.counters

        consumed = CounterMetricFamily(f"{PREFIX}_events_consumed", "Kafka messages consumed, per topic.",
                                       labels=["topic"])
        for topic, n in sorted(c.consumed.items()):
            consumed.add_metric([topic], n)
        yield consumed
        processed = CounterMetricFamily(f"{PREFIX}_events_processed",
                                        "Events through windows and rules, per topic.", labels=["topic"])
        for topic, n in sorted(c.processed.items()):
            processed.add_metric([topic], n)
        yield processed
        yield CounterMetricFamily(f"{PREFIX}_events_late", "Events older than the allowed lateness, counted "
                                  "and not applied.", value=c.late)
        yield CounterMetricFamily(f"{PREFIX}_events_reordered", "Events older than the grace that were windowed: "
                                  "producers' backlogs delivered behind fresh events after a broker outage.",
                                  value=c.reordered)
        yield CounterMetricFamily(f"{PREFIX}_events_deadlettered", "Records sent to the dead-letter topic.",
                                  value=c.dead_lettered)
        yield CounterMetricFamily(f"{PREFIX}_decode_errors", "Records that did not decode (also dead-lettered).",
                                  value=c.decode_errors)

        h = c.latency
        buckets = [(floatToGoString(le), n) for le, n in h.buckets if le != float("inf")]
        buckets.append(("+Inf", h.count))
        yield HistogramMetricFamily(f"{PREFIX}_processing_latency_seconds",
                                    "Processing latency as the processor measures it: from a record's Kafka "
                                    "timestamp to the end of its processing, one sample per partition batch.",
                                    buckets=buckets, sum_value=h.sum_s)

        yield GaugeMetricFamily(f"{PREFIX}_live_series", "Window series held in memory.", value=c.live_series)
        yield CounterMetricFamily(f"{PREFIX}_evicted", "Per-service statistics and latest-health entries forgotten "
                                  "(idle, or beyond the cap): memory follows live services.", value=c.evicted)

        active = GaugeMetricFamily(f"{PREFIX}_active_alerts", "Open alerts (pending or firing), per severity.",
                                   labels=["severity"])
        counts = dict.fromkeys(SEVERITIES, 0)
        for alert in snap.active:
            sev = str(alert.get("severity") or "none")
            counts[sev] = counts.get(sev, 0) + 1
        for sev, n in sorted(counts.items()):
            active.add_metric([sev], n)
        yield active

        lag = GaugeMetricFamily(f"{PREFIX}_consumer_lag_messages",
                                "Messages between the committed position and the log end, per partition.",
                                labels=["topic", "partition"])
        for (topic, partition), n in sorted(snap.lag.items()):
            lag.add_metric([topic, str(partition)], max(0, n))
        yield lag

        yield GaugeMetricFamily(f"{PREFIX}_consuming", "1 while the consumer loop polls.",
                                value=int(snap.consuming()))
        yield GaugeMetricFamily(f"{PREFIX}_kafka_reachable", "1 while the broker answers the consumer loop.",
                                value=int(snap.kafka))
        ch = snap.clickhouse
        if ch is not None:
            yield GaugeMetricFamily(f"{PREFIX}_clickhouse_reachable", "1 while ClickHouse answers.", value=int(ch))
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the processor started.",
                                value=snap.uptime_s())


class SinksInProcess(Collector):
    """The ``tocsin_sink_*`` families of prometheus_client's default registry, where the sinks put theirs:
    under ``tocsin start all`` they run in this process and their metrics belong on this /metrics."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import REGISTRY

        yield from (m for m in REGISTRY.collect() if m.name.startswith("tocsin_sink_"))


def registry_for(view: ServiceView) -> CollectorRegistry:
    """A fresh registry with the processor's metrics, the sinks' in this process, process and platform."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessorCollector(view))
    registry.register(SinksInProcess())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
