"""What the processor service's HTTP layer reads from the running processor, and the adapter that provides it.

``ServiceView`` is the contract between the consumer loop and ``tocsin.processors.http``:
every accessor returns a snapshot of state the consumer loop already keeps
(counters, cached liveness, alert tables, chart series), so an HTTP request
never touches Kafka or ClickHouse itself. The one action, ``resolve``,
publishes a ControlEvent and returns without waiting for the processor to act.
``ProcessorView`` implements it over ``tocsin.processors.service.ProcessorService``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

log = logging.getLogger(__name__)

ResolveOutcome = Literal["accepted", "already_resolved", "unknown"]


@dataclass(frozen=True)
class LatencyHistogram:
    """A cumulative histogram of processing latency (seconds), as Prometheus wants it.

    ``buckets`` holds ``(upper bound, cumulative count)`` pairs in increasing
    order; the ``+Inf`` bucket is ``count``.
    """

    buckets: Sequence[tuple[float, int]] = ()
    count: int = 0
    sum_s: float = 0.0


@dataclass(frozen=True)
class Counters:
    """Processor counters since start: monotonic except ``live_series`` and ``events_per_s``."""

    consumed: Mapping[str, int] = field(default_factory=dict)  # topic -> Kafka messages read
    processed: Mapping[str, int] = field(default_factory=dict)  # topic -> events through windows and rules
    late: int = 0  # events older than the allowed lateness, counted not applied
    dead_lettered: int = 0  # records sent to the dead-letter topic, for any reason
    decode_errors: int = 0  # records that did not decode (a subset of dead_lettered)
    live_series: int = 0  # window series held in memory now
    events_per_s: float = 0.0  # recent processing rate
    latency: LatencyHistogram = LatencyHistogram()


@dataclass(frozen=True)
class SeriesPoint:
    """One chart point of one service: errors and p95 latency in the bucket starting at ``ts_us``."""

    ts_us: int
    errors: int  # ERROR and CRITICAL log events in the bucket
    error_rate_per_min: float  # errors per minute, the seed's error_rate unit
    p95_latency_ms: float | None  # p95 of the service's request latency metric; None: no samples


@runtime_checkable
class ServiceView(Protocol):
    """The running processor as the HTTP layer sees it. Every call is cheap and thread-safe.

    Alerts and health events are the Avro records (``AlertEvent``,
    ``HealthEvent`` field names, timestamps in int microseconds).
    """

    def counters(self) -> Counters:
        """Snapshot of the processing counters."""
        ...

    def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        """``{(topic, partition): messages behind the log end}`` for the assigned partitions."""
        ...

    def consuming(self) -> bool:
        """True while the consumer loop runs and has polled recently."""
        ...

    def kafka_reachable(self) -> bool:
        """The consumer loop's last verdict on the broker (cached, never probed per request)."""
        ...

    def clickhouse_reachable(self) -> bool | None:
        """The last verdict on ClickHouse; None when this process does not use ClickHouse."""
        ...

    def active_alerts(self) -> Sequence[Mapping[str, Any]]:
        """The latest AlertEvent of every open incident (state pending or firing)."""
        ...

    def alert_history(self) -> Sequence[Mapping[str, Any]]:
        """Recent AlertEvent transitions, newest first (bounded by the processor)."""
        ...

    def latest_health(self) -> Sequence[Mapping[str, Any]]:
        """The latest HealthEvent per (service, check)."""
        ...

    def service_series(self, limit: int) -> Mapping[str, Sequence[SeriesPoint]]:
        """Chart points over the last hour, oldest first, of the ``limit`` services with the most errors."""
        ...

    def error_count_1h(self) -> int:
        """ERROR and CRITICAL log events over the last hour, all services."""
        ...

    def uptime_s(self) -> float:
        """Seconds since the processor started."""
        ...

    def resolve(self, alert_id: str, reason: str, actor: str) -> ResolveOutcome:
        """Publishes a ``resolve`` ControlEvent for an open alert.

        ``unknown`` when no incident has that id; ``already_resolved`` (and no
        event) when it is closed already, so resolving twice is harmless.
        """
        ...


# -- the adapter over the running ProcessorService ---------------------------------------------

REFRESH_INTERVAL_S = 0.5
"""How often the view thread probes the broker connection; the API snapshot is refreshed every other time."""

SNAPSHOT_EVERY = 2
SERIES_INTERVAL_S = 5.0
"""Chart series are refreshed at the pace the dashboard polls (5 s): they cost the most to copy."""

STALL_S = 10.0
"""No completed snapshot for this long means the consumer loop holds its lock, stuck (a pass takes ~0.1 s)."""

CHART_SERVICES = 12
HISTORY_LIMIT = 1000


class ProcessorLoop(ServiceView, Protocol):
    """A ``ServiceView`` that runs a consumer loop: ``tocsin.processors.service.ProcessorService``."""

    @property
    def stopping(self) -> bool: ...


def broker_connected(consumer: Any) -> bool | None:
    """Whether a kafka-python client holds a live connection to any broker; None if it cannot tell.

    Reads the client's connection table (no request is sent): a stopped
    broker shows at once, a returning one as soon as the client reconnects,
    where a consumer's ``poll()`` just returns nothing either way.
    """
    try:
        client = consumer._client
        brokers = client.cluster.brokers()
        return any(client.connected(getattr(b, "node_id", getattr(b, "nodeId", None))) for b in brokers)
    except Exception:  # no consumer yet, or kafka-python internals moved: defer to the loop's own verdict
        return None


@dataclass(frozen=True)
class _Snapshot:
    counters: Counters = Counters()
    lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    active: tuple[Mapping[str, Any], ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    health: tuple[Mapping[str, Any], ...] = ()
    active_ids: frozenset[str] = frozenset()
    closed_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Series:
    points: Mapping[str, Sequence[SeriesPoint]] = field(default_factory=dict)
    error_count_1h: int = 0


class ProcessorView:
    """The ``ServiceView`` the HTTP app reads: snapshots of a running processor, refreshed by a thread.

    The processor's accessors take the lock its consumer loop holds for a
    whole pass (and for as long as a flush waits on a missing broker). This
    view's thread calls them twice a second and keeps immutable copies, so an
    HTTP request only reads memory: it never waits on the loop and never
    touches Kafka. It also checks the consumer's broker connections, which
    notice a stopped broker at once. ``resolve`` goes to the service (it
    publishes to Kafka, in the API's thread pool)::

        view = ProcessorView(service)          # after service.start()
        server, thread = serve(create_app(view, cfg), cfg)
        ...
        stop(server, thread); view.close()

    ``clickhouse`` is an optional cached verdict (for a process that also
    writes ClickHouse, such as the sink's last insert outcome); it runs in the
    view thread, so it must not block.
    """

    def __init__(self, service: ProcessorLoop, *, clickhouse: Callable[[], bool | None] | None = None,
                 chart_services: int = CHART_SERVICES) -> None:
        self._service = service
        self._clickhouse = clickhouse
        self._chart_services = chart_services
        self._snapshot = _Snapshot()
        self._series = _Series()
        self._snapshot_at = -math.inf
        self._series_at = -math.inf
        self._kafka_ok: bool | None = None
        self._clickhouse_ok: bool | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="tocsin-http-view", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the refresh thread; calling it twice is harmless."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(STALL_S)

    # -- the refresh thread ---------------------------------------------------------------------

    def _refresh_loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.refresh(snapshot=tick % SNAPSHOT_EVERY == 0)
            except Exception:  # a failing accessor must not end the API's view of the processor
                log.exception("refreshing the HTTP view failed")
            tick += 1
            self._stop.wait(REFRESH_INTERVAL_S)

    def refresh(self, snapshot: bool = True) -> None:
        """Probes the broker connection, then (``snapshot``) copies what the API shows."""
        self._kafka_ok = broker_connected(getattr(self._service, "_consumer", None))
        if self._clickhouse is not None:
            self._clickhouse_ok = self._clickhouse()
        if not snapshot:
            return
        s = self._service
        history = tuple(s.alert_history())[:HISTORY_LIMIT]
        active = tuple(s.active_alerts())
        active_ids = frozenset(str(a.get("alert_id")) for a in active)
        self._snapshot = _Snapshot(
            counters=s.counters(), lag=dict(s.consumer_lag()), active=active, history=history,
            health=tuple(s.latest_health()), active_ids=active_ids,
            closed_ids=frozenset(str(a.get("alert_id")) for a in history) - active_ids)
        now = time.monotonic()
        if now - self._series_at >= SERIES_INTERVAL_S:
            self._series = _Series(points=dict(s.service_series(self._chart_services)),
                                   error_count_1h=int(s.error_count_1h()))
            self._series_at = now
        self._snapshot_at = time.monotonic()

    # -- ServiceView (any thread) -----------------------------------------------------------------

    def counters(self) -> Counters:
        return self._snapshot.counters

    def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        return self._snapshot.lag

    def consuming(self) -> bool:
        # A snapshot waits for the loop's lock: none for STALL_S means the loop is stuck inside a pass.
        return self._service.consuming() and time.monotonic() - self._snapshot_at < STALL_S

    def kafka_reachable(self) -> bool:
        probed = self._kafka_ok
        return self._service.kafka_reachable() if probed is None else probed

    def clickhouse_reachable(self) -> bool | None:
        return self._clickhouse_ok if self._clickhouse is not None else self._service.clickhouse_reachable()

    def active_alerts(self) -> Sequence[Mapping[str, Any]]:
        return self._snapshot.active

    def alert_history(self) -> Sequence[Mapping[str, Any]]:
        return self._snapshot.history

    def latest_health(self) -> Sequence[Mapping[str, Any]]:
        return self._snapshot.health

    def service_series(self, limit: int) -> Mapping[str, Sequence[SeriesPoint]]:
        points = self._series.points
        return points if len(points) <= limit else dict(list(points.items())[:limit])

    def error_count_1h(self) -> int:
        return self._series.error_count_1h

    def uptime_s(self) -> float:
        return self._service.uptime_s()

    def ack(self, alert_id: str, note: str, expires_at: int | None, actor: str) -> Any:
        return self._service.ack(alert_id, note, expires_at, actor)  # tocsin.processors.ack.AckActions

    def unack(self, alert_id: str, actor: str) -> Any:
        return self._service.unack(alert_id, actor)

    def resolve(self, alert_id: str, reason: str, actor: str) -> ResolveOutcome:
        if alert_id in self._snapshot.closed_ids:
            return "already_resolved"  # answered from memory: no lock, no Kafka
        # Open here, owned by another processor, or unknown: the service decides (and publishes).
        return self._service.resolve(alert_id, reason, actor)
