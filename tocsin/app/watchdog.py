"""The dead man's switch: Tocsin pings an outside service while its whole pipeline works, and stops when not.

In the style of healthchecks.io pings, Opsgenie heartbeats and Alertmanager's
always-firing ``Watchdog`` alert: the outside service pages when the pings
stop, so a Tocsin that is down (or wedged) is noticed although it cannot alert
about itself. Two halves, each a member of its ``tocsin start`` process:

1. ``WatchdogBeacon`` runs beside the processor. Every ``interval_s / 2`` it
   publishes a ``Watchdog`` AlertEvent (state firing, fingerprint
   ``watchdog``) to the alerts topic, but only while the processor's loop runs,
   makes progress and has processed events (the components' heartbeat
   MetricEvents at least) within ``events_within_s``: so events flow from the
   agents and the other services into the processor.
2. ``WatchdogPinger`` runs beside the notify sink, which notes when the last
   ``Watchdog`` event reached it (and routes it nowhere). Every ``interval_s``
   it requests ``url``, but only while that note is younger than ``interval_s``
   and the sink's loop runs: so alerts flow from the processor to the notify
   sink, the end of the chain.

Kill the processor, the broker or the notify sink and the pings stop within
two intervals; start them again and the pings resume. The ``Watchdog`` alert
is visible like Alertmanager's (``tocsin alerts``, the alerts table).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from tocsin.core.component import Component
from tocsin.core.config import StrictModel
from tocsin.core.heartbeat import SERVICE, WATCHDOG_FINGERPRINT, WATCHDOG_RULE
from tocsin.processors.view import LIVENESS_S

log = logging.getLogger(__name__)


class WatchdogConfig(StrictModel):
    """``watchdog:``: where to ping while the pipeline is healthy end to end (off while ``url`` is empty)."""

    url: str = Field("", description="http(s) URL requested every interval while healthy, e.g. a healthchecks.io "
                                     "ping URL or an Opsgenie heartbeat ping; empty turns the watchdog off.")
    interval_s: float = Field(60.0, ge=1, le=86_400, description="Seconds between pings (healthchecks.io's "
                                                                 "period; its grace should be at least this).")
    method: Literal["GET", "POST", "HEAD"] = Field("GET", description="HTTP method of the ping.")
    timeout_s: float = Field(10.0, gt=0, le=60, description="Timeout of one ping request.")
    events_within_s: float = Field(
        60.0, gt=0, description="The processor must have processed an event within this (heartbeats come every "
                                "processor.heartbeat_interval_s, 15 s by default) for the pipeline to count as "
                                "flowing.")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.url)


def _leaf(group: Any, name: str) -> Any:
    """The component running as ``name`` in a (possibly nested) service group, as it is now."""
    member = group.members.get(name)
    while member is not None and hasattr(member, "members") and name in member.members:
        member = member.members[name]
    return member


def watchdog_event(started_us: int) -> dict[str, Any]:
    """One beat of the always-firing ``Watchdog`` alert, as an AlertEvent record."""
    from tocsin.core.events import HOSTNAME, new_event_id, now_us

    return {"event_id": new_event_id(), "ts": now_us(), "alert_id": f"{WATCHDOG_FINGERPRINT}-{started_us}",
            "fingerprint": WATCHDOG_FINGERPRINT, "rule": WATCHDOG_RULE, "severity": "none",
            "previous_severity": "none", "state": "firing", "previous_state": "firing", "value": None,
            "threshold": None, "labels": {"service": SERVICE, "alertname": WATCHDOG_RULE, "host": HOSTNAME},
            "annotations": {"summary": "Tocsin's pipeline is working: this alert is always firing while it does"},
            "started_at": started_us, "ended_at": None, "resolved_by": None}


class WatchdogBeacon(Component):
    """Beside the processor: publishes ``Watchdog`` AlertEvents while the processor consumes and processes."""

    name = "watchdog-beacon"

    def __init__(self, cfg: Any, group: Any, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.cfg, self.wcfg, self.group, self.clock = cfg, cfg.watchdog, group, clock
        self._producer: Any = None
        self._processed = -1
        self._processed_at = float("-inf")
        self.sent = 0

    def start(self) -> None:
        from tocsin.core import kafka as kafka_api
        from tocsin.core.events import now_us

        self._producer = kafka_api.producer(self.cfg.kafka)
        self._started_us = now_us()

    def healthy(self) -> bool:
        """The processor's loop runs, moves, consumes, and processed events within ``events_within_s``."""
        if not self.group.alive("processor"):
            return False
        service = _leaf(self.group, "processor")
        if service is None or service.stuck() is not None or service.stopping or not service.kafka_ok:
            return False
        if time.monotonic() - service.last_poll >= LIVENESS_S:  # the loop polls several times a second
            return False
        processed = sum(service.processed.values())
        now = self.clock()
        if processed != self._processed:
            self._processed, self._processed_at = processed, now
        return now - self._processed_at <= self.wcfg.events_within_s

    def beat(self) -> bool:
        if not self.healthy():
            return False
        from tocsin.core.events import ALERT_EVENT
        from tocsin.schemas.codec import default_codec

        self._producer.send(self.cfg.kafka.topics.alerts, key=WATCHDOG_FINGERPRINT.encode(),
                            value=default_codec().encode(ALERT_EVENT, watchdog_event(self._started_us)))
        self.sent += 1
        return True

    def run(self) -> None:
        while not self._stop.wait(self.wcfg.interval_s / 2):
            try:
                self.beat()
            except Exception:  # a broker hiccup: the next beat tries again; a missing beat is the signal
                log.warning("could not publish a watchdog beat", exc_info=True)

    def _release(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


class WatchdogPinger(Component):
    """Beside the notify sink: requests the watchdog URL while ``Watchdog`` beats reach the sink."""

    name = "watchdog"

    def __init__(self, cfg: Any, group: Any, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.wcfg, self.group, self.clock = cfg.watchdog, group, clock
        self._session: Any = None
        self.pings = 0
        self.failures = 0
        self.withheld = 0

    def start(self) -> None:
        import requests

        self._session = requests.Session()

    def healthy(self) -> bool:
        """The sink's loop runs and moves, and a ``Watchdog`` beat reached it within the last interval."""
        if not self.group.alive("sink-notify"):
            return False
        sink = _leaf(self.group, "sink-notify")
        seen = getattr(sink, "watchdog_seen_at", None)
        return (sink is not None and sink.stuck() is None and seen is not None
                and self.clock() - seen < self.wcfg.interval_s)

    def ping(self) -> bool:
        if not self.healthy():
            self.withheld += 1
            return False
        import requests

        try:
            r = self._session.request(self.wcfg.method, self.wcfg.url, timeout=self.wcfg.timeout_s)
            r.close()
            ok = r.status_code < 400
        except requests.RequestException as exc:
            ok = False
            log.warning("watchdog ping failed", extra={"host": urlsplit(self.wcfg.url).hostname,
                                                       "error": type(exc).__name__})
        else:
            if not ok:  # the URL may hold a secret (a ping key): name only its host
                log.warning("watchdog ping refused", extra={"host": urlsplit(self.wcfg.url).hostname,
                                                            "status": r.status_code})
        self.pings += ok
        self.failures += not ok
        return ok

    def heartbeat_figures(self) -> dict[str, tuple[float, str]]:
        return {"tocsin_watchdog_pings_total": (float(self.pings), "count"),
                "tocsin_watchdog_ping_failures_total": (float(self.failures), "count")}

    def run(self) -> None:
        while not self.stopping:
            self.ping()
            self._stop.wait(self.wcfg.interval_s)

    def _release(self) -> None:
        if self._session is not None:
            self._session.close()


def add_watchdog(cfg: Any, group: Any) -> None:
    """Adds the beacon beside a processor and the pinger beside a notify sink, when ``watchdog.url`` is set."""
    if not cfg.watchdog.enabled:
        return
    if "processor" in group.members:
        group.members["watchdog-beacon"] = WatchdogBeacon(cfg, group)
        group.factories["watchdog-beacon"] = lambda: WatchdogBeacon(cfg, group)
    if "sink-notify" in group.members:
        group.members["watchdog"] = WatchdogPinger(cfg, group)
        group.factories["watchdog"] = lambda: WatchdogPinger(cfg, group)
