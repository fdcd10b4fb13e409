"""The processor service: Kafka in (logs, metrics, health, control), alert transitions out, crash-safe.

One loop, one thread (``run()``); each pass follows these steps:

1. poll the input topics (consumer group ``tocsin-processor``); a
   rebalance happens while this call waits (see recovery below);
2. decode and validate every record: a decode failure, a record of the
   wrong schema or absurd values go to the dead-letter topic with headers
   (error, source topic/partition/offset, stage) and processing continues;
3. feed the engine (windows, evaluation at event-time instants);
4. every ``tick_interval_s``: apply manual resolves from the control topic
   and run the processing-time tick on caught-up partitions (a fetch
   succeeded since the last tick and the position is at the high-water mark
   it reported; none while fetches fail, and for as long again as an outage
   lasted: ``tocsin.processors.fetches``), so event time never follows the
   wall clock while the broker cannot be read;
5. produce the transitions to the alerts topic, keyed by fingerprint;
6. at most once a second, outside the lock the HTTP view takes: commit the
   input offsets whose transitions and dead letters the broker acknowledged,
   record by record (``tocsin.processors.outbox``: a failed record is sent
   again, in order), each with the Kafka timestamp of the last record
   processed as commit metadata. Nothing is committed before its
   consequences are on the alerts topic.

Recovery without a state store, on start and on every assignment (the
listener runs on kafka-python's IO thread, which may not call the
consumer: on revocation it flushes the producer, so every transition is on
the alerts topic before any new owner reads it, and it notes the new
assignment; the loop applies it after ``poll`` returns, dropping that poll's
records, which are fetched again from the seeks below):

1. read the compacted alerts topic to its end; adopt the latest event of
   every fingerprint whose service lives in a newly assigned partition
   (agents key by service with the default murmur2 partitioner, so the
   partition of a service is computed, not guessed);
2. seek each new partition to ``committed record time - replay span``
   (``offsets_for_times``); the span is the longest window plus its timers
   plus grace, so windows and timers are whole again when the replay reaches
   the committed offset;
3. evaluation skips instants whose window is not yet whole (after a
   mid-log seek), and a tracker emits nothing at or before its restored
   transition: recomputed transitions are not emitted twice, lost ones are;
4. no wall-clock tick touches a partition until it has caught up;
5. re-apply recent manual resolves (the control topic is read by every
   process, since it is keyed by fingerprint, not by service).
Partitions kept across an (eager) rebalance keep their state unless their
committed offset moved past ours (someone else owned them meanwhile).
"""

from __future__ import annotations

import bisect
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

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError as _KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from tocsin.core import kafka as kafka_api
from tocsin.core.component import Component
from tocsin.core.errors import DecodeError, KafkaError, ReadTimeout, RuleError
from tocsin.core.events import (
    ALERT_EVENT,
    CONTROL_EVENT,
    HEALTH_EVENT,
    HOSTNAME,
    LOG_EVENT,
    METRIC_EVENT,
    new_event_id,
    now_us,
)
from tocsin.core.validation import record_reason
from tocsin.processors import ack as acks
from tocsin.processors import baseline, slo
from tocsin.processors.alerts import Transition, fingerprint_of
from tocsin.processors.config import ProcessorSettings
from tocsin.processors.engine import Engine, PartitionState
from tocsin.processors.fetches import FetchWatch
from tocsin.processors.outbox import Outbox, Positions
from tocsin.processors.rules import Rule, RuleSet, load_rules
from tocsin.schemas.codec import default_codec

log = logging.getLogger(__name__)

SERVICE_NAME = "tocsin-processor"
COMMIT_INTERVAL_S = 1.0
FLUSH_WAIT_S = 0.5
"""Longest the loop waits for the producer's acknowledgements in one commit step (then it polls again)."""
FINAL_FLUSH_S = 30.0
COMMIT_TIMEOUT_MS = 10_000
SEND_BLOCK_MS = 5_000
"""Longest a send waits for metadata or buffer space (kafka-python's default is 60 s of a stalled loop)."""
DEADLETTER_MAX_BYTES = 1_000_000
"""Dead-letter values are cut to this: under Kafka's default max.message.bytes (1 MiB) with the headers."""
CHANGELOG_BACKOFF_S = 1.0
EVICT_INTERVAL_S = 10.0
"""How often idle per-service statistics and health entries are looked for (only the oldest are read)."""
CHANGELOG_BACKOFF_MAX_S = 30.0
POLL_TIMEOUT_MS = 100
RATE_WINDOW_S = 10.0
RECENT_CONTROL = 10_000
GC_THRESHOLDS = (50_000, 20, 100)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RECORD_OF_SOURCE = {"logs": LOG_EVENT, "metrics": METRIC_EVENT, "health": HEALTH_EVENT}


def partition_for(key: str, partitions: int) -> int:
    """The partition kafka-python's (and Java's) default partitioner gives a key: murmur2, positive, modulo."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: it may not call the consumer, so it only flushes and takes notes."""

    def __init__(self, service: ProcessorService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.service._revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service._assigned(assigned)


class ProcessorService(Component):
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

    def _restore_patterns(self) -> None:
        """new_pattern rules: the seen set from the compacted patterns topic (read to its end), so a restart
        starts no new learning period for the services it knows."""
        latest: dict[bytes, tuple[str, str, str, int]] = {}

        def handle(_tp: TopicPartition, m: Any) -> None:
            if m.key is None:
                return
            if m.value is None:
                latest.pop(m.key, None)
                return
            try:
                v = json.loads(m.value)
                latest[m.key] = (str(v["rule"]), str(v["service"]), str(v["pattern_id"]), int(v["last_seen_us"]))
            except (ValueError, TypeError, KeyError):
                log.warning("skipping an unreadable patterns record", extra={"offset": m.offset})

        kafka_api.read_topic(self.cfg.kafka, self.cfg.kafka.topics.patterns, handle, timeout_s=60, missing_ok=True)
        n = self.engine.load_patterns(latest.values())  # type: ignore[union-attr]
        log.info("error patterns restored", extra={"patterns": n})

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

    def _start_control(self) -> None:
        kcfg = self.cfg.kafka
        topic = kcfg.topics.control
        self._control = kafka_api.consumer(kcfg, group_id=None)
        parts = [TopicPartition(topic, q) for q in sorted(self._control.partitions_for_topic(topic) or [])]
        self._control.assign(parts)
        if not parts:
            return
        since_ms = (now_us() - int(self.pcfg.control_lookback_s * 1e6)) // 1000
        found = self._control.offsets_for_times({tp: since_ms for tp in parts})
        ends = self._control.end_offsets(parts)
        for tp in parts:
            hit = found.get(tp)
            self._control.seek(tp, hit.offset if hit is not None else ends[tp])

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

    def events_per_s(self, now: float) -> float:
        """Events processed per second over the last ``RATE_WINDOW_S`` (the loop trims the window each pass)."""
        return sum(n for t, n in list(self._rate) if t >= now - RATE_WINDOW_S) / RATE_WINDOW_S

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

    # -- control and time ---------------------------------------------------------------------

    def _poll_control(self) -> None:
        if self._control is None:
            return
        batch = self._control.poll(timeout_ms=0)
        for records in batch.values():
            for m in records:
                try:
                    name, rec = self.codec.decode(m.value)
                except DecodeError as exc:
                    self.engine.counters.decode_errors += 1  # type: ignore[union-attr]
                    self._deadletter(m, exc.reason, "control")
                    continue
                if name != CONTROL_EVENT:
                    self._deadletter(m, f"a {name} on the control topic", "control")
                    continue
                if rec["action"] in ("resolve", *acks.ACTIONS) and rec.get("alert_id"):
                    self._resolves.append(rec)
                    self._apply_resolve(rec)

    def _apply_resolve(self, rec: dict[str, Any]) -> None:
        """A resolve, ack or unack command (re-applied after a rebalance: each is applied once)."""
        if rec["action"] in acks.ACTIONS:
            self.engine.acknowledge(rec)  # type: ignore[union-attr]
            return
        actor = rec.get("actor") or "manual"
        self.engine.resolve(rec["alert_id"], rec["ts"], actor)  # type: ignore[union-attr]

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

    # -- rebalance ----------------------------------------------------------------------------

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        """IO thread, main loop blocked in poll/close: make our transitions visible to the next owner."""
        try:
            if self.producer is not None:
                self.outbox.send_all()  # queued transitions too: the next owner restores from the alerts topic
                self.producer.flush(timeout=30)
        except Exception:
            log.exception("flushing transitions on revocation failed")

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        """IO thread: note the (eager, hence complete) new assignment for the loop."""
        with self._pending_lock:
            self._pending_assignment = set(assigned)

    def _apply_assignment(self, assigned: set[TopicPartition], changelog: dict[str, dict[str, Any]]) -> None:
        """Main loop: drop what we lost, keep what we still own, rebuild what is new (see the module docstring)."""
        engine = self.engine
        assert engine is not None
        consumer = self.consumer
        new_keys = {(tp.topic, tp.partition) for tp in assigned}
        for key in list(engine.partitions):
            if key not in new_keys:
                engine.drop_partition(key)
                self._forget(key)
        fresh: list[TopicPartition] = []
        kept: list[TopicPartition] = []
        for tp in sorted(assigned):
            key = (tp.topic, tp.partition)
            if key in engine.partitions:
                committed = consumer.committed(tp)
                ours = max(self._positions.get(key, -1), self._committed.get(key, -1))
                if committed is not None and committed > ours:
                    engine.drop_partition(key)  # someone else moved it on meanwhile: rebuild
                    self._forget(key)
                else:
                    consumer.seek(tp, self._positions[key])  # go on where we were (maybe mid-replay)
                    kept.append(tp)
                    continue
            fresh.append(tp)
        if kept:
            # The rebalance may have left a backlog on partitions we kept: measure it now. A lag from before
            # (or from a highwater that kafka-python keeps across the rebalance) could read 0 and let the tick
            # move their clocks past events not read yet: false absence alerts, late events.
            ends = consumer.end_offsets(kept)
            for tp in kept:
                key = (tp.topic, tp.partition)
                self.lag[key] = max(0, ends[tp] - self._positions[key])
        if not fresh:
            return
        self._setup_partitions(fresh)
        restored = self._restore_alerts({(tp.topic, tp.partition) for tp in fresh}, changelog)
        for rec in list(self._resolves):
            self._apply_resolve(rec)
        log.info("partitions assigned", extra={"new": len(fresh), "kept": len(assigned) - len(fresh),
                                               "restored_alerts": restored})

    def _forget(self, key: tuple[str, int]) -> None:
        for d in (self._positions, self._record_ts, self._committed):
            d.pop(key, None)
        self.lag.pop(key, None)

    def _setup_partitions(self, fresh: list[TopicPartition]) -> None:
        """Step 2 of recovery: seek each new partition to the start of its replay."""
        engine = self.engine
        consumer = self.consumer
        span_ms = (engine.rules.horizon_us + engine.grace_us) // 1000 + int(self.pcfg.replay_margin_s * 1000)
        now_ms = now_us() // 1000
        beginnings = consumer.beginning_offsets(fresh)
        ends = consumer.end_offsets(fresh)
        committed = {tp: consumer.committed(tp, metadata=True) for tp in fresh}
        targets = {}
        for tp in fresh:
            c = committed[tp]
            rts = -1
            if c is not None and c.metadata:
                try:
                    rts = int(json.loads(c.metadata).get("rts", -1))
                except (ValueError, TypeError, AttributeError):
                    rts = -1
            if c is None and self.pcfg.start_without_commit != "replay":
                continue
            targets[tp] = max(0, (rts if rts > 0 else now_ms) - span_ms)
        found = consumer.offsets_for_times(targets) if targets else {}
        mono = time.monotonic()
        for tp in fresh:
            key = (tp.topic, tp.partition)
            ps = engine.add_partition(tp.topic, tp.partition, self.source_of[tp.topic])
            c = committed[tp]
            if tp in targets:
                hit = found.get(tp)
                start = hit.offset if hit is not None else ends[tp]
                if c is not None:
                    start = min(start, c.offset)
            elif self.pcfg.start_without_commit == "earliest":
                start = beginnings[tp]
            else:
                start = ends[tp]
            consumer.seek(tp, start)
            if start > beginnings[tp]:
                # Mid-log: windows are whole one window after the replay's start, not before.
                if tp in targets:
                    ps.complete_from = targets[tp] * 1000 + engine.grace_us
                else:
                    ps.awaiting_first_event = True
            if c is not None:
                self._committed[key] = c.offset
                if c.offset > start:
                    ps.replay_until = c.offset
                    self._assigned_mono[key] = mono
            self._positions[key] = start
            self._nparts.setdefault(tp.topic, len(consumer.partitions_for_topic(tp.topic) or []))
            self.lag[key] = max(0, ends[tp] - start)

    def _read_changelog(self) -> dict[str, dict[str, Any]]:
        """Step 1 of recovery, read to its end however long that takes: a timeout goes on from where it stopped
        after a backoff (1 s doubling to 30 s); only ``close()`` ends it (``ReadTimeout``)."""

        def retry(exc: Exception, attempt: int) -> bool:
            self.changelog_retries += 1
            delay = min(CHANGELOG_BACKOFF_MAX_S, CHANGELOG_BACKOFF_S * 2 ** (attempt - 1))
            log.warning("reading the alert changelog timed out; going on from where it stopped",
                        extra={"error": str(exc), "attempt": attempt, "backoff_s": delay})
            return not self._stop.wait(delay)

        return read_alert_changelog(self.cfg, self.pcfg.changelog_timeout_s, retry=retry)

    def _restore_alerts(self, keys: set[tuple[str, int]], latest: dict[str, dict[str, Any]]) -> int:
        """Step 1 of recovery: the latest AlertEvent per fingerprint (``latest``), for services in ``keys``."""
        engine = self.engine

        def owner(rule: Rule, service: str) -> PartitionState | None:
            topic = self.topic_of[rule.source]
            n = self._nparts.get(topic) or len(self.consumer.partitions_for_topic(topic) or [])
            if not n:
                return None
            key = (topic, partition_for(service, n))
            return engine.partitions.get(key) if key in keys else None

        return engine.restore(latest.values(), owner)

    # -- on-call actions (tocsin.processors.ack.AckActions, through ProcessorView) ----------------

    def ack(self, alert_id: str, note: str, expires_at: int | None, actor: str) -> acks.AckOutcome:
        """Publishes an ``ack`` ControlEvent for an open incident (tocsin.processors.ack); the owner applies it."""
        latest = self._current(alert_id)
        if latest is None:
            return "unknown"
        if latest["state"] not in ("pending", "firing"):
            return "not_open"
        self._send_control(acks.control_record(
            acks.ACK, alert_id, latest["fingerprint"], event_id=new_event_id(), ts=now_us(), actor=actor,
            note=note, expires_at=expires_at))
        return "accepted"

    def unack(self, alert_id: str, actor: str) -> acks.AckOutcome:
        """Publishes an ``unack`` ControlEvent when the open incident carries an ack."""
        latest = self._current(alert_id)
        if latest is None:
            return "unknown"
        if latest["state"] not in ("pending", "firing"):
            return "not_open"
        if not latest.get("acked_by"):
            return "not_acked"
        self._send_control(acks.control_record(
            acks.UNACK, alert_id, latest["fingerprint"], event_id=new_event_id(), ts=now_us(), actor=actor))
        return "accepted"

    def _current(self, alert_id: str) -> dict[str, Any] | None:
        """The latest AlertEvent of incident ``alert_id``: from memory if ours, else from the changelog."""
        fp = fingerprint_of(alert_id)
        if not fp:
            return None
        with self.lock:
            found = self.engine.by_fingerprint.get(fp) if self.engine else None
            tr = found[1].tracker if found is not None else None
            if tr is not None and tr.alert_id == alert_id and tr.record is not None:
                return dict(tr.record)
        latest = read_alert_changelog(self.cfg).get(fp)
        return latest if latest is not None and latest["alert_id"] == alert_id else None

    def _send_control(self, record: dict[str, Any]) -> None:
        producer = self.producer or kafka_api.producer(self.cfg.kafka)
        try:
            producer.send(self.cfg.kafka.topics.control, key=record["fingerprint"].encode(),
                          value=self.codec.encode(CONTROL_EVENT, record)).get(timeout=30)
        except _KafkaError as exc:
            raise KafkaError(f"sending the {record['action']} of {record['alert_id']} failed: {exc}") from exc
        finally:
            if producer is not self.producer:
                producer.close(timeout=10)

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


def read_alert_changelog(cfg: ProcessorSettings, timeout_s: float = 60.0, *,
                         retry: Callable[[Exception, int], bool] | None = None) -> dict[str, dict[str, Any]]:
    """The latest AlertEvent per fingerprint on the (compacted) alerts topic, read to its current end.

    Raises ``ReadTimeout`` (a ``KafkaError``) when the end is not reached within ``timeout_s``, unless
    ``retry(error, attempt)`` says to go on: then the same reader goes on from where it stopped (records read
    stay read), toward the end offsets of that moment.
    """
    codec = default_codec()
    latest: dict[str, dict[str, Any]] = {}
    topic = cfg.kafka.topics.alerts

    def handle(_tp: TopicPartition, m: Any) -> None:
        if m.value is None:
            latest.pop(m.key.decode() if m.key else "", None)
            return
        try:
            name, rec = codec.decode(m.value)
        except DecodeError:
            return  # not ours to judge here; the alerts sinks dead-letter it
        if name == ALERT_EVENT:
            latest[rec["fingerprint"]] = rec

    attempt = 0
    client = None
    parts: list[TopicPartition] | None = None
    try:
        while True:
            try:
                if client is None:
                    client = kafka_api.consumer(cfg.kafka, group_id=None)
                if parts is None:
                    try:
                        found = client.partitions_for_topic(topic)
                    except _KafkaError as exc:
                        raise ReadTimeout(f"reading {topic}: no metadata: {exc}") from exc
                    if not found:
                        return latest
                    parts = [TopicPartition(topic, q) for q in sorted(found)]
                    client.assign(parts)
                    client.seek_to_beginning(*parts)
                kafka_api.read_to_end(client, handle, timeout_s=timeout_s, what=topic, partitions=parts)
                return latest
            except KafkaError as exc:
                attempt += 1
                if retry is None or not retry(exc, attempt):
                    raise
    finally:
        if client is not None:
            client.close(autocommit=False)


def build(cfg: ProcessorSettings) -> ProcessorService:
    """``tocsin start processor``."""
    return ProcessorService(cfg)
