"""The ``sink-notify`` service: AlertEvents from Kafka, routed and grouped, delivered to receivers, logged.

Consumer group ``notify.group_id`` (``tocsin-sink-notify``) reads the alerts
topic; the control topic is read whole by every instance (silences must
reach all of them), from the beginning at start so silences survive restarts.

The loop, each turn:

1. apply new ControlEvents (silences) from the silences and control topics;
2. poll AlertEvents; bad records go to the dead-letter topic; ask the
   notification log which (transition, receiver) pairs were already sent (a
   restart re-reads everything after the last commit) and route the rest;
3. flush due groups (``sinks/notify/routing.py``): render templates, hand each
   notification to its receiver's worker (``sinks/notify/delivery.py``), record
   silenced and inhibited transitions in the log;
4. take finished deliveries back: each attempt was logged by the worker as
   it happened; settle the transitions they covered;
5. commit, per partition, the offset below which every transition is settled
   for every receiver (sent, finally failed, muted, dropped or not routed: each one a log row);
6. pause the consumer while too many transitions are unsettled (backpressure).

On start, and when partitions are assigned, the alerts changelog is read up
to the committed offset to rebuild which alerts fire and which receivers were
told (from the log), so inhibition, resolves and repeats survive a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Any

from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError as _KafkaError
from kafka.structs import OffsetAndMetadata

from tocsin.core import kafka as kafka_api
from tocsin.core.component import Component
from tocsin.core.errors import DecodeError, KafkaError, ReadTimeout, StoreError
from tocsin.core.events import ALERT_EVENT, CONTROL_EVENT, new_event_id, now_us
from tocsin.core.heartbeat import WATCHDOG_RULE
from tocsin.schemas.codec import default_codec
from tocsin.sinks import metrics as sink_metrics
from tocsin.sinks.notify.config import NotifyConfig, NotifySettings
from tocsin.sinks.notify.delivery import Attempt, Job, ReceiverWorker, RetryPolicy, TokenBucket
from tocsin.sinks.notify.log import LogRow, NotificationLog
from tocsin.sinks.notify.receivers.base import Notification, Notifier, build_notifier
from tocsin.sinks.notify.routing import Outgoing, Router, Settlement, Transition, alert_labels
from tocsin.sinks.notify.templates import TemplateRenderer

log = logging.getLogger(__name__)

STAGE = "sink-notify"
PRUNE_INTERVAL_S = 60.0
RESTORE_TIMEOUT_S = 60.0
STATS_INTERVAL_S = 60.0
TOPIC_WAIT_S = 30.0
LOOP_EXIT_TIMEOUT_S = 30.0
# How long a revocation waits for deliveries in flight on the revoked partitions, so their next owner
# finds them in the notification log; a delivery still retrying after that may be sent by both.
HANDOVER_WAIT_S = 30.0


class OffsetTracker:
    """Per partition, the offsets still unsettled; the commit point is the lowest unsettled offset."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, OrderedDict[int, bool]] = {}
        self._commit: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, OrderedDict())[offset] = False

    def done(self, tp: TopicPartition, offset: int) -> None:
        pending = self._open.get(tp)
        if pending is None or offset not in pending:
            return
        pending[offset] = True
        while pending:
            first, finished = next(iter(pending.items()))
            if not finished:
                break
            pending.popitem(last=False)
            self._commit[tp] = first + 1

    def unsettled(self) -> int:
        return sum(sum(1 for v in p.values() if not v) for p in self._open.values())

    def to_commit(self) -> dict[TopicPartition, int]:
        return {tp: off for tp, off in self._commit.items() if self._committed.get(tp) != off}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._open.pop(tp, None)
            self._commit.pop(tp, None)
            self._committed.pop(tp, None)


class _Rebalance(AsyncConsumerRebalanceListener):
    """Hands revoked partitions over without blocking kafka-python's IO thread (where listeners run).

    The loop waits inside ``poll()`` meanwhile, so the sink's state is the listener's to read.
    Assignments and revocations are recorded for the loop, which releases and restores state.
    """

    def __init__(self, sink: NotifySink) -> None:
        self.sink = sink
        self.assigned: set[TopicPartition] = set()
        self.revoked: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        self.revoked.update(revoked)
        await self.sink.hand_over(revoked)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self.revoked.update(lost)  # evicted (a stall): others own them already, nothing may be committed

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned.update(assigned)


class NotifySink(Component):
    """Routes AlertEvents to receivers with grouping, silences, inhibition, retries and a log.

    >>> with NotifySink(cfg) as sink:   # doctest: +SKIP
    ...     sink.run()                  # until sink.stop()
    """

    name = "sink-notify"

    def __init__(self, cfg: NotifySettings, clock: Any = time.time) -> None:
        super().__init__()
        self.cfg = cfg
        self.ncfg: NotifyConfig = cfg.notify
        self.clock = clock
        self.router = Router(self.ncfg)
        self.renderer = TemplateRenderer(self.ncfg.template_dir)
        self.codec: Any = None
        self.tracker = OffsetTracker()
        self.counters: Counter[str] = Counter()
        self.notifiers: dict[str, Notifier[Any]] = {}
        self.workers: dict[str, ReceiverWorker] = {}
        self.log: NotificationLog | None = None
        self._results: queue.Queue[Job] = queue.Queue()
        self._consumer: Any = None
        self._control: Any = None
        self._producer: Any = None
        self._rebalance = _Rebalance(self)
        self._unrewound: set[TopicPartition] = set()
        """Assigned partitions whose rewind failed: their records are dropped until a rewind succeeds."""
        self._changelog: Any = None
        self._closing = False
        self._paused = False
        self._last_commit = 0.0
        self._last_prune = 0.0
        self._last_stats = time.monotonic()
        self._in_flight: dict[str, Outgoing] = {}
        self._summary: Any = None
        self._started = False
        self._loop_idle = threading.Event()
        self._loop_idle.set()
        self._loop_thread: threading.Thread | None = None
        self._collector = NotifyCollector(self)
        self._metrics_server: sink_metrics.MetricsServer | None = None
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_at = 0.0
        self.watchdog_seen_at: float | None = None  # monotonic; when the last Watchdog beat arrived
        self._kafka_down_since: float | None = None  # monotonic; since when polls fail or no broker is connected
        self._kafka_alert: dict[str, Any] | None = None  # the TocsinKafkaUnreachable firing event, once announced

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        from tocsin.core.clickhouse import connect

        self.codec = default_codec()
        client = connect(self.cfg.clickhouse)
        _migrate(client, self.cfg)
        self.log = NotificationLog(client, self.cfg.clickhouse.database, self.ncfg.log_table)
        for rc in self.ncfg.receivers:
            notifier = build_notifier(rc, self.cfg.alert_email_recipients)
            self.notifiers[rc.name] = notifier
            worker = ReceiverWorker(notifier, RetryPolicy.of(rc), TokenBucket(rc.rate_limit_per_s, rc.rate_limit_burst),
                                    on_attempt=self._on_attempt, on_done=self._results.put)
            self.workers[rc.name] = worker
            worker.start()
        topics = self.cfg.kafka.topics
        self._producer = kafka_api.producer(self.cfg.kafka)
        self._control = kafka_api.consumer(self.cfg.kafka, group_id=None)
        # Silences live on their compacted topic (and, from older releases, on the control topic).
        control_tps = [TopicPartition(topic, p) for topic in (topics.control, topics.silences)
                       for p in sorted(_wait_for_topic(self._control, topic))]
        self._control.assign(control_tps)
        self._control.seek_to_beginning(*control_tps)
        self._drain_control(until_end=True)
        if self.ncfg.inhibit_rules:
            self._open_changelog(topics.alerts)
        extra: dict[str, Any] = {"session_timeout_ms": self.ncfg.session_timeout_ms,
                                 "heartbeat_interval_ms": max(1000, self.ncfg.session_timeout_ms // 3)}
        if self.ncfg.group_instance_id:
            extra["group_instance_id"] = self.ncfg.group_instance_id
        self._consumer = kafka_api.consumer(self.cfg.kafka, group_id=self.ncfg.group_id, **extra)
        # Join only once the topic's partitions are known: a group joined before that gets no
        # assignment until the next metadata refresh (metadata.max.age.ms, five minutes).
        _wait_for_topic(self._consumer, topics.alerts)
        self._consumer.subscribe([topics.alerts], listener=self._rebalance)
        sink_metrics.register(self._collector)
        if self.ncfg.metrics_addr:
            self._metrics_server = sink_metrics.MetricsServer(self.ncfg.metrics_addr)
            self._metrics_server.start()
        if self.cfg.summary.enabled and self.cfg.monitoring_summary_recipients:
            from tocsin.sinks.notify.summary import SummaryScheduler

            self._summary = SummaryScheduler(self.cfg, self.log)
            self._summary.start()
        log.info("Notify sink started.", extra={"receivers": sorted(self.notifiers), "group": self.ncfg.group_id})

    def run(self) -> None:
        self.start()
        self._loop_idle.clear()
        self._loop_thread = threading.current_thread()
        try:
            while not self.stopping:
                self.mark_progress()
                self.step()
        finally:
            self._loop_idle.set()

    def step(self, poll_ms: int | None = None) -> None:
        """One turn of the loop (see the module docstring for the numbered steps)."""
        now = self.clock()
        # 1. silences
        self._drain_control()
        self._drain_changelog()
        # 2. alert transitions
        timeout = poll_ms if poll_ms is not None else int(self.ncfg.tick_s * 1000)
        polled = True
        try:
            batch = self._consumer.poll(timeout_ms=timeout)
        except _KafkaError as exc:  # a failed rebalance step, a broker away: the group is joined again next turn
            self.counters["poll_errors"] += 1
            log.warning("Polling the alerts topic failed; retrying.", extra={"error": f"{type(exc).__name__}: {exc}"})
            batch = {}
            polled = False
        self._watch_kafka(polled and kafka_api.broker_connected(self._consumer) is not False, now)
        touched = self._handle_rebalance()
        if touched and batch:  # rewound or not ours: these records come again from the committed offsets
            batch = {tp: recs for tp, recs in batch.items() if tp not in touched}
        if batch:
            self._intake(batch, now)
        # 3. due groups
        now = self.clock()
        outgoing, settled = self.router.flush(now)
        self._settle(settled)
        for out in outgoing:
            self._dispatch(out)
        # 4. finished deliveries
        self._collect(now)
        # 5. commit
        self._commit()
        # 6. backpressure
        self._backpressure()
        self._housekeeping(now)

    # ------------------------------------------------------------------ Kafka unreachable (announced directly)

    def _watch_kafka(self, reachable: bool, now: float) -> None:
        """An alert about Kafka cannot travel through Kafka: past the threshold, the sink routes one itself.

        The synthetic transition has no partition (nothing to commit) and is routed, grouped, silenced,
        delivered and logged like a consumed one; the resolve follows once Kafka is reachable again.
        """
        after = self.ncfg.kafka_unreachable_after_s
        if not after:
            return
        mono = time.monotonic()
        if reachable:
            self._kafka_down_since = None
            if self._kafka_alert is not None:
                down_s = (now_us() - self._kafka_alert["started_at"]) / 1e6
                log.warning("Kafka reachable again; resolving TocsinKafkaUnreachable.", extra={"down_s": down_s})
                self._route_synthetic(_kafka_resolved(self._kafka_alert), now)
                self._kafka_alert = None
            return
        if self._kafka_down_since is None:
            self._kafka_down_since = mono
        elif self._kafka_alert is None and mono - self._kafka_down_since >= after:
            self._kafka_alert = _kafka_unreachable_event(self.cfg.kafka.bootstrap_servers, self.ncfg.group_id,
                                                         mono - self._kafka_down_since)
            log.error("Kafka unreachable; notifying receivers directly.",
                      extra={"unreachable_s": round(mono - self._kafka_down_since, 1)})
            self._route_synthetic(self._kafka_alert, now)

    def _route_synthetic(self, event: dict[str, Any], now: float) -> None:
        t = Transition(event)
        self.counters["kafka_unreachable_" + event["state"]] += 1
        self._settle(self.router.add(t, now))

    def _release(self) -> None:
        self._closing = True  # the revocation at close must not wait for deliveries the stopped workers dropped
        # close() may come from another thread (a signal handler's stop, a test): let the loop finish its turn.
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_idle.wait(LOOP_EXIT_TIMEOUT_S)
        sink_metrics.unregister(self._collector)
        if self._metrics_server is not None:
            self._metrics_server.close()
        for worker in self.workers.values():
            worker.stop()
        if self._summary is not None:
            self._summary.close()
        try:
            self._collect(self.clock())
            self._commit(force=True)
        except Exception:
            log.exception("Final commit failed; the next start re-reads from the last commit.")
        for c in (self._consumer, self._control, self._changelog):
            if c is not None:
                try:
                    c.close(autocommit=False)
                except Exception:
                    log.exception("Closing a consumer failed.")
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:
                log.exception("Closing the producer failed.")

    # ------------------------------------------------------------------ control topic

    def _drain_control(self, until_end: bool = False) -> None:
        if self._control is None:
            return
        if not until_end:
            for tp, records in self._control.poll(timeout_ms=0).items():
                for rec in records:
                    self._apply_control(tp, rec)
            return
        try:
            kafka_api.read_to_end(self._control, self._apply_control, timeout_s=RESTORE_TIMEOUT_S,
                                  what=f"{self.cfg.kafka.topics.control} and {self.cfg.kafka.topics.silences}")
        except ReadTimeout as exc:
            # Degrade, and say so: the rest arrives through the ordinary drain on later passes.
            log.warning("Control topic not read to its end; silences may be incomplete for now.",
                        extra={"error": str(exc)})

    def _apply_control(self, tp: TopicPartition, rec: Any) -> None:
        # Not dead-lettered here: every instance reads the whole topic again at each start, so the
        # processor (which consumes it once, in its group) is the stage that dead-letters bad control records.
        try:
            name, event = self.codec.decode(rec.value)
            if name != CONTROL_EVENT:
                raise DecodeError(f"expected {CONTROL_EVENT} on the control topic, got {name}")
        except DecodeError as exc:
            log.warning("Undecodable control record skipped.", extra={"reason": exc.reason, "offset": rec.offset,
                                                                      "partition": tp.partition})
            self.counters["control_undecodable"] += 1
            return
        problem = self.router.silences.apply(event)
        if problem:
            log.warning("Control event ignored.", extra={"problem": problem, "event_id": event.get("event_id")})
            self.counters["control_ignored"] += 1
        elif event.get("action", "").startswith("silence"):
            self.counters[event["action"]] += 1

    # ------------------------------------------------------------------ the alert changelog (inhibition sources)

    def _open_changelog(self, topic: str) -> None:
        """Every instance reads the whole alerts topic for inhibition sources.

        The topic is keyed by fingerprint, so one service's critical and warning alerts may sit on
        partitions owned by different instances; an inhibit rule needs the source wherever it is.
        Records of partitions this instance owns are skipped here (its router sees them in order).
        """
        self._changelog = kafka_api.consumer(self.cfg.kafka, group_id=None)
        tps = [TopicPartition(topic, p) for p in sorted(_wait_for_topic(self._changelog, topic))]
        self._changelog.assign(tps)
        self._changelog.seek_to_beginning(*tps)
        try:
            kafka_api.read_to_end(self._changelog, self._apply_changelog, timeout_s=RESTORE_TIMEOUT_S,
                                  what=f"{topic} (inhibition sources)")
        except ReadTimeout as exc:
            log.warning("Alert changelog not read to its end; inhibition may be incomplete for now.",
                        extra={"error": str(exc)})

    def _drain_changelog(self) -> None:
        if self._changelog is None:
            return
        for tp, records in self._changelog.poll(timeout_ms=0).items():
            for rec in records:
                self._apply_changelog(tp, rec)

    def _apply_changelog(self, tp: TopicPartition, rec: Any) -> None:
        if rec.value is None or (self._consumer is not None and tp in self._consumer.assignment()):
            return
        try:
            name, event = self.codec.decode(rec.value)
        except DecodeError:
            return  # dead-lettered by the instance that owns the partition
        if name == ALERT_EVENT:
            labels = alert_labels(event)
            self.router.inhibitor.update(str(event["fingerprint"]), labels if event["state"] == "firing" else None)

    # ------------------------------------------------------------------ intake

    def _intake(self, batch: dict[TopicPartition, list[Any]], now: float) -> None:
        transitions: list[Transition] = []
        for tp, records in batch.items():
            for rec in records:
                self.tracker.add(tp, rec.offset)
                try:
                    name, event = self.codec.decode(rec.value)
                    if name != ALERT_EVENT:
                        raise DecodeError(f"expected {ALERT_EVENT} on the alerts topic, got {name}")
                except DecodeError as exc:
                    self._deadletter(rec, tp, exc.reason)
                    self.tracker.done(tp, rec.offset)
                    continue
                if event["rule"] == WATCHDOG_RULE:  # the dead man's switch (tocsin.app.watchdog): noted, not routed
                    self.watchdog_seen_at = time.monotonic()
                    self.tracker.done(tp, rec.offset)
                    continue
                transitions.append(Transition(event, tp, rec.offset))
        if not transitions:
            return
        sent = self._already_sent(transitions)
        if sent:
            pairs = sum(len(v) for v in sent.values())
            log.info("Skipping %d (transition, receiver) pairs the log shows as sent before a restart.", pairs)
        for t in transitions:
            self.counters["transitions"] += 1
            settled = self.router.add(t, now, sent.get(t.event_id, frozenset()))
            self._settle(settled)
            if not t.remaining:
                self.tracker.done(t.partition, t.offset)

    def _already_sent(self, transitions: list[Transition]) -> dict[str, set[str]]:
        """The restart check; while ClickHouse is down, waits rather than risk sending twice."""
        assert self.log is not None
        delay = 1.0
        while True:
            try:
                return self.log.already_sent(t.event for t in transitions if t.state in ("firing", "resolved"))
            except StoreError as exc:
                if self.stopping:
                    raise
                log.warning("Notification log unreadable; retrying before routing.", extra={"error": str(exc)})
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _deadletter(self, rec: Any, tp: TopicPartition, reason: str) -> None:
        self.counters["deadlettered"] += 1
        log.warning("Bad record sent to the dead-letter topic.", extra={"reason": reason, "offset": rec.offset})
        headers = kafka_api.deadletter_headers(reason, tp.topic, tp.partition, rec.offset, STAGE)
        self._producer.send(self.cfg.kafka.topics.deadletter, key=rec.key, value=rec.value, headers=headers)
        self._producer.flush(30)

    # ------------------------------------------------------------------ dispatch and settle

    def _dispatch(self, out: Outgoing) -> None:
        group = out.group
        rc = self.ncfg.receiver(group.receiver)
        notifier = self.notifiers[group.receiver]
        notification = Notification(out.id, group.receiver, group.key, dict(group.labels), tuple(out.alerts),
                                    external_url=self.ncfg.external_url, repeat=out.repeat,
                                    public_url=self.cfg.api.public_url)
        rendered = self.renderer.render(notification, rc.type, notifier.parts, getattr(notifier, "alert_parts", ()),
                                        group.route.templates, rc.templates)
        notification = Notification(out.id, group.receiver, group.key, dict(group.labels), tuple(out.alerts),
                                    rendered, self.ncfg.external_url, out.repeat,
                                    public_url=self.cfg.api.public_url)
        self._in_flight[out.id] = out
        self.counters["notifications"] += 1
        self.workers[group.receiver].submit(Job(notification, context=out))

    def _on_attempt(self, attempt: Attempt) -> None:
        """Runs on the receiver's thread right after each attempt: the log row is the proof of delivery."""
        out: Outgoing = attempt.job.context
        result = attempt.result
        status = "sent" if result.outcome == "sent" else ("failed" if attempt.final else "retrying")
        rc = self.ncfg.receiver(out.group.receiver)
        # A webhook's max_alerts cuts alerts[]: the alerts past it were not in what the receiver got.
        cap = getattr(rc, "max_alerts", 0)
        cut = {a.fingerprint for a in out.alerts[cap:]} if cap and status == "sent" else set()
        why_cut = f"left out of the payload: max_alerts {cap} (counted in truncatedAlerts)"
        rows = [LogRow(t.event, rc.name, rc.type, attempt.number, "dropped" if t.fingerprint in cut else status,
                       result.http_status, why_cut if t.fingerprint in cut else result.error,
                       attempt.duration_ms, out.group.key, out.id) for t in (*out.covered, *out.resent)]
        if status != "sent":
            log.warning("Notification attempt failed.", extra={
                "receiver": rc.name, "attempt": attempt.number, "final": attempt.final,
                "http_status": result.http_status, "error": result.error})
        assert self.log is not None
        try:
            self.log.write(rows)
        except StoreError:
            log.exception("Notification log write failed; a restart may repeat this delivery.")

    def _collect(self, now: float) -> None:
        while True:
            try:
                job = self._results.get_nowait()
            except queue.Empty:
                return
            out: Outgoing = job.context
            self._in_flight.pop(out.id, None)
            sent = job.result is not None and job.result.outcome == "sent"
            self.counters["sent" if sent else "failed"] += 1
            self.router.delivered(out, sent, now)
            for t in out.covered:
                self._settle_one(t, out.group.receiver)

    def _settle(self, settled: list[Settlement]) -> None:
        rows = []
        for s in settled:
            if s.status in ("silenced", "inhibited", "muted", "already_sent", "dropped", "unrouted"):
                kind = self.ncfg.receiver(s.receiver).type if s.receiver else ""  # unrouted: no receiver
                reason = s.reason or ("the log shows it sent before a restart" if s.status == "already_sent" else "")
                rows.append(LogRow(s.transition.event, s.receiver, kind, 0, s.status, error=reason,
                                   group_key=s.group_key))
            self.counters[s.status] += 1
        if rows:
            assert self.log is not None
            try:
                self.log.write(rows)
            except StoreError:
                log.exception("Recording decided transitions failed; they stay decided, unrecorded.")
        for s in settled:
            self._settle_one(s.transition, s.receiver)

    def _settle_one(self, t: Transition, receiver: str) -> None:
        t.remaining.discard(receiver)
        if not t.remaining and t.partition is not None:
            self.tracker.done(t.partition, t.offset)

    # ------------------------------------------------------------------ commit, rebalance, backpressure

    def _commit(self, force: bool = False) -> None:
        if self._consumer is None:
            return
        if not force and time.monotonic() - self._last_commit < self.ncfg.commit_interval_s:
            return
        offsets = self.tracker.to_commit()
        if not offsets:
            return
        assigned = self._consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except _KafkaError as exc:  # a rebalance in progress, a broker away: the next turn tries again
            log.warning("Offset commit failed; retrying.", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.tracker.committed(offsets)
        self._last_commit = time.monotonic()

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """In the revocation listener: deliveries in flight on ``revoked`` finish (their log rows written),
        then what is settled there is committed with ``commit_async``, so the next owner starts after it."""

        def settled() -> bool:
            self._collect(self.clock())
            return not any(t.partition in revoked for out in self._in_flight.values() for t in out.covered)

        if not await kafka_api.wait_on_io_thread(self._consumer, settled, 0 if self._closing else HANDOVER_WAIT_S):
            log.warning("Deliveries still in flight at a rebalance; the next owner may send them again.",
                        extra={"partitions": len(revoked)})
        offsets = {tp: off for tp, off in self.tracker.to_commit().items() if tp in revoked}
        if not offsets:
            return
        try:
            await self._consumer.commit_async({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except Exception as exc:  # the group moved on: the next owner re-reads more, the log check skips it
            log.warning("Offset commit at revocation failed.", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.tracker.committed(offsets)

    def _handle_rebalance(self) -> set[TopicPartition]:
        """Applies the rebalances seen in the last poll; returns the partitions revoked or assigned (records
        of theirs polled in the same turn are stale: not ours, or read again after the rewind)."""
        rb = self._rebalance
        touched = rb.revoked | rb.assigned
        if rb.revoked:
            revoked, rb.revoked = set(rb.revoked), set()
            # Forget them wholly, kept or not: kept partitions are rewound to their committed offsets
            # below, and what is read again is checked against the notification log.
            self.tracker.drop(revoked)
            self._unrewound -= revoked
            released = self.router.release(revoked)
            self.counters["rebalances"] += 1
            if self._paused:
                self._consumer.resume(*self._consumer.assignment())
                self._paused = False
            log.info("Partitions revoked; their undecided transitions go to the next owner.",
                     extra={"partitions": len(revoked), "released": released})
        if rb.assigned:
            assigned, rb.assigned = set(rb.assigned), set()
            self._unrewound |= assigned
            self._restore(assigned)
        if self._unrewound:  # the new ones, and any whose rewind failed before (tried again every turn)
            self._unrewound = self._rewind(self._unrewound & self._consumer.assignment())
            touched = touched | self._unrewound
        return touched

    def _rewind(self, tps: set[TopicPartition]) -> set[TopicPartition]:
        """Every assigned partition goes back to its committed offset; returns those that could not.

        kafka-python keeps the position of a partition kept across an eager rebalance, but the revocation
        dropped what was read past the commit: read from there, it would never be routed. What is read
        again is checked against the notification log, so nothing is sent twice.
        """
        failed: set[TopicPartition] = set()
        for tp in tps:
            try:
                committed = self._consumer.committed(tp)
                if committed is None:
                    self._consumer.seek_to_beginning(tp)  # auto_offset_reset is earliest
                else:
                    self._consumer.seek(tp, committed)
            except (_KafkaError, AssertionError, ValueError) as exc:  # a broker away, or revoked again meanwhile
                failed.add(tp)
                log.warning("Rewinding a partition after a rebalance failed; trying again next turn.",
                            extra={"partition": tp.partition, "error": f"{type(exc).__name__}: {exc}"})
        return failed

    def _restore(self, tps: set[TopicPartition]) -> None:
        """Rebuilds firing alerts of newly assigned partitions from the changelog below the committed offset."""
        committed = {tp: (self._consumer.committed(tp) or 0) for tp in tps}
        committed = {tp: off for tp, off in committed.items() if off > 0}
        if not committed:
            return
        reader = kafka_api.consumer(self.cfg.kafka, group_id=None)
        latest: dict[str, dict[str, Any]] = {}
        where: dict[str, TopicPartition] = {}

        def handle(tp: TopicPartition, rec: Any) -> None:
            if rec.value is None:
                return
            try:
                name, event = self.codec.decode(rec.value)
            except DecodeError:
                return  # dead-lettered when it was first consumed
            if name == ALERT_EVENT and event["rule"] != WATCHDOG_RULE:
                latest[event["fingerprint"]] = event
                where[event["fingerprint"]] = tp

        try:
            reader.assign(list(committed))
            reader.seek_to_beginning(*committed)
            kafka_api.read_to_end(reader, handle, timeout_s=RESTORE_TIMEOUT_S, until=committed,
                                  what=f"{self.cfg.kafka.topics.alerts} (restoring alert state)")
        except ReadTimeout as exc:
            # Degrade and say so: alerts not restored are notified again when they next change.
            self.counters["restore_incomplete"] += 1
            log.error("Alert state only partly restored from the changelog.", extra={"error": str(exc)})
        finally:
            reader.close(autocommit=False)
        firing = [e for e in latest.values() if e["state"] == "firing"]
        assert self.log is not None
        told = self.log.told_firing(firing) if firing else {}
        now = self.clock()
        for event in firing:
            self.router.restore(Transition(event, where[event["fingerprint"]]), told.get(event["fingerprint"], {}), now)
        self.counters["restored_firing"] += len(firing)
        log.info("Restored alert state from the changelog.", extra={"firing": len(firing), "partitions": len(tps)})

    def _backpressure(self) -> None:
        unsettled = self.tracker.unsettled()
        limit = self.ncfg.max_pending_transitions
        if not self._paused and unsettled >= limit:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning("Too many unsettled transitions; pausing the consumer.", extra={"unsettled": unsettled})
        elif self._paused and unsettled < limit // 2:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    def _housekeeping(self, now: float) -> None:
        if time.monotonic() - self._lag_at > sink_metrics.LAG_INTERVAL_S:
            self._lag_at = time.monotonic()
            self._lag = sink_metrics.consumer_lag(self._consumer)
        if now - self._last_prune > PRUNE_INTERVAL_S:
            self.router.silences.prune(int(now * 1e6))
            self._last_prune = now
        if time.monotonic() - self._last_stats > STATS_INTERVAL_S:
            self._last_stats = time.monotonic()
            log.info("Notify sink stats.", extra={**self.stats()})

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        return {**self.counters, **self.router.stats(), "unsettled": self.tracker.unsettled(),
                "template_failures": self.renderer.failure_count,
                "receivers": {n: {"sent": w.sent, "failed": w.failed, "attempts": w.attempts, "queued": w.queued}
                              for n, w in self.workers.items()}}

    def idle(self) -> bool:
        """Nothing unsettled, nothing in flight (tests and graceful drains wait for this)."""
        return not self._in_flight and self.tracker.unsettled() == 0 and self._results.empty()


class NotifyCollector:
    """Prometheus collector of one notify sink (``tocsin_sink_notify_*``); the sink registers it on the
    default registry while it runs (see ``sinks/metrics.py``).

    >>> registry.register(NotifyCollector(sink))   # doctest: +SKIP
    """

    def __init__(self, sink: NotifySink) -> None:
        self.sink = sink

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        prefix = "tocsin_sink_notify"
        stats = self.sink.stats()
        per = stats["receivers"]
        deliveries = CounterMetricFamily(f"{prefix}_deliveries", "Notifications finally sent or failed.",
                                         labels=["receiver", "outcome"])
        attempts = CounterMetricFamily(f"{prefix}_attempts", "Delivery attempts, retries included.",
                                       labels=["receiver"])
        retries = CounterMetricFamily(f"{prefix}_retries", "Delivery attempts after a notification's first.",
                                      labels=["receiver"])
        queued = GaugeMetricFamily(f"{prefix}_queued", "Notifications waiting for their receiver.",
                                   labels=["receiver"])
        for name, r in sorted(per.items()):
            deliveries.add_metric([name, "sent"], r["sent"])
            deliveries.add_metric([name, "failed"], r["failed"])
            attempts.add_metric([name], r["attempts"])
            # Every notification's first attempt is not a retry; one in flight has had at least one.
            retries.add_metric([name], max(0, r["attempts"] - r["sent"] - r["failed"] - r["queued"]))
            queued.add_metric([name], r["queued"])
        transitions = CounterMetricFamily(f"{prefix}_transitions", "Alert transitions consumed, by decision.",
                                          labels=["decision"])
        for decision in ("transitions", "silenced", "inhibited", "muted", "already_sent", "dropped", "unrouted",
                         "deadlettered"):
            transitions.add_metric([decision], stats.get(decision, 0))
        dedup = CounterMetricFamily(f"{prefix}_dedup_hits", "(transition, receiver) pairs the notification log "
                                    "showed as sent already (read again after a restart or rebalance), not resent.",
                                    value=stats.get("already_sent", 0))
        failures = CounterMetricFamily(f"{prefix}_template_failures",
                                       "Templates that failed to render (a fallback rendered instead).",
                                       labels=["template"])
        for key, n in sorted(self.sink.renderer.failures.items()):
            failures.add_metric([key], n)
        unsettled = GaugeMetricFamily(f"{prefix}_unsettled_transitions",
                                      "Transitions not yet decided for every receiver (offsets uncommitted).",
                                      value=stats["unsettled"])
        lag = GaugeMetricFamily(f"{prefix}_consumer_lag_messages",
                                "Messages between the sink's position and the log end, per group and partition.",
                                labels=["group", "topic", "partition"])
        for (topic, partition), n in sorted(self.sink._lag.items()):
            lag.add_metric([self.sink.ncfg.group_id, topic, str(partition)], n)
        yield from (deliveries, attempts, retries, queued, transitions, dedup, failures, unsettled, lag)


KAFKA_UNREACHABLE_RULE = "TocsinKafkaUnreachable"


def _kafka_unreachable_event(bootstrap: str, group_id: str, unreachable_s: float) -> dict[str, Any]:
    """The firing AlertEvent the sink announces itself; servers without any user:password@ part."""
    ts = now_us()
    started = ts - int(unreachable_s * 1e6)
    servers = ",".join(s.strip().rpartition("@")[2] for s in bootstrap.split(","))
    fp = f"tocsin-kafka-unreachable-{group_id}"
    return {
        "event_id": new_event_id(), "ts": ts, "alert_id": f"{fp}-{started}", "fingerprint": fp,
        "rule": KAFKA_UNREACHABLE_RULE, "severity": "critical", "previous_severity": "none", "state": "firing",
        "previous_state": "pending", "value": round(unreachable_s, 1), "threshold": None,
        "labels": {"service": "tocsin"},
        "annotations": {"summary": f"The notify sink cannot reach Kafka ({servers}); alerts published to Kafka "
                                   "cannot travel until it is back.", "bootstrap_servers": servers},
        "started_at": started, "ended_at": None, "resolved_by": None,
    }


def _kafka_resolved(firing: dict[str, Any]) -> dict[str, Any]:
    ts = now_us()
    return {**firing, "event_id": new_event_id(), "ts": ts, "severity": "none", "previous_severity": "critical",
            "state": "resolved", "previous_state": "firing", "ended_at": ts, "resolved_by": "auto"}


def _wait_for_topic(consumer: Any, topic: str, timeout_s: float = TOPIC_WAIT_S) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        if time.monotonic() > deadline:
            raise KafkaError(f"topic {topic} does not exist (or has no partitions); run `tocsin topics create`")
        time.sleep(0.2)


def _migrate(client: Any, cfg: NotifySettings) -> None:
    """Creates the notification log table if the ClickHouse sink has not yet (migrations are idempotent)."""
    from tocsin.sinks.clickhouse.schema import migrate

    migrate(client, cfg.clickhouse.database, retention_days=cfg.clickhouse.retention_days,
            cluster=cfg.sink_clickhouse.cluster)


def build(cfg: NotifySettings) -> Component:
    """``tocsin start sink-notify``."""
    return NotifySink(cfg)


__all__ = ["NotifyCollector", "NotifySink", "OffsetTracker", "build", "probe_notification", "send_probe"]


# ---------------------------------------------------------------------- test notifications (`tocsin notify test`)

PROBE_RULE = "tocsin_test_notification"


def probe_notification(receiver: str, receiver_type: str, state: str = "firing",
                       started_us: int | None = None) -> Notification:
    """A synthetic alert, marked as a test, for checking a receiver end to end (the seed's quarterly test)."""
    import uuid

    from tocsin.core.events import HOSTNAME, now_us
    from tocsin.sinks.notify.receivers.base import AlertView

    now = now_us()
    started = started_us or now
    fp = f"tocsin-test-{receiver}"
    alert = AlertView(
        fingerprint=fp, alert_id=f"{fp}-{started}", event_id=uuid.uuid4().hex, rule=PROBE_RULE, severity="warning",
        state=state, labels={"service": "tocsin", "host": HOSTNAME, "test": "true"},
        annotations={"summary": "Test notification from Tocsin; no action is needed."},
        starts_at_us=started, ends_at_us=now if state == "resolved" else None, ts_us=now,
    )
    return Notification(uuid.uuid4().hex, receiver, f"test:{receiver}", {"service": "tocsin"}, (alert,), test=True)


def send_probe(receiver_cfg: Any, cfg: NotifySettings, policy: RetryPolicy | None = None,
               sleep: Any = time.sleep) -> list[tuple[str, Any, int]]:
    """Sends a test notification through one receiver; returns ``[(what, final result, attempts)]``.

    Receivers that open incidents (PagerDuty, Alertmanager) get the resolve
    right after, so the test pages nobody for long.
    """
    from tocsin.sinks.notify.delivery import deliver

    notifier = build_notifier(receiver_cfg, cfg.alert_email_recipients)
    renderer = TemplateRenderer(cfg.notify.template_dir)
    policy = policy or RetryPolicy.of(receiver_cfg)
    steps = ["firing", "resolved"] if receiver_cfg.type in ("pagerduty", "alertmanager") else ["firing"]
    out: list[tuple[str, Any, int]] = []
    started: int | None = None
    try:
        for state in steps:
            n = probe_notification(receiver_cfg.name, receiver_cfg.type, state, started)
            started = n.alerts[0].starts_at_us
            rendered = renderer.render(n, receiver_cfg.type, notifier.parts, getattr(notifier, "alert_parts", ()),
                                       None, receiver_cfg.templates)
            n = Notification(n.id, n.receiver, n.group_key, n.group_labels, n.alerts, rendered, test=True)
            attempts: list[Attempt] = []
            result = deliver(notifier, n, policy, on_attempt=attempts.append, sleep=sleep)
            out.append((state, result, len(attempts)))
            if result.outcome != "sent":
                break
    finally:
        notifier.close()
    return out
