"""``ProcessorService``: the loop (steps 1-6 of the package docstring), its lifecycle and commits."""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError as _KafkaError
from kafka.structs import OffsetAndMetadata

from tocsin.core import kafka as kafka_api
from tocsin.core.component import Component
from tocsin.core.errors import DecodeError, KafkaError, RuleError
from tocsin.core.events import (
    ALERT_EVENT,
    HEALTH_EVENT,
    LOG_EVENT,
    METRIC_EVENT,
    now_us,
)
from tocsin.core.validation import record_reason
from tocsin.processors import baseline, slo
from tocsin.processors.alerts import Transition
from tocsin.processors.config import ProcessorSettings
from tocsin.processors.engine import Engine, PartitionState
from tocsin.processors.fetches import FetchWatch
from tocsin.processors.outbox import Outbox, Positions
from tocsin.processors.rules import RuleSet, load_rules
from tocsin.processors.service.control import RECENT_CONTROL, Control
from tocsin.processors.service.recovery import Recovery, _Listener
from tocsin.processors.service.telemetry import RATE_WINDOW_S, LatencyCounts, Telemetry
from tocsin.schemas.codec import default_codec

log = logging.getLogger("tocsin.processors.service")

COMMIT_INTERVAL_S = 1.0
FLUSH_WAIT_S = 0.5
"""Longest the loop waits for the producer's acknowledgements in one commit step (then it polls again)."""
FINAL_FLUSH_S = 30.0
COMMIT_TIMEOUT_MS = 10_000
SEND_BLOCK_MS = 5_000
"""Longest a send waits for metadata or buffer space (kafka-python's default is 60 s of a stalled loop)."""
DEADLETTER_MAX_BYTES = 1_000_000
"""Dead-letter values are cut to this: under Kafka's default max.message.bytes (1 MiB) with the headers."""
EVICT_INTERVAL_S = 10.0
"""How often idle per-service statistics and health entries are looked for (only the oldest are read)."""
POLL_TIMEOUT_MS = 100
GC_THRESHOLDS = (50_000, 20, 100)
RECORD_OF_SOURCE = {"logs": LOG_EVENT, "metrics": METRIC_EVENT, "health": HEALTH_EVENT}


class ProcessorService(Recovery, Control, Telemetry, Component):
    """The stream processor as a running component: ``start()``, ``run()`` (the loop), ``close()``.

    What its HTTP API shows is read by ``tocsin.processors.view.ProcessorView``, which copies the public
    attributes below under ``lock`` (the loop holds it for a whole pass and writes them only then):
    ``engine``, ``recent`` (AlertEvents emitted here, newest first), ``consumed``/``processed`` per topic,
    ``latency``, ``lag`` (per partition, records behind the log end), ``takeover`` (ms to rebuild a partition),
    ``rules``; and, without the lock, the loop's liveness: ``started_at_us``, ``last_poll``, ``kafka_ok``.
    With several processes each sees only the partitions (services) it owns.
    """

    name = "processor"

    def __init__(self, cfg: ProcessorSettings, *, wall: Callable[[], int] = now_us) -> None:
        super().__init__()
        self.cfg = cfg
        self.pcfg = cfg.processor
        self.wall = wall
        t = cfg.kafka.topics
        self.source_of = {t.logs: "logs", t.metrics: "metrics", t.health: "health"}
        self.topic_of = {v: k for k, v in self.source_of.items()}
        self.lock = threading.RLock()
        self.rules: RuleSet | None = None
        self.engine: Engine | None = None
        self.consumer: Any = None
        self._control: Any = None
        self.producer: Any = None
        self.codec = default_codec()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.pcfg.recent_transitions)
        self._resolves: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_CONTROL)
        self.lag: dict[tuple[str, int], int] = {}
        self.consumed: collections.Counter[str] = collections.Counter()
        self.processed: collections.Counter[str] = collections.Counter()
        self.latency = LatencyCounts()
        self.last_poll = 0.0
        self.kafka_ok = True
        self._positions: dict[tuple[str, int], int] = {}
        self._record_ts: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._nparts: dict[str, int] = {}
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self.started_at_us = 0
        self._last_commit = 0.0
        self._last_tick = 0.0
        self._last_heartbeat = 0.0
        self.takeover: dict[str, float] = {}
        self._assigned_mono: dict[tuple[str, int], float] = {}
        self._pending_lock = threading.Lock()
        self._pending_assignment: set[TopicPartition] | None = None
        self.fetches: FetchWatch | None = None
        self._reload_requested = False
        self._previous_sighup: Any = None
        self.outbox: Outbox = Outbox(None)
        self.changelog_retries = 0
        self.slo_coverage = "no slo rules"
        self.spike_coverage = "no spike rules"
        """What the spike baselines cover: store+stream, or why only the replay."""
        """What the slo error budgets cover: store+stream, or why only the replayed stream."""
        self._last_evict = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        p = self.pcfg
        # Windows and trackers are long-lived objects: collect the young generation less often so the
        # collector does not re-walk them every few hundred events (CPython's default is 700, 10, 10).
        gc.set_threshold(*GC_THRESHOLDS)
        self.rules = load_rules(p.rules_file)
        self.engine = Engine(
            self.rules, eval_interval_us=int(p.eval_interval_s * 1e6), grace_us=int(p.grace_s * 1e6),
            max_future_us=int(p.max_future_s * 1e6), max_catchup_steps=p.max_catchup_steps,
            idle_evict_us=int(p.idle_series_evict_s * 1e6), wall=self.wall,
            max_services=p.max_services, max_health=p.max_health_entries)
        self.started_at_us = now_us()
        spikes = [r for r in self.rules.rules if r.is_spike]
        if spikes:  # baseline periods before the replay's start come from the store, if it has them
            for r in spikes:
                r.spike_seeds = {}  # the replay's horizon when the store holds the baselines
            span_us = self.rules.horizon_us + self.engine.grace_us + int(p.replay_margin_s * 1e6)
            self.spike_coverage = baseline.seed_from_store(self.cfg.clickhouse, spikes,
                                                           self.started_at_us - span_us, log)
        if any(r.is_slo for r in self.rules.rules):  # budgets before the replay's start come from the store
            span_us = self.rules.horizon_us + self.engine.grace_us + int(p.replay_margin_s * 1e6)
            self.slo_coverage = slo.seed_from_store(self.cfg.clickhouse, self.rules.rules,
                                                    self.started_at_us - span_us, log)
        kcfg = self.cfg.kafka
        delivery_ms = int(p.delivery_timeout_s * 1000)
        # Not idempotent: kafka-python 3.0's idempotent producer fails every later batch of a partition once
        # one batch failed, so a record sent again would never arrive. One request in flight keeps the order
        # across retries instead; a duplicate after a lost acknowledgement carries the same event_id.
        self.producer = kafka_api.producer(kcfg, linger_ms=2, delivery_timeout_ms=delivery_ms,
                                           request_timeout_ms=min(30_000, delivery_ms - 2),
                                           enable_idempotence=False, max_in_flight_requests_per_connection=1,
                                           max_block_ms=SEND_BLOCK_MS)
        self.outbox = Outbox(self.producer)
        self.consumer = kafka_api.consumer(
            kcfg, group_id=p.group_id, max_poll_records=p.max_poll_records,
            session_timeout_ms=p.session_timeout_ms, heartbeat_interval_ms=max(1000, p.session_timeout_ms // 4),
            auto_offset_reset="earliest" if p.start_without_commit == "earliest" else "latest")
        self.consumer.subscribe(list(self.source_of), listener=_Listener(self))
        self.fetches = FetchWatch(self.consumer, min_hold_s=p.grace_s)
        self._start_control()
        if self.engine.patterns:
            self._restore_patterns()
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            # SIGHUP reloads the rule file (as Prometheus does); the loop does it between passes.
            self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
        log.info("processor started", extra={"rules": len(self.rules.rules), "group": p.group_id})

    def _publish_patterns(self) -> None:
        """Seen patterns to the compacted patterns topic, keyed by service, pattern id and rule (flushed
        with the transitions, before the offsets that produced them are committed)."""
        topic = self.cfg.kafka.topics.patterns
        for rule, service, pid, ts in self.engine.take_pattern_changes():  # type: ignore[union-attr]
            key = f"{service}\x1f{pid}\x1f{rule}".encode()
            value = None if ts is None else json.dumps(
                {"rule": rule, "service": service, "pattern_id": pid, "last_seen_us": ts}).encode()
            self.outbox.send(topic, key, value, [])  # confirmed before the offsets that saw it are committed

    def _on_sighup(self, _signum: int, _frame: object) -> None:
        self._reload_requested = True  # a signal handler must not take the loop's lock

    def reload_rules(self) -> dict[str, list[str]]:
        """Reads the rule file again and swaps it in (``Engine.reload``); returns what changed.

        Raises ``RuleError`` (the same problems as ``tocsin rules check``) and keeps the old rules
        when the file does not validate. The file is read outside the loop's lock.
        """
        rules = load_rules(self.pcfg.rules_file)
        with self.lock:
            assert self.engine is not None
            summary = self.engine.reload(rules)
            self.rules = rules
        log.info("rules reloaded", extra={k: ",".join(v) for k, v in summary.items() if k != "unchanged"})
        return summary

    def run(self) -> None:
        if self.engine is None:
            self.start()
        while not self.stopping:
            try:
                self.run_once()
            except (_KafkaError, KafkaError) as exc:
                log.warning("kafka error in the processing loop; retrying", extra={"error": str(exc)})
                self._stop.wait(1.0)

    def run_once(self, poll_timeout_ms: int = POLL_TIMEOUT_MS) -> int:
        """One pass of the loop (steps 1-6 of the module docstring); returns the records handled."""
        if self._reload_requested:
            self._reload_requested = False
            try:
                self.reload_rules()
            except RuleError as exc:
                log.error("rule reload failed; the old rules stay", extra={"problems": " | ".join(exc.problems)})
        try:
            batch = self.consumer.poll(timeout_ms=poll_timeout_ms)  # 1. (rebalances happen in here)
        except _KafkaError:
            self.kafka_ok = False
            raise
        self.kafka_ok = True
        self.last_poll = time.monotonic()
        n = 0
        with self._pending_lock:
            assigned, self._pending_assignment = self._pending_assignment, None
        changelog: dict[str, dict[str, Any]] = {}
        while assigned:
            # Outside the lock: the read can take a while, and the HTTP view (and /health) must not wait for it.
            changelog = self._read_changelog()
            with self._pending_lock:  # a newer assignment came meanwhile: read again, for that one
                newer, self._pending_assignment = self._pending_assignment, None
            if newer is None:
                break
            assigned = newer
        with self.lock:
            engine = self.engine
            assert engine is not None
            if self.fetches is not None:  # after an outage: backlogs behind fresh events are windowed, not late
                backlog_s = self.fetches.backlog_s()
                if backlog_s or engine.holding:
                    engine.hold_backlog(int(backlog_s * 1e6))
            if assigned is not None:
                self._apply_assignment(assigned, changelog)
                batch = {}  # positions were reset: these records come again from the seeks
            for tp, records in batch.items():
                key = (tp.topic, tp.partition)
                ps = engine.partitions.get(key)
                if ps is None:
                    continue  # revoked while this batch was in flight
                n += self._handle_batch(ps, tp, records)  # 2. 3.
            mono = time.monotonic()
            if mono - self._last_tick >= self.pcfg.tick_interval_s:
                since, self._last_tick = self._last_tick, mono
                self._poll_control()  # 4.
                self._tick(since)
                if mono - self._last_evict >= EVICT_INTERVAL_S:
                    self._last_evict = mono
                    engine.evict_idle()
            self._publish(engine.take_transitions())  # 5.
            if engine.patterns:
                self._publish_patterns()
            if n:
                self._rate.append((mono, n))
            while self._rate and self._rate[0][0] < mono - RATE_WINDOW_S:
                self._rate.popleft()
        # Outside the lock: a flush can wait on a broker, and the HTTP API's accessors must not wait with it.
        # Only this thread changes what the commit reads (positions, partitions).
        if mono - self._last_commit >= COMMIT_INTERVAL_S:
            self._flush_and_commit()  # 6.
            self._update_lag()
        if self.pcfg.heartbeat_interval_s and mono - self._last_heartbeat >= self.pcfg.heartbeat_interval_s:
            self._last_heartbeat = mono
            self._heartbeat()
        return n

    def _release(self) -> None:
        if self._previous_sighup is not None and threading.current_thread() is threading.main_thread():
            # Python sets handlers only on the main thread; closed from another one (a supervisor's stop
            # thread), the stale handler stays: it only sets a flag no loop reads any more.
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        with self.lock:
            try:
                if self.consumer is not None and self.engine is not None:
                    self._publish(self.engine.take_transitions())
                    if self.engine.patterns:
                        self._publish_patterns()
                    self._flush_and_commit(FINAL_FLUSH_S)
            except Exception:
                log.exception("final commit failed")
        # Outside the lock: closing runs the revocation listener on the consumer's IO thread.
        for client in (self.consumer, self._control):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.exception("closing a consumer failed")
        if self.producer is not None:
            self.producer.close(timeout=10)

    # -- records ------------------------------------------------------------------------------

    def _handle_batch(self, ps: PartitionState, tp: TopicPartition, records: list[Any]) -> int:
        engine = self.engine
        assert engine is not None
        counters = engine.counters
        decode = self.codec.decode_events
        source = ps.source
        expected = RECORD_OF_SOURCE[source]
        check = engine.check
        ingest = engine.ingest
        policy = self.pcfg.future_policy
        wall = self.wall()
        processed_before = counters.processed
        counters.consumed += len(records)
        for m in records:
            try:
                name, events = decode(m.value)  # one event, or a LogBatch/MetricBatch of one service
            except DecodeError as exc:
                counters.decode_errors += 1
                self._deadletter(m, exc.reason, "decode")
                continue
            if name != expected:  # decode_events unpacked batches: the item name is the record's
                counters.invalid += 1
                self._deadletter(m, record_reason(source, name) or "", "validate")
                continue
            batched = len(events) > 1
            for rec in events:
                try:
                    reason = check(source, rec, policy, wall)
                    if reason is None:
                        ingest(ps, source, rec)
                        continue
                except Exception as exc:  # a record the checks missed must not stop the processor
                    log.exception("processing a record failed")
                    reason = f"processing failed: {type(exc).__name__}: {exc}"
                counters.invalid += 1
                # A bad event inside a good batch goes alone, re-encoded: its neighbours were processed.
                self._deadletter(m, reason, "validate", value=self.codec.encode(name, rec) if batched else None)
        last = records[-1]
        key = ps.key
        self.consumed[tp.topic] += len(records)
        self.processed[tp.topic] += counters.processed - processed_before
        self.latency.observe(max(0.0, time.time() - last.timestamp / 1000))
        self._positions[key] = last.offset + 1
        self._record_ts[key] = last.timestamp
        if ps.replay_until >= 0 and last.offset + 1 >= ps.replay_until:
            ps.replay_until = -1
            self._caught_up(key)
        return len(records)

    def _caught_up(self, key: tuple[str, int]) -> None:
        started = self._assigned_mono.pop(key, None)
        if started is not None:
            ms = (time.monotonic() - started) * 1000
            self.takeover[f"{key[0]}:{key[1]}"] = ms
            log.info("partition rebuilt", extra={"partition": f"{key[0]}:{key[1]}", "takeover_ms": round(ms)})

    def _deadletter(self, m: Any, error: str, stage: str, value: bytes | None = None) -> None:
        """Step 2's dead letter: never raises, so the rest of its batch is processed (the outbox sends it again
        if it fails). A value larger than the dead-letter topic takes is cut, and a header says so."""
        self.engine.counters.deadlettered += 1  # type: ignore[union-attr]
        value = (m.value if value is None else value) or b""
        headers = kafka_api.deadletter_headers(error, m.topic, m.partition, m.offset, stage)
        if len(value) > DEADLETTER_MAX_BYTES:
            headers.append(("truncated_from_bytes", str(len(value)).encode()))
            value = value[:DEADLETTER_MAX_BYTES]
        self.outbox.send(self.cfg.kafka.topics.deadletter, m.key, value, headers)

    def _publish(self, transitions: list[Transition]) -> None:
        topic = self.cfg.kafka.topics.alerts
        for t in transitions:
            record = t.as_record()
            self.outbox.send_ordered(topic, t.fingerprint.encode(), self.codec.encode(ALERT_EVENT, record))
            self.recent.appendleft(record)
            log.info("alert transition", extra={"alert_id": t.alert_id, "state": t.state, "severity": t.severity})

    def _positions_now(self) -> Positions:
        return {key: (pos, self._record_ts.get(key, -1)) for key, pos in self._positions.items()}

    def _flush_and_commit(self, flush_s: float = FLUSH_WAIT_S) -> None:
        """Step 6: the offsets whose transitions and dead letters the broker acknowledged, record by record.

        Waits at most ``flush_s`` for the acknowledgements: while the broker is away the loop goes on
        polling (and reporting) and commits nothing; a record that failed is sent again (``Outbox``).
        """
        self._last_commit = time.monotonic()
        ready = self.outbox.pump(self._positions_now)
        if ready is None and flush_s > 0:
            with contextlib.suppress(_KafkaError):  # some not acknowledged in time: the futures say which
                self.producer.flush(timeout=flush_s)
            ready = self.outbox.pump(self._positions_now)
        if ready is None:
            return  # something is unacknowledged: nothing is committed past it
        offsets = {}
        engine = self.engine
        for key, (pos, rts) in ready.items():
            if engine is not None and key not in engine.partitions:
                continue
            if pos <= self._committed.get(key, -1):
                continue  # replaying below what the previous owner committed, or committed already
            offsets[TopicPartition(*key)] = OffsetAndMetadata(pos, json.dumps({"rts": rts}), -1)
        if offsets:
            try:
                self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            except _KafkaError as exc:
                log.warning("committing offsets failed; retrying", extra={"error": str(exc)})
                return
            for tp, om in offsets.items():
                self._committed[(tp.topic, tp.partition)] = om.offset

    # -- time ---------------------------------------------------------------------------------

    def _tick(self, since: float) -> None:
        """Processing-time tick: move the clock of caught-up, quiet partitions to the wall clock (absence, timers).

        Only a partition known to be caught up moves: it is not replaying, a fetch from its leader succeeded
        since the previous tick (``since``) and its position is at the high-water mark that fetch reported; and
        not while the fetches are held after an outage (``FetchWatch.holding``). While the broker cannot be
        read nothing moves, so no event is counted late and no absence fires because of the outage.
        """
        engine = self.engine
        fetches = self.fetches
        if fetches is not None and fetches.holding():
            return
        wall = self.wall()
        consumer = self.consumer
        for key, ps in engine.partitions.items():  # type: ignore[union-attr]
            if ps.replay_until >= 0:
                continue
            tp = TopicPartition(*key)
            if fetches is not None and not fetches.ok_since(since, self._leader(tp)):
                continue
            hw, pos = consumer.highwater(tp), self._positions.get(key)
            if hw is None or pos is None or hw > pos:
                continue
            engine.advance_idle(ps, wall)  # type: ignore[union-attr]

    def _leader(self, tp: TopicPartition) -> Any:
        try:
            return self.consumer._client.cluster.leader_for_partition(tp)
        except Exception:  # kafka-python internals moved: any broker's fetch counts
            return None

    def fetching(self) -> bool:
        """The consumer's fetches succeed (see ``FetchWatch.fetching``)."""
        return self.fetches.fetching() if self.fetches is not None else True


def build(cfg: ProcessorSettings) -> ProcessorService:
    """``tocsin start processor``."""
    return ProcessorService(cfg)
