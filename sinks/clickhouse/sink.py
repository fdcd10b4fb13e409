"""The ClickHouse sink: logs, metrics, health and alerts from Kafka into ClickHouse, each record stored once.

Consumer group ``tocsin-sink-clickhouse`` reads the four topics; records are
framed (not decoded: ClickHouse parses the Avro, see ``sinks/clickhouse/ingest``)
into a batch that closes at ``batch_max_rows`` events, ``batch_max_bytes`` or
``batch_max_age_s``. A batch holds one group per (topic partition, writer
schema), and each group is one insert whose ``insert_deduplication_token`` is
``tocsin:<topic>:<partition>:<first>-<last>:<schema fingerprint>``.

Exactly once, per batch (the numbered steps match the comments in the code):

1. **Intent**: commit each partition's *current* offset ``first`` with the
   metadata ``tocsin-sink:pending:<last>``. Nothing moves yet; the range is now
   recorded in Kafka, beside the offsets.
2. **Insert** every group (in a worker thread, while the next batch forms).
3. **Dead letters**: produce the records ClickHouse or the codec refused and
   wait for the broker's acknowledgement.
4. **Commit** ``last + 1`` per partition, clearing the metadata.

A sink killed between 2 and 4 restarts at ``first``, finds the pending range
in the committed metadata and re-forms exactly that range as its first batch
for the partition (whatever it polls beyond ``last`` waits for the next), so
the retried inserts carry the same tokens and ClickHouse drops them
(``non_replicated_deduplication_window``). Without the intent a restarted sink
would cut its batches differently and the tokens would never match. Records
an agent produced twice (same event_id, different offsets) are a different
matter: the tables are ReplacingMergeTree on ``event_id`` and collapse them.

Rebalances: kafka-python 3 runs rebalance listeners on its IO thread, where
a blocking call raises. The sink's listener is async: on revocation it awaits
the batch in flight (without blocking the loop, so heartbeats go on), commits
it with ``commit_async`` and only flags the rest; the loop, right after
``poll()``, drops what it had formed and reads every assigned partition again
from its committed offset (``_resync``). A batch that could not be finished in
time, or partitions lost to an eviction (a stall past the session timeout),
are redone by their next owner from the recorded range, under the same tokens.

While inserts fail the sink pauses every partition (memory stays at the batch
in flight), keeps polling so it stays in the group, and retries the same batch
with exponential backoff. Records that are not Tocsin events, or events the
sink does not store, go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError as _KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram

from tocsin.core import kafka as kafka_api
from tocsin.core.clickhouse import connect
from tocsin.core.component import Component
from tocsin.core.errors import DecodeError, KafkaError, StoreError
from tocsin.core.scheduler import Scheduler
from tocsin.sinks.clickhouse.config import ClickHouseSinkSettings
from tocsin.sinks.clickhouse.ingest import FaultSwitch, Framer, Group, IngestWriter, Rejected

log = logging.getLogger(__name__)

STAGE = "sink-clickhouse"
PENDING_PREFIX = "tocsin-sink:pending:"
_PENDING_RE = re.compile(r"^tocsin-sink:pending:(\d+)$")
# Tests only: SIGKILL this process after N successful batch inserts, before
# their offsets are committed (the worst moment for exactly-once).
KILL_AFTER_INSERTS_ENV = "TOCSIN_FAULT_SINK_KILL_AFTER_INSERTS"
# How long stop() waits for the batch in flight before giving it up to a successor.
SHUTDOWN_WAIT_S = 30.0

EVENTS = Counter("tocsin_sink_clickhouse_events_total", "Events handed to ClickHouse (before dedup).", ["table"])
BATCHES = Counter("tocsin_sink_clickhouse_batches_total", "Batches inserted and committed.")
FAILURES = Counter("tocsin_sink_clickhouse_insert_failures_total", "Batch inserts that failed and will be retried.")
DEADLETTERED = Counter("tocsin_sink_clickhouse_deadlettered_total", "Records sent to the dead-letter topic.")
RECOVERED = Counter("tocsin_sink_clickhouse_recovered_ranges_total", "Pending ranges re-inserted after a restart.")
INSERT_SECONDS = Histogram("tocsin_sink_clickhouse_insert_seconds", "Wall time of one batch insert.")
REBALANCES = Counter("tocsin_sink_clickhouse_rebalances_total", "Rebalances the sink re-synced after.")
PAUSED = Gauge("tocsin_sink_clickhouse_paused", "1 while the consumer is paused (backpressure or outage).")


def pending_end(metadata: str | None) -> int | None:
    """The ``last`` offset recorded by step 1, or None."""
    m = _PENDING_RE.match(metadata or "")
    return int(m.group(1)) if m else None


@dataclass
class Batch:
    """Groups of one batch and the offset range of each partition in it."""

    groups: dict[tuple[TopicPartition, bytes], Group] = field(default_factory=dict)
    ranges: dict[TopicPartition, list[int]] = field(default_factory=dict)  # tp -> [first, last]
    events: int = 0
    nbytes: int = 0
    started: float = 0.0
    sealed: bool = False

    def token(self, tp: TopicPartition, fp: bytes) -> str:
        first, last = self.ranges[tp]
        return f"tocsin:{tp.topic}:{tp.partition}:{first}-{last}:{fp.hex()}"

    def finalize(self) -> None:
        """Tokens depend on the final ranges, so they are set when the batch closes."""
        for (tp, fp), group in self.groups.items():
            group.token = self.token(tp, fp)


@dataclass
class InFlight:
    batch: Batch
    future: cf.Future[list[tuple[TopicPartition, Rejected]]] | None = None
    attempts: int = 0
    failures: int = 0
    retry_at: float = 0.0
    handed_over: bool = False  # inserted and committed by the revocation listener
    rejected: list[tuple[TopicPartition, Rejected]] = field(default_factory=list)


class ClickHouseSink(Component):
    """Consumes the event topics into ClickHouse; see the module docstring for the protocol.

    >>> with ClickHouseSink(cfg) as sink:   # doctest: +SKIP
    ...     sink.run()
    """

    name = "sink-clickhouse"

    def __init__(self, cfg: ClickHouseSinkSettings) -> None:
        super().__init__()
        self.cfg = cfg
        self.scfg = cfg.sink_clickhouse
        self.topics = [cfg.kafka.topics.logs, cfg.kafka.topics.metrics, cfg.kafka.topics.health,
                       cfg.kafka.topics.alerts]
        self.framer = Framer()
        self.stats: dict[str, int] = {"batches": 0, "events": 0, "messages": 0, "deadlettered": 0,
                                      "insert_failures": 0, "recovered_ranges": 0, "tombstones": 0,
                                      "rebalances": 0}
        self._consumer: Any = None
        self._producer: Any = None
        self._writer: IngestWriter | None = None
        self._pool: cf.ThreadPoolExecutor | None = None
        self._forming = Batch()
        self._carry: list[Any] = []
        self._inflight: InFlight | None = None
        self._pending: dict[TopicPartition, tuple[int, int]] = {}  # tp -> recorded (first, last), until complete
        self._sealed_tps: set[TopicPartition] = set()  # tps whose recorded range is complete in this batch
        self._checked: set[TopicPartition] = set()  # tps whose committed metadata was read
        self._paused = False
        self._rebalanced = False  # set by the listener (IO thread), acted on by the loop after poll()
        self.first_record_at: float | None = None  # time.monotonic() of the first record polled
        self._kill_after = int(os.environ.get(KILL_AFTER_INSERTS_ENV) or 0)
        self._inserted_batches = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        from tocsin.sinks.clickhouse.schema import migrate

        client = connect(self.cfg.clickhouse)
        if self.scfg.migrate_on_start:
            try:
                migrate(client, self.cfg.clickhouse.database, self.cfg.clickhouse.retention_days, self.scfg.cluster)
            except Exception as exc:
                raise StoreError(f"schema migration failed: {type(exc).__name__}: {exc}") from exc
        self._writer = IngestWriter(client, self.cfg.clickhouse.database, FaultSwitch())
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-insert")
        overrides: dict[str, Any] = {
            "session_timeout_ms": self.scfg.session_timeout_ms,
            "heartbeat_interval_ms": max(1000, self.scfg.session_timeout_ms // 3),
        }
        if self.scfg.group_instance_id:
            overrides["group_instance_id"] = self.scfg.group_instance_id
        self._consumer = kafka_api.consumer(self.cfg.kafka, group_id=self.scfg.group_id, **overrides)
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        self._producer = kafka_api.producer(self.cfg.kafka)
        log.info("ClickHouse sink started", extra={"topics": self.topics, "group": self.scfg.group_id})

    def run(self) -> None:
        while not self.stopping:
            self.mark_progress()
            self._step()
        self._drain()

    def _release(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # closing must not mask the reason we are closing
                log.warning("consumer close failed", extra={"error": str(exc)})
        if self._producer is not None:
            try:
                self._producer.close(timeout=10)
            except Exception as exc:
                log.warning("dead-letter producer close failed", extra={"error": str(exc)})

    # -- the loop ------------------------------------------------------------------

    def _step(self) -> None:
        fl = self._inflight
        if fl is None:
            timeout_ms = self._poll_timeout_ms()
        elif fl.future is None:  # an outage: wait for the retry, polling only to stay in the group
            timeout_ms = max(0, min(self.scfg.poll_timeout_ms, int((fl.retry_at - time.monotonic()) * 1000)))
        elif self._paused:  # the next batch is full: wait for the one in flight
            cf.wait([fl.future], timeout=self.scfg.poll_timeout_ms / 1000)
            timeout_ms = 0
        else:  # keep forming the next batch while this one inserts; look back soon
            timeout_ms = 20
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms)
        except _KafkaError as exc:  # a failed rebalance step, a broker away: re-sync and join again next turn
            log.warning("poll failed; re-syncing", extra={"error": f"{type(exc).__name__}: {exc}"})
            self._rebalanced = True
            polled = {}
        if self._rebalanced:
            # Positions may have moved under what this poll returned: re-read from the committed offsets.
            self._rebalanced = False
            self._resync()
            return
        if polled and self.first_record_at is None:
            self.first_record_at = time.monotonic()
        for tp, records in polled.items():
            self._route(tp, records)
        self._advance()

    def _poll_timeout_ms(self) -> int:
        if self._forming.events or self._forming.groups:
            left = self._forming.started + self.scfg.batch_max_age_s - time.monotonic()
            return max(0, min(self.scfg.poll_timeout_ms, int(left * 1000)))
        return self.scfg.poll_timeout_ms

    def _route(self, tp: TopicPartition, records: list[Any]) -> None:
        if tp not in self._checked:
            self._read_pending(tp)
        if tp in self._sealed_tps:
            self._carry.extend(records)
            return
        pending = self._pending.get(tp)
        end = pending[1] if pending else None
        for i, rec in enumerate(records):
            if end is not None and rec.offset > end:
                # The recorded range is complete: it goes alone, the rest waits for the next batch.
                self._seal(tp)
                self._carry.extend(records[i:])
                return
            self._add(self._forming, tp, rec)
            if end is not None and rec.offset == end:
                self._seal(tp)
                self._carry.extend(records[i + 1:])
                return

    def _seal(self, tp: TopicPartition) -> None:
        """A recorded range is complete: its tokens use the recorded bounds, and the batch closes."""
        first, last = self._pending.pop(tp)
        self._forming.ranges[tp] = [first, last]
        self._forming.sealed = True
        self._sealed_tps.add(tp)

    def _add(self, batch: Batch, tp: TopicPartition, rec: Any) -> None:
        if not batch.ranges:
            batch.started = time.monotonic()
        rng = batch.ranges.get(tp)
        if rng is None:
            batch.ranges[tp] = [rec.offset, rec.offset]
        else:
            rng[1] = rec.offset
        value = rec.value
        if value is None:
            # A tombstone on a compacted topic deletes a key; it is not an event.
            self.stats["tombstones"] += 1
            return
        try:
            writer, body, events = self.framer.frame(value)
        except DecodeError as exc:
            self._deadletter(tp.topic, tp.partition, rec.offset, rec.key, value, exc.reason)
            return
        key = (tp, writer.fingerprint)
        group = batch.groups.get(key)
        if group is None:
            group = batch.groups[key] = Group(writer, "")
        group.bodies.append(body)
        group.offsets.append(rec.offset)
        group.keys.append(rec.key)
        group.values.append(value)
        group.events += events
        batch.events += events
        batch.nbytes += len(value)

    def _ready(self) -> bool:
        b = self._forming
        if not b.ranges:
            return False
        for tp, (_, last) in list(self._pending.items()):
            # Records of a recorded range may be gone (retention): past its end, it is complete.
            if self._consumer.position(tp) > last:
                self._seal(tp)
        if self._pending:
            return False  # a recorded range must go whole, in one batch, or its tokens would not match
        return (b.sealed or b.events >= self.scfg.batch_max_rows or b.nbytes >= self.scfg.batch_max_bytes
                or time.monotonic() - b.started >= self.scfg.batch_max_age_s)

    def _advance(self) -> None:
        fl = self._inflight
        if fl is not None and fl.future is not None and fl.future.done():
            self._settle(fl)
        fl = self._inflight
        if fl is not None and fl.future is None and time.monotonic() >= fl.retry_at:
            self._submit(fl)
        if self._inflight is None and self._ready():
            self._launch()
        # Backpressure: a full next batch waits for the one in flight; an outage pauses everything.
        full = self._forming.events >= self.scfg.batch_max_rows or self._forming.nbytes >= self.scfg.batch_max_bytes
        want_pause = self._inflight is not None and (full or self._forming.sealed or self._inflight.failures > 0)
        self._set_paused(want_pause)

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        assigned = list(self._consumer.assignment())
        if paused:
            self._consumer.pause(*assigned)
        else:
            self._consumer.resume(*assigned)
        self._paused = paused
        PAUSED.set(1 if paused else 0)

    def _launch(self) -> None:
        batch = self._forming
        if self._pending:
            return  # never split a recorded range (see _ready)
        batch.finalize()
        # 1. Intent: record every partition's range beside its (unchanged) committed offset.
        intent = {tp: OffsetAndMetadata(first, f"{PENDING_PREFIX}{last}", -1)
                  for tp, (first, last) in batch.ranges.items()}
        try:
            self._consumer.commit(intent)
        except Exception as exc:
            log.warning("intent commit failed; will retry", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self._forming = Batch()
        self._sealed_tps = set()
        carry, self._carry = self._carry, []
        self._inflight = InFlight(batch)
        self._submit(self._inflight)
        by_tp: dict[TopicPartition, list[Any]] = {}
        for rec in carry:
            by_tp.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        for tp, recs in by_tp.items():
            self._route(tp, recs)

    def _submit(self, fl: InFlight) -> None:
        assert self._pool is not None and self._writer is not None
        writer = self._writer
        keys = sorted(fl.batch.groups, key=lambda k: (k[0].topic, k[0].partition, k[1]))
        groups = [(k[0], fl.batch.groups[k]) for k in keys]

        def insert_all() -> list[tuple[TopicPartition, Rejected]]:
            # 2. Insert every group under its token (a retry repeats them all; ClickHouse drops the repeats).
            started = time.perf_counter()
            rejected = [(tp, r) for tp, g in groups for r in writer.insert(g)]
            INSERT_SECONDS.observe(time.perf_counter() - started)
            return rejected

        fl.attempts += 1
        fl.future = self._pool.submit(insert_all)

    def _settle(self, fl: InFlight) -> None:
        assert fl.future is not None
        exc = fl.future.exception()
        if exc is not None:
            self._retry_later(fl, exc)
            return
        rejected = fl.future.result()
        self._inserted_batches += 1
        if self._kill_after and self._inserted_batches >= self._kill_after:
            log.warning("fault switch: SIGKILL after insert, before commit")
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            self._finish(fl.batch, rejected)
        except KafkaError as exc:
            self._retry_later(fl, exc)
            return
        except Exception as exc:
            # The group moved on (rebalance): the next owner redoes the range under the same tokens.
            log.warning("offset commit failed; the range will be redone by its next owner",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
        self._inflight = None

    def _retry_later(self, fl: InFlight, exc: BaseException) -> None:
        delay = min(self.scfg.retry_backoff_max_s, self.scfg.retry_backoff_initial_s * 2 ** (fl.attempts - 1))
        fl.future = None
        fl.failures += 1
        fl.retry_at = time.monotonic() + delay
        self.stats["insert_failures"] += 1
        FAILURES.inc()
        log.warning("batch insert failed; consumer paused, retrying",
                    extra={"error": f"{type(exc).__name__}: {str(exc)[:300]}", "attempt": fl.attempts,
                           "retry_in_s": round(delay, 2)})

    def _finish(self, batch: Batch, rejected: list[tuple[TopicPartition, Rejected]]) -> None:
        # 3. Dead letters: what ClickHouse refused, acknowledged before the offsets move past it.
        for tp, r in rejected:
            self._deadletter(tp.topic, tp.partition, r.offset, r.key, r.value, r.reason)
        try:
            self._producer.flush(timeout=60)
        except Exception as exc:
            raise KafkaError(f"dead-letter records not acknowledged: {exc}") from exc
        # 4. Commit: the range is stored; move the offsets and clear the intent.
        self._consumer.commit({tp: OffsetAndMetadata(last + 1, "", -1) for tp, (_, last) in batch.ranges.items()})
        self._account(batch, rejected)

    def _account(self, batch: Batch, rejected: list[tuple[TopicPartition, Rejected]]) -> None:
        self.stats["batches"] += 1
        BATCHES.inc()
        for g in batch.groups.values():
            self.stats["events"] += g.events
            self.stats["messages"] += len(g.bodies)
            EVENTS.labels(table=g.writer.ingest_table.removesuffix("_in").removesuffix("_batch")).inc(g.events)

    def _deadletter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
                    reason: str) -> Any:
        headers = kafka_api.deadletter_headers(reason, topic, partition, offset, STAGE)
        try:
            future = self._producer.send(self.cfg.kafka.topics.deadletter, key=key, value=value, headers=headers)
        except Exception as exc:
            raise KafkaError(f"cannot produce to the dead-letter topic: {exc}") from exc
        self.stats["deadlettered"] += 1
        DEADLETTERED.inc()
        log.warning("record dead-lettered", extra={"topic": topic, "partition": partition, "offset": offset,
                                                   "reason": reason[:200]})
        return future

    # -- recovery and rebalances -----------------------------------------------------

    def _read_pending(self, tp: TopicPartition) -> None:
        self._checked.add(tp)
        committed = self._consumer.committed(tp, metadata=True)
        end = pending_end(committed.metadata if committed is not None else None)
        if end is not None:
            self._pending[tp] = (committed.offset, end)
            self.stats["recovered_ranges"] += 1
            RECOVERED.inc()
            log.warning("re-forming a pending range recorded before a crash",
                        extra={"topic": tp.topic, "partition": tp.partition, "first": committed.offset, "last": end})
            if not self._forming.ranges:
                self._forming.started = time.monotonic()
            self._forming.ranges.setdefault(tp, [committed.offset, committed.offset])

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Runs in the revocation listener on kafka-python's IO thread while the loop waits in ``poll()``:
        the batch in flight is finished and committed before its partitions go, so the next owner
        starts after it (with chdb, no event lands in two members' stores on a graceful hand-over).

        Never blocks the IO thread: the insert and the dead-letter acknowledgements are awaited with
        the loop's own sleep and the commit with ``commit_async`` (heartbeats go on meanwhile). What
        cannot finish in time is left to the next owner, which re-forms the recorded range under
        the same tokens. Everything else (the batch being formed, positions) waits for the loop.
        """
        self._rebalanced = True
        fl = self._inflight
        if fl is None or fl.future is None:
            return
        future = fl.future
        if not await kafka_api.wait_on_io_thread(self._consumer, future.done, SHUTDOWN_WAIT_S) \
                or future.cancelled() or future.exception() is not None:
            log.warning("batch in flight not inserted at rebalance; its next owner redoes its recorded range")
            return
        rejected = future.result()
        try:
            sent = [self._deadletter(tp.topic, tp.partition, r.offset, r.key, r.value, r.reason) for tp, r in rejected]
            if not await kafka_api.wait_on_io_thread(self._consumer, lambda: all(f.is_done for f in sent),
                                                     SHUTDOWN_WAIT_S) or any(f.failed() for f in sent):
                raise KafkaError("dead-letter records not acknowledged")
            await self._consumer.commit_async(
                {tp: OffsetAndMetadata(last + 1, "", -1) for tp, (_, last) in fl.batch.ranges.items()})
        except Exception as exc:
            log.warning("batch in flight not committed at rebalance; its next owner redoes it",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        fl.handed_over = True
        fl.rejected = rejected

    def _resync(self) -> None:
        """After a rebalance (seen by the loop right after ``poll()``): start again from Kafka's committed state.

        Whatever was formed or carried is dropped and every assigned partition is read again from its
        committed offset; a recorded (pending) range there is re-formed whole, under the same tokens,
        so redoing it stores nothing twice. A batch the listener could not commit is dropped the same
        way (its insert, if it still runs, finishes first on the single insert thread).
        """
        fl, self._inflight = self._inflight, None
        if fl is not None and fl.handed_over:
            self._account(fl.batch, fl.rejected)
        elif fl is not None:
            log.warning("batch in flight not committed at rebalance; redone from its recorded range")
        self._forming = Batch()
        self._carry = []
        self._pending = {}
        self._sealed_tps = set()
        self._checked = set()
        try:
            assigned = list(self._consumer.assignment())
            # Partitions kept across the rebalance keep their paused flag: resume them; the loop pauses
            # again if the backpressure or the outage goes on.
            self._consumer.resume(*assigned)
            self._paused = False
            PAUSED.set(0)
            for tp in assigned:
                committed = self._consumer.committed(tp)
                if committed is None:
                    self._consumer.seek_to_beginning(tp)  # auto_offset_reset is earliest
                else:
                    self._consumer.seek(tp, committed)
        except Exception as exc:  # another rebalance under way, a broker away: look again next turn
            self._rebalanced = True
            log.warning("re-reading committed offsets after a rebalance failed; retrying",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        self.stats["rebalances"] += 1
        REBALANCES.inc()
        log.info("rebalanced; reading on from the committed offsets", extra={"partitions": len(assigned)})

    def _drain(self) -> None:
        """Graceful stop: finish the batch in flight, then store what was formed if ClickHouse takes it."""
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while time.monotonic() < deadline:
            fl = self._inflight
            if fl is None:
                if not self._forming.ranges:
                    return
                self._forming.sealed = True
                self._launch()
                if self._inflight is None:
                    return
                continue
            if fl.future is None:
                if fl.attempts >= 3:
                    return  # ClickHouse is down: leave the recorded range to the next run
                time.sleep(max(0.0, min(fl.retry_at - time.monotonic(), deadline - time.monotonic())))
                self._submit(fl)
                continue
            cf.wait([fl.future], timeout=max(0.0, deadline - time.monotonic()))
            if not fl.future.done():
                return
            self._settle(fl)


class _Listener(AsyncConsumerRebalanceListener):
    """Async, because kafka-python 3 runs listeners on its IO thread where blocking calls raise."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sink.hand_over(set(revoked))

    async def on_partitions_lost(self, lost: Any) -> None:
        self.sink._rebalanced = True  # evicted (a stall): others own them already, nothing may be committed

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.sink._rebalanced = True


def maintenance_jobs(cfg: ClickHouseSinkSettings) -> Scheduler:
    """The store's scheduled upkeep, run beside the sink that owns it: daily cleanup, weekly archive.

    The archive takes whole days older than ``retention_days - 8``, so a weekly
    run copies every day at least once before the TTL drops it.
    """
    from tocsin.sinks.clickhouse.archive import archive_days
    from tocsin.sinks.clickhouse.cleanup import cleanup

    db, days = cfg.clickhouse.database, cfg.clickhouse.retention_days
    sched = Scheduler()
    sched.add("cleanup", cfg.jobs.cleanup, lambda: cleanup(connect(cfg.clickhouse), db, days,
                                                           cluster=cfg.sink_clickhouse.cluster))
    sched.add("archive", cfg.jobs.archive, lambda: archive_days(connect(cfg.clickhouse), db, max(0, days - 8),
                                                                Path(cfg.jobs.archive_dir),
                                                                root=cfg.jobs.archive_dir))
    return sched


def build(cfg: ClickHouseSinkSettings) -> dict[str, Component]:
    """``tocsin start sink-clickhouse``: the sink and the store's scheduled upkeep (the application groups them)."""
    return {"sink-clickhouse": ClickHouseSink(cfg), "store-jobs": maintenance_jobs(cfg)}
