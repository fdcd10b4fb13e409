"""Recovery without a state store (steps 1-5 of the package docstring): what an assignment rebuilds.

A mixin of ``ProcessorService``: the rebalance listener's two notes (on kafka-python's IO thread) and the
loop's side of an assignment (drop, keep, rebuild by replay, restore alerts and error patterns).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener, TopicPartition

from tocsin.core import kafka as kafka_api
from tocsin.core.events import now_us
from tocsin.processors.engine import PartitionState
from tocsin.processors.rules import Rule
from tocsin.processors.service.changelog import partition_for, read_alert_changelog

if TYPE_CHECKING:
    from tocsin.processors.service.loop import ProcessorService

log = logging.getLogger("tocsin.processors.service")

CHANGELOG_BACKOFF_S = 1.0
CHANGELOG_BACKOFF_MAX_S = 30.0


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: it may not call the consumer, so it only flushes and takes notes."""

    def __init__(self, service: ProcessorService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.service._revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service._assigned(assigned)


class Recovery:
    """Assignment handling of ``ProcessorService`` (its state lives there)."""

    # The service's attributes these methods use, for readers and type checkers.
    cfg: Any
    pcfg: Any
    engine: Any
    consumer: Any
    producer: Any
    outbox: Any
    lag: dict[tuple[str, int], int]

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
