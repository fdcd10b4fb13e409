"""What the processor says about itself: processing rate and latency, consumer lag, heartbeat metrics."""

from __future__ import annotations

import bisect
import time
from typing import Any

from kafka import TopicPartition

from tocsin.core.events import HOSTNAME, METRIC_EVENT, new_event_id, now_us
from tocsin.processors import slo

SERVICE_NAME = "tocsin-processor"
RATE_WINDOW_S = 10.0
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class LatencyCounts:
    """Processing latency samples in ``LATENCY_BUCKETS_S``; written by the loop, read under its lock."""

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS_S)
        self.n = 0
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.n += 1
        self.sum_s += seconds
        i = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        if i < len(self.counts):
            self.counts[i] += 1

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        """``(upper bound, samples at or below it)`` pairs, as Prometheus histograms count."""
        out, running = [], 0
        for bound, n in zip(LATENCY_BUCKETS_S, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return tuple(out)


class Telemetry:
    """Self-reporting of ``ProcessorService`` (its state lives there)."""

    cfg: Any
    engine: Any
    consumer: Any
    producer: Any
    codec: Any
    lag: dict[tuple[str, int], int]

    def events_per_s(self, now: float) -> float:
        """Events processed per second over the last ``RATE_WINDOW_S`` (the loop trims the window each pass)."""
        return sum(n for t, n in list(self._rate) if t >= now - RATE_WINDOW_S) / RATE_WINDOW_S

    def _update_lag(self) -> None:
        consumer = self.consumer
        lag = dict(self.lag)
        for key in list(self.engine.partitions):  # type: ignore[union-attr]
            tp = TopicPartition(*key)
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            pos = self._positions.get(key)
            if pos is None:
                try:
                    pos = consumer.position(tp, timeout_ms=1000)
                except Exception:
                    continue
            lag[key] = max(0, hw - pos)
        self.lag = lag  # one assignment: readers see the old or the new table, never half of one

    def _heartbeat(self) -> None:
        counters = self.engine.counters  # type: ignore[union-attr]
        ts = now_us()
        figures = {
            "tocsin_heartbeat": (1.0, "count"),
            "tocsin_processor_events_per_s": (self.events_per_s(time.monotonic()), "events_per_s"),
            "tocsin_processor_consumer_lag": (float(sum(self.lag.values())), "count"),
            "tocsin_processor_late_total": (float(counters.late), "count"),
            "tocsin_processor_deadlettered_total": (float(counters.deadlettered), "count"),
            "tocsin_processor_open_alerts": (float(len(self.engine.open_records())), "count"),  # type: ignore[union-attr]
        }
        topic = self.cfg.kafka.topics.metrics
        for b in slo.budgets(self.engine.partitions.values()):  # type: ignore[union-attr]
            # The error budget left, per objective and group, for the store (tocsin report) to show.
            record = {"event_id": new_event_id(), "ts": ts, "service": b["labels"].get("service", SERVICE_NAME),
                      "host": HOSTNAME, "name": slo.BUDGET_METRIC, "value": b["remaining"], "unit": "ratio",
                      "labels": {**b["labels"], "slo": b["rule"], "objective": f"{b['objective']:g}",
                                 "covers": b["covers"]}}
            self.producer.send(topic, key=record["service"].encode(), value=self.codec.encode(METRIC_EVENT, record))
        for name, (value, unit) in figures.items():
            record = {"event_id": new_event_id(), "ts": ts, "service": SERVICE_NAME, "host": HOSTNAME,
                      "name": name, "value": value, "unit": unit, "labels": {"component": "processor"}}
            self.producer.send(topic, key=SERVICE_NAME.encode(), value=self.codec.encode(METRIC_EVENT, record))
