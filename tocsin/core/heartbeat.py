"""Self-monitoring (the seed's "monitoring the monitor"): heartbeat MetricEvents of every component.

Every service and agent calls ``Heartbeat.maybe_send()`` from its loop; at most
once per interval it publishes ``tocsin_heartbeat`` (value 1) and the
component's own figures (throughput, lag, errors) as MetricEvents of service
``tocsin`` labelled with the component and host. The default absence rule
fires when a component's heartbeats stop, so a dead sink is an alert, not a
silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

from tocsin.core.component import Component
from tocsin.core.events import HEALTH_EVENT, HOSTNAME, METRIC_EVENT, new_event_id, now_us
from tocsin.schemas.codec import default_codec

log = logging.getLogger(__name__)

SERVICE = "tocsin"
HEARTBEAT_METRIC = "tocsin_heartbeat"
RESTARTS_METRIC = "tocsin_component_restarts_total"
RESTARTING_METRIC = "tocsin_component_restarting"
"""1 while a component is down, waiting to restart or restarted less than a healthy period ago; else 0."""
RESTARTS_CHECK = "restarts:{component}"
WATCHDOG_RULE = "Watchdog"
"""The always-firing alert of the dead man's switch (tocsin.app.watchdog): noted by the notify sink, never routed."""
WATCHDOG_FINGERPRINT = "watchdog"

Figures = dict[str, tuple[float, str]]
"""metric name -> (value, unit)"""


class Heartbeat:
    """Publishes a component's heartbeat and figures at most every ``interval_s`` seconds."""

    def __init__(self, producer: KafkaProducer, topic: str, component: str, figures: Callable[[], Figures],
                 interval_s: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.producer = producer
        self.topic = topic
        self.component = component
        self.figures = figures
        self.interval_s = interval_s
        self.clock = clock
        self._last = float("-inf")
        self.sent = 0

    def maybe_send(self) -> bool:
        """Sends if an interval has passed; never blocks on the broker (send is asynchronous)."""
        if not self.interval_s or self.clock() - self._last < self.interval_s:
            return False
        self._last = self.clock()
        self.send()
        return True

    def send(self) -> None:
        ts = now_us()
        codec = default_codec()
        labels = {"component": self.component}
        events = [{"event_id": new_event_id(), "ts": ts, "service": SERVICE, "host": HOSTNAME,
                   "name": HEARTBEAT_METRIC, "value": 1.0, "unit": "count", "labels": labels}]
        for name, (value, unit) in self.figures().items():
            events.append({"event_id": new_event_id(), "ts": ts, "service": SERVICE, "host": HOSTNAME,
                           "name": name, "value": float(value), "unit": unit, "labels": labels})
        self.producer.send(self.topic, key=SERVICE.encode(), value=codec.encode_batch(METRIC_EVENT, events))
        self.sent += 1


class HeartbeatLoop(Component):
    """Heartbeats for the services of a ``tocsin start`` process, sent while each one's loop runs.

    A service whose ``run()`` has ended (crashed, or the process was killed),
    or whose loop stopped making progress (``Component.stuck``: hung on a lock or
    a call that never returns), stops beating, which the
    ``tocsin_component_silent`` absence rule turns into an alert. Services may
    expose ``heartbeat_figures() -> Figures`` to add their throughput, lag and
    errors.
    """

    name = "heartbeat"

    def __init__(self, cfg: Any, group: Any, names: list[str], interval_s: float = 15.0) -> None:
        super().__init__()
        self.cfg, self.group, self.names, self.interval_s = cfg, group, names, interval_s
        self._producer: KafkaProducer | None = None
        self.beats: dict[str, Heartbeat] = {}
        self.stuck: set[str] = set()
        self._restarts_sent_at = float("-inf")
        self._restarts_seen: dict[str, tuple[str, int]] = {}

    def start(self) -> None:
        from tocsin.core import kafka as kafka_api

        self._producer = kafka_api.producer(self.cfg.kafka)
        for name in self.names:
            self.beats[name] = Heartbeat(self._producer, self.cfg.kafka.topics.metrics, name,
                                         self._figures_of(name), self.interval_s)

    def _figures_of(self, name: str) -> Callable[[], Figures]:
        """The figures of whichever member runs under ``name`` now (a restart replaces it)."""
        def figures() -> Figures:
            own = getattr(self.group.members[name], "heartbeat_figures", None)
            return own() if own else {}
        return figures

    def send_restarts(self) -> None:
        """Per member that ever failed: a health entry ``restarts:<name>`` and the restart metrics.

        The processor lists the health entry on ``/health/detailed``; the
        ``tocsin_component_restarting`` rule alerts on the metric. Members that
        never failed send nothing, so a healthy process adds no noise.
        """
        status_of = getattr(self.group, "status", {})
        backoff = getattr(self.group, "backoff", None)
        reset_s = backoff.reset_after_s if backoff is not None else 60.0
        ts = now_us()
        codec = default_codec()
        metrics, health = [], []
        for name, st in list(status_of.items()):
            if name == self.name or (st.restarts == 0 and st.state == "running"):
                continue
            recent = st.recently_failed(reset_s)
            labels = {"component": name}
            common = {"ts": ts, "service": SERVICE, "host": HOSTNAME}
            metrics += [{"event_id": new_event_id(), **common, "name": RESTARTS_METRIC, "value": float(st.restarts),
                         "unit": "count", "labels": labels},
                        {"event_id": new_event_id(), **common, "name": RESTARTING_METRIC, "value": float(recent),
                         "unit": "count", "labels": labels}]
            status = "unhealthy" if st.state != "running" else "degraded" if recent else "healthy"
            health.append({"event_id": new_event_id(), **common, "check": RESTARTS_CHECK.format(component=name),
                           "status": status, "response_time_ms": None,
                           "details": {"component": name, "state": st.state, "restarts": str(st.restarts),
                                       "last_failure_at": str(st.last_failure_at or "")},
                           "error": st.last_error})
        if metrics:
            self._producer.send(self.cfg.kafka.topics.metrics, key=SERVICE.encode(),
                                value=codec.encode_batch(METRIC_EVENT, metrics))
        for rec in health:
            self._producer.send(self.cfg.kafka.topics.health, key=SERVICE.encode(),
                                value=codec.encode(HEALTH_EVENT, rec))

    def run(self) -> None:
        while not self._stop.wait(1.0):
            for name, beat in self.beats.items():
                if not self.group.alive(name):
                    continue
                stuck = self.group.members[name].stuck()
                if stuck is not None:  # silence, so tocsin_component_silent fires for a hung loop too
                    if name not in self.stuck:
                        log.warning("a service loop stopped making progress: heartbeats withheld",
                                    extra={"service": name, "loop": stuck})
                    self.stuck.add(name)
                    continue
                if name in self.stuck:
                    log.info("a service loop is making progress again", extra={"service": name})
                    self.stuck.discard(name)
                beat.maybe_send()
            snapshot = {n: (st.state, st.restarts) for n, st in getattr(self.group, "status", {}).items()}
            if snapshot != self._restarts_seen or time.monotonic() - self._restarts_sent_at >= self.interval_s:
                self._restarts_seen, self._restarts_sent_at = snapshot, time.monotonic()
                self.send_restarts()  # at once on a change, so a restart is on /health/detailed in seconds

    def _release(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
