"""The one view of a running processor that its HTTP API and metrics read: immutable snapshots, refreshed off the loop.

``ProcessorView`` copies what the consumer loop of
``tocsin.processors.service.ProcessorService`` keeps (counters, lag, alert
tables, health entries, chart series) into a frozen ``Snapshot`` from a thread
of its own, under the loop's lock, twice a second. An HTTP request reads the
latest ``Snapshot`` only: it never waits on the loop and never touches Kafka.
The one action, ``resolve``, publishes a ControlEvent and returns without
waiting for the processor to act. The HTTP layer types what it reads as
``ServiceView`` (``snapshot()`` and ``resolve()``), so tests can serve a
``Snapshot`` they built by hand.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tocsin.core import kafka as kafka_api
from tocsin.core.events import new_event_id, now_us
from tocsin.processors import slo
from tocsin.processors.alerts import fingerprint_of
from tocsin.processors.service import ProcessorService, read_alert_changelog

log = logging.getLogger(__name__)

ResolveOutcome = Literal["accepted", "already_resolved", "unknown"]

REFRESH_INTERVAL_S = 0.5
"""How often the view thread probes the broker connection; the snapshot is copied every other time."""

SNAPSHOT_EVERY = 2
SERIES_INTERVAL_S = 5.0
"""Chart series are refreshed at the pace the dashboard polls (5 s): they cost the most to copy."""

STALL_S = 10.0
"""No completed snapshot for this long means the consumer loop holds its lock, stuck (a pass takes ~0.1 s)."""

LIVENESS_S = 30.0
"""The loop counts as consuming while it polled within this long."""

CHART_SERVICES = 12
"""Services charted at once (most errors first), so a page stays legible and its JSON bounded."""

HISTORY_LIMIT = 1000


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
    reordered: int = 0  # older than the grace but windowed: backlogs delivered after a broker outage
    dead_lettered: int = 0  # records sent to the dead-letter topic, for any reason
    decode_errors: int = 0  # records that did not decode (a subset of dead_lettered)
    live_series: int = 0  # window series held in memory now
    events_per_s: float = 0.0  # recent processing rate
    latency: LatencyHistogram = LatencyHistogram()
    evicted: int = 0  # idle or over-the-cap per-service statistics and health entries forgotten
    engine: Mapping[str, int] = field(default_factory=dict)  # every engine counter (transitions, invalid, ...)


@dataclass(frozen=True)
class SeriesPoint:
    """One chart point of one service: errors and p95 latency in the bucket starting at ``ts_us``."""

    ts_us: int
    errors: int  # ERROR and CRITICAL log events in the bucket
    error_rate_per_min: float  # errors per minute, the seed's error_rate unit
    p95_latency_ms: float | None  # p95 of the service's request latency metric; None: no samples


@dataclass(frozen=True)
class Snapshot:
    """The running processor at one moment, as the HTTP API shows it. Alerts and health events are the Avro
    records (``AlertEvent``, ``HealthEvent`` field names, timestamps in int microseconds).

    ``polled_at`` and ``taken_at`` are ``time.monotonic()`` instants: ``consuming()`` ages them at read time, so
    a loop that stopped polling, or holds its lock so no snapshot completes, shows at once.
    """

    counters: Counters = Counters()
    lag: Mapping[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> behind the log end
    active: Sequence[Mapping[str, Any]] = ()  # the latest AlertEvent of every open incident
    history: Sequence[Mapping[str, Any]] = ()  # AlertEvents this process emitted, newest first
    health: Sequence[Mapping[str, Any]] = ()  # the latest HealthEvent per (service, check)
    series: Mapping[str, Sequence[SeriesPoint]] = field(default_factory=dict)  # last hour, most errors first
    error_count_1h: int = 0  # ERROR and CRITICAL log events over the last hour, all services
    kafka: bool = True  # the broker answers (cached verdict, never probed per request)
    fetching: bool = True  # the consumer's fetches succeed (false while they fail: idle clocks are held)
    clickhouse: bool | None = None  # None: this process does not use ClickHouse
    running: bool = True  # started and not stopping
    polled_at: float = math.inf
    taken_at: float = math.inf
    started_at_us: int = 0
    partitions: Sequence[str] = ()  # "topic:partition" assigned here
    replaying: Sequence[str] = ()  # assigned and still replaying after an assignment
    takeover_ms: Mapping[str, float] = field(default_factory=dict)
    rules: Sequence[str] = ()
    closed_ids: frozenset[str] = frozenset()  # alert ids in the history that are not open: resolve answers at once
    slo: Sequence[Mapping[str, Any]] = ()  # error budget per objective and group (tocsin.processors.slo.budgets)
    slo_coverage: str = "no slo rules"  # store+stream, or why the budgets cover only the replayed stream

    def consuming(self, now: float | None = None) -> bool:
        """True while the loop runs, polled within ``LIVENESS_S`` and a snapshot completed within ``STALL_S``."""
        now = time.monotonic() if now is None else now
        return self.running and now - self.polled_at < LIVENESS_S and now - self.taken_at < STALL_S

    def uptime_s(self) -> float:
        return (now_us() - self.started_at_us) / 1e6 if self.started_at_us else 0.0


@runtime_checkable
class ServiceView(Protocol):
    """What the HTTP layer reads: the latest snapshot (memory only) and the one action."""

    def snapshot(self) -> Snapshot:
        """The latest snapshot; cheap and thread-safe."""
        ...

    def resolve(self, alert_id: str, reason: str, actor: str) -> ResolveOutcome:
        """Publishes a ``resolve`` ControlEvent for an open alert.

        ``unknown`` when no incident has that id; ``already_resolved`` (and no
        event) when it is closed already, so resolving twice is harmless.
        """
        ...


class ProcessorView:
    """The ``ServiceView`` of a running ``ProcessorService``: snapshots copied by a thread of its own.

    The loop holds its lock for a whole pass; this view's thread takes it
    twice a second to copy, so a request only reads memory::

        view = ProcessorView(service)          # after service.start()
        server, thread = serve(create_app(view, cfg), cfg)
        ...
        stop(server, thread); view.close()

    ``clickhouse`` is an optional cached verdict (for a process that also
    writes ClickHouse, such as the sink's last insert outcome); it runs in the
    view thread, so it must not block. ``background=False`` starts no thread:
    ``refresh()`` by hand (tests).
    """

    def __init__(self, service: ProcessorService, *, clickhouse: Callable[[], bool | None] | None = None,
                 chart_services: int = CHART_SERVICES, background: bool = True) -> None:
        self._service = self.service = service
        self._clickhouse = clickhouse
        self._chart_services = chart_services
        self._snapshot = Snapshot(taken_at=-math.inf)
        self._series: tuple[Mapping[str, Sequence[SeriesPoint]], int] = ({}, 0)
        self._series_at = -math.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._refresh_loop, name="tocsin-http-view", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops the refresh thread; calling it twice is harmless."""
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(STALL_S)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- the refresh thread ---------------------------------------------------------------------

    def _refresh_loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self.refresh(full=tick % SNAPSHOT_EVERY == 0)
            except Exception:  # a failing copy must not end the API's view of the processor
                log.exception("refreshing the HTTP view failed")
            tick += 1
            self._stop.wait(REFRESH_INTERVAL_S)

    def _verdicts(self) -> dict[str, Any]:
        s = self._service
        probed = kafka_api.broker_connected(s.consumer)
        return {"kafka": s.kafka_ok if probed is None else probed, "fetching": s.fetching(),
                "clickhouse": self._clickhouse() if self._clickhouse is not None else None,
                "running": s.started_at_us > 0 and not s.stopping, "polled_at": s.last_poll}

    def refresh(self, full: bool = True) -> Snapshot:
        """Probes the broker connection, then (``full``) copies what the API shows; returns the new snapshot."""
        verdicts = self._verdicts()
        if not full:
            self._snapshot = dataclasses.replace(self._snapshot, **verdicts)
            return self._snapshot
        s = self._service
        now = time.monotonic()
        series_due = now - self._series_at >= SERIES_INTERVAL_S
        with s.lock:  # waits for the loop's pass to end: a stuck loop leaves taken_at to age
            engine = s.engine
            history = tuple(dict(r) for r in list(s.recent)[:HISTORY_LIMIT])
            active = tuple(engine.open_records()) if engine else ()
            health = tuple(dict(v) for _, v in sorted(engine.latest_health.items())) if engine else ()
            c = engine.counters if engine else None
            counters = Counters(
                consumed=dict(s.consumed), processed=dict(s.processed), late=c.late if c else 0,
                dead_lettered=c.deadlettered if c else 0, decode_errors=c.decode_errors if c else 0,
                live_series=engine.series_count() if engine else 0, events_per_s=s.events_per_s(now),
                latency=LatencyHistogram(s.latency.cumulative(), s.latency.n, s.latency.sum_s),
                evicted=c.evicted if c else 0, reordered=c.reordered if c else 0,
                engine=c.as_dict() if c else {})
            parts = tuple(sorted(f"{k[0]}:{k[1]}" for k in (engine.partitions if engine else {})))
            replaying = tuple(sorted(f"{k[0]}:{k[1]}" for k, p in (engine.partitions.items() if engine else [])
                                     if p.replay_until >= 0))
            lag = dict(s.lag)
            takeover = dict(s.takeover)
            budgets = tuple(slo.budgets(engine.partitions.values())) if engine else ()
            if series_due and engine:
                points = engine.service_points(self._chart_services)
                self._series = (
                    {svc: [SeriesPoint(ts_us=ts, errors=n, error_rate_per_min=float(n), p95_latency_ms=p95)
                           for ts, n, p95 in pts] for svc, pts in points.items()},
                    engine.error_count())
                self._series_at = now
        active_ids = frozenset(str(a.get("alert_id")) for a in active)
        self._snapshot = Snapshot(
            counters=counters, lag=lag, active=active, history=history, health=health, series=self._series[0],
            error_count_1h=self._series[1], started_at_us=s.started_at_us, partitions=parts, replaying=replaying,
            takeover_ms=takeover, rules=tuple(r.name for r in s.rules.rules) if s.rules else (),
            closed_ids=frozenset(str(a.get("alert_id")) for a in history) - active_ids,
            slo=budgets, slo_coverage=s.slo_coverage,
            taken_at=time.monotonic(), **verdicts)
        return self._snapshot

    # -- the action ---------------------------------------------------------------------------

    def reload_rules(self) -> Mapping[str, Sequence[str]]:
        """Reloads the rule file (the service's; raises RuleError and keeps the old rules)."""
        return self._service.reload_rules()  # type: ignore[attr-defined]

    def ack(self, alert_id: str, note: str, expires_at: int | None, actor: str) -> Any:
        return self._service.ack(alert_id, note, expires_at, actor)  # tocsin.processors.ack.AckActions

    def unack(self, alert_id: str, actor: str) -> Any:
        return self._service.unack(alert_id, actor)

    def resolve(self, alert_id: str, reason: str, actor: str) -> ResolveOutcome:
        """Publishes a resolve ControlEvent if ``alert_id`` is open; the owning process applies it."""
        if alert_id in self._snapshot.closed_ids:
            return "already_resolved"  # answered from memory: no lock, no Kafka
        fp = fingerprint_of(alert_id)
        if not fp:
            return "unknown"
        s = self._service
        state = None
        with s.lock:
            found = s.engine.by_fingerprint.get(fp) if s.engine else None
            if found is not None and found[1].tracker is not None and found[1].tracker.alert_id == alert_id:
                state = found[1].tracker.state
        if state is None:  # owned by another process, or already forgotten here: ask the changelog
            latest = read_alert_changelog(s.cfg).get(fp)
            if latest is None:
                return "unknown"
            if latest["alert_id"] != alert_id:
                try:
                    older = int(alert_id.rpartition("-")[2]) < latest["started_at"]
                except ValueError:
                    older = False
                return "already_resolved" if older else "unknown"
            state = latest["state"]
        if state not in ("pending", "firing"):
            return "already_resolved"
        self._publish_resolve(alert_id, fp, actor, reason)
        return "accepted"

    def _publish_resolve(self, alert_id: str, fp: str, actor: str, reason: str) -> str:
        """Sends a manual resolve to the control topic and waits for the broker; returns the ControlEvent's id."""
        s = self._service
        record = {"event_id": new_event_id(), "ts": now_us(), "action": "resolve", "alert_id": alert_id,
                  "fingerprint": fp, "silence_id": None, "matchers": [], "ends_at": None, "reason": reason,
                  "actor": actor}
        s._send_control(record)  # the service's control-topic send, as ack and unack use
        return record["event_id"]
