"""Sending many small pre-encoded records through kafka-python at a low per-record cost.

``KafkaProducer.send()`` costs ~25 µs per record on this machine: header
validation, the partitioner, a debug string, a future per record, and the
sender thread completing each of those futures (holding the GIL the reading
thread needs). The log shipper does not need per-record results, only "is
everything up to here acknowledged", so ``RecordSender.send_many()`` appends
a run of records of one key straight into the producer's record batches and
returns one future per batch (a few per thousand records):

1. resolve (topic, key) to a partition once, with the producer's own
   partitioner, so records land where ``send()`` would put them;
2. under the partition's lock, fill the open batch at the tail of its queue,
   then new batches of ``batch_size``, exactly as ``RecordAccumulator.append``
   does, minus the per-record futures;
3. wake the sender thread, which drains, sequences (idempotence), sends and
   retries those batches as it does any other.

The futures returned are tocsin's ``BatchAck`` (a kafka-python ``Future``),
one per batch, completed from the batch's own future. A batch the broker
refuses as too large is split by kafka-python into smaller ones, re-binding
``send()``'s per-record futures to them but never completing the original
batch's future: without per-record futures the shipper would wait on it
until its stall deadline and then send everything again (duplicates). So
the accumulator's ``split_and_reenqueue`` is wrapped for this producer: the
acks waiting on a split batch wait on its parts instead.

An ack is done when the broker answered; it failed when it carries an
exception, or a ``record_exceptions_fn`` in its value (see ``batch_failure``).

This relies on kafka-python internals (``_accumulator``, ``_sender``,
``ProducerBatch``), pinned in pyproject.toml; ``SURFACE`` names each one, and
``fast_path_supported()`` compares it with the installed kafka-python once per
process (``tocsin.core.kafkainternals``). Where anything differs it logs a
WARNING naming the difference, ``fast`` is False, and ``send_many`` uses
``send()`` with per-record futures, which ``batch_failure`` understands too.

Install ``crc32c`` beside kafka-python: without it every produced batch is
checksummed in pure Python, which alone caps a producer near 15,000 records/s.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError as _KafkaError
from kafka.future import Future
from kafka.structs import TopicPartition

from tocsin.core import kafkainternals
from tocsin.core.errors import KafkaError
from tocsin.core.kafkainternals import attributes, signature

log = logging.getLogger(__name__)

# How long a cached partition choice is trusted: a topic that gained
# partitions changes where keys go, as it does for send().
_TP_CACHE_TTL_S = 60.0

Headers = Sequence[tuple[str, bytes]]

try:
    from kafka.producer.producer_batch import ProducerBatch
    from kafka.producer.record_accumulator import RecordAccumulator
    from kafka.producer.sender import Sender
    from kafka.record.memory_records import MemoryRecordsBuilder
except ImportError:  # pragma: no cover - another kafka-python layout: the surface check reports it
    ProducerBatch = RecordAccumulator = Sender = MemoryRecordsBuilder = None  # type: ignore[assignment,misc]

# What the fast path relies on, as kafka-python 3.0.12 has it (see tocsin.core.kafkainternals).
SURFACE: kafkainternals.Surface = {
    "ProducerBatch.__init__": "(self, tp, records, now=…)",
    "ProducerBatch attributes": "produce_future, records, last_append, topic_partition",
    "ProducerBatch._complete_future": "(self, base_offset, timestamp_ms, record_exceptions_fn)",
    "MemoryRecordsBuilder.__init__": "(self, magic, compression_type, batch_size, offset=…, transactional=…, "
                                     "producer_id=…, producer_epoch=…, base_sequence=…)",
    "MemoryRecordsBuilder.append": "(self, timestamp, key, value, headers=…)",
    "RecordAccumulator._tp_lock": "(self, tp)",
    "RecordAccumulator.split_and_reenqueue": "(self, batch, now=…)",
    "Sender.wakeup": "(self)",
    "KafkaProducer._wait_on_metadata": "(self, topic, max_wait_ms)",
    "KafkaProducer._partition": "(self, topic, partition, key, value, serialized_key, serialized_value)",
    "Future.add_callback": "(self, f, *args, **kwargs)",
    "Future.add_errback": "(self, f, *args, **kwargs)",
}
# Attributes of one producer's accumulator the appender reads (instance state, checked per producer).
_ACCUMULATOR_ATTRIBUTES = ("_batches", "_tp_lock", "_incomplete", "config", "_closed", "split_and_reenqueue")


def _batch_attributes() -> str:
    batch = ProducerBatch(TopicPartition("t", 0), MemoryRecordsBuilder(2, 0, 1024))
    return attributes(batch, ("produce_future", "records", "last_append", "topic_partition"))


def installed_surface() -> kafkainternals.Surface:
    """The installed kafka-python's side of ``SURFACE``."""
    return kafkainternals.probe({
        "ProducerBatch.__init__": lambda: signature(ProducerBatch.__init__),
        "ProducerBatch attributes": _batch_attributes,
        "ProducerBatch._complete_future": lambda: signature(ProducerBatch._complete_future),
        "MemoryRecordsBuilder.__init__": lambda: signature(MemoryRecordsBuilder.__init__),
        "MemoryRecordsBuilder.append": lambda: signature(MemoryRecordsBuilder.append),
        "RecordAccumulator._tp_lock": lambda: signature(RecordAccumulator._tp_lock),
        "RecordAccumulator.split_and_reenqueue": lambda: signature(RecordAccumulator.split_and_reenqueue),
        "Sender.wakeup": lambda: signature(Sender.wakeup),
        "KafkaProducer._wait_on_metadata": lambda: signature(KafkaProducer._wait_on_metadata),
        "KafkaProducer._partition": lambda: signature(KafkaProducer._partition),
        "Future.add_callback": lambda: signature(Future.add_callback),
        "Future.add_errback": lambda: signature(Future.add_errback),
    })


@functools.cache
def fast_path_supported() -> bool:
    """Once per process: does the installed kafka-python have what the batch appender relies on?"""
    return kafkainternals.verify("the batch appender (tocsin.producers.kafkasend)", SURFACE, installed_surface(),
                                 "KafkaProducer.send()")


def has_native_crc32c() -> bool:
    """True when kafka-python checksums batches with the C ``crc32c`` module."""
    try:
        from kafka.record import util

        return getattr(util, "crc32c_c", None) is not None
    except ImportError:  # pragma: no cover
        return False


def batch_failure(future: Any) -> BaseException | None:
    """The error of a done batch (or record) future, ``None`` when it succeeded."""
    if future.exception is not None:
        return future.exception
    value = future.value
    # A batch future "succeeds" with (base_offset, timestamp, record_exceptions_fn);
    # a non-None function means the broker refused the batch.
    if type(value) is tuple and len(value) == 3 and value[2] is not None:
        try:
            return value[2](0)
        except Exception as exc:
            return exc
    return None


class BatchAck(Future):
    """Done when every batch holding its records is: those it was appended to, or their parts after a split.

    Succeeds with the first part's ``(base_offset, timestamp, None)``; fails
    with the first error (a refused part fails it at once: the caller sends
    everything again, at least once). ``guard`` is the sender's lock, shared
    by the acks of one sender, held by the appending and the sender threads.
    """

    def __init__(self, guard: threading.RLock) -> None:
        super().__init__()
        self._guard = guard
        self._pending: set[Any] = set()
        self._first: Any = None
        self._settled = False

    def watch(self, batches: list[Any]) -> None:
        """Waits for ``batches`` too (guard held)."""
        self._pending.update(batches)  # all of them first: a part already done must not settle it early
        for batch in batches:
            future = batch.produce_future
            future.add_callback(self._part_done, batch)
            future.add_errback(self._part_failed)

    def replace(self, batch: Any, parts: list[Any]) -> None:
        """``batch`` was split into ``parts``: its own future will never complete (guard held)."""
        self._pending.discard(batch)
        self.watch(parts)

    def _part_done(self, batch: Any, value: Any) -> None:
        if type(value) is tuple and len(value) == 3 and value[2] is not None:
            self._part_failed(batch_failure(_Done(value)) or KafkaError("the broker refused a batch"))
            return
        with self._guard:
            if self._settled:
                return
            self._pending.discard(batch)
            if self._first is None:
                self._first = (value[0], value[1], None) if type(value) is tuple and len(value) == 3 else value
            if self._pending:
                return
            self._settled = True
        self.success(self._first)

    def _part_failed(self, error: BaseException) -> None:
        with self._guard:
            if self._settled:
                return
            self._settled = True
            self._pending.clear()
        self.failure(error)


class _Done:
    """A done future's face for ``batch_failure`` (value only)."""

    exception = None

    def __init__(self, value: Any) -> None:
        self.value = value


class RecordSender:
    """Appends runs of (topic, key, value) records to a KafkaProducer; returns futures to watch.

    One RecordSender per producer: it wraps that producer's batch splitting.

    >>> sender = RecordSender(producer)                          # doctest: +SKIP
    >>> futures = sender.send_many("tocsin.logs", b"shop", values)  # doctest: +SKIP
    >>> all(f.is_done and batch_failure(f) is None for f in futures)  # doctest: +SKIP
    """

    def __init__(self, producer: KafkaProducer, metadata_timeout_s: float = 5.0, fast: bool = True) -> None:
        self.producer = producer
        self.metadata_timeout_s = metadata_timeout_s
        acc = getattr(producer, "_accumulator", None)
        sender = getattr(producer, "_sender", None)
        self.fast = bool(fast and fast_path_supported() and self._producer_supported(acc, sender))
        self._acc = acc
        self._wakeup = sender.wakeup if sender is not None else None
        self._tps: dict[tuple[str, bytes], TopicPartition] = {}
        self._tps_at = time.monotonic()
        self._lock = threading.RLock()
        # The acks waiting on each batch this sender appended to (batches vanish once completed).
        self._acks: weakref.WeakKeyDictionary[Any, list[BatchAck]] = weakref.WeakKeyDictionary()
        if self.fast:
            self._split = acc.split_and_reenqueue  # type: ignore[union-attr]
            acc.split_and_reenqueue = self._split_and_reenqueue  # type: ignore[union-attr]

    @staticmethod
    def _producer_supported(acc: Any, sender: Any) -> bool:
        """This producer's own state: an accumulator with the attributes used, message format v2."""
        actual = {
            "KafkaProducer._accumulator": kafkainternals.MISSING if acc is None
            else attributes(acc, _ACCUMULATOR_ATTRIBUTES),
            "KafkaProducer._sender.wakeup": "callable" if callable(getattr(sender, "wakeup", None))
            else kafkainternals.MISSING,
            "RecordAccumulator.config['message_version']": str(
                acc.config.get("message_version", 2) if acc is not None and hasattr(acc, "config") else None),
        }
        expected = {"KafkaProducer._accumulator": ", ".join(_ACCUMULATOR_ATTRIBUTES),
                    "KafkaProducer._sender.wakeup": "callable",
                    "RecordAccumulator.config['message_version']": "2"}
        return kafkainternals.verify("the batch appender (tocsin.producers.kafkasend)", expected, actual,
                                     "KafkaProducer.send()")

    def maintain(self) -> None:
        """Forgets cached partition choices now and then (call from the sending loop)."""
        now = time.monotonic()
        if now - self._tps_at > _TP_CACHE_TTL_S:
            self._tps.clear()
            self._tps_at = now

    def _partition_of(self, topic: str, key: bytes) -> TopicPartition:
        tp = self._tps.get((topic, key))
        if tp is not None:
            return tp
        try:
            # Blocks until the topic's metadata is known (bounded by metadata_timeout_s).
            self.producer._wait_on_metadata(topic, int(self.metadata_timeout_s * 1000))
            partition = self.producer._partition(topic, None, key, None, key, None)
        except (_KafkaError, ValueError) as exc:  # ValueError: kafka-python's verdict on a bad topic name
            raise KafkaError(f"no metadata for topic {topic!r}: {type(exc).__name__}: {exc}") from exc
        if partition is None:
            raise KafkaError(f"topic {topic!r} has no partitions known to the producer")
        tp = self._tps[(topic, key)] = TopicPartition(topic, partition)
        return tp

    def _ack_of(self, batch: Any) -> BatchAck:
        """The ack that covers records appended to ``batch`` now (call under the partition's lock)."""
        with self._lock:
            acks = self._acks.get(batch)
            if acks:
                return acks[-1]
            ack = BatchAck(self._lock)
            ack.watch([batch])
            self._acks[batch] = [ack]
            return ack

    def _split_and_reenqueue(self, batch: Any, now: float | None = None) -> int:
        """kafka-python's split, then the acks waiting on ``batch`` wait on its parts (sender thread)."""
        n = self._split(batch, now)
        tp = batch.topic_partition
        with self._acc._tp_lock(tp):  # type: ignore[union-attr]
            # The parts are at the head of the partition's queue: only this (the sender) thread takes from there.
            parts = list(self._acc._batches[tp])[:n]  # type: ignore[union-attr]
        with self._lock:
            acks = self._acks.pop(batch, None)
            if acks:
                for part in parts:
                    self._acks.setdefault(part, []).extend(acks)
                for ack in acks:
                    ack.replace(batch, parts)
        if acks:
            log.info("Kafka refused a batch as too large; waiting on its parts.",
                     extra={"topic": tp.topic, "partition": tp.partition, "parts": n})
        return n

    def send_many(self, topic: str, key: bytes, values: list[bytes],
                  headers: Sequence[Headers | None] | None = None) -> list[Any]:
        """Queues the records in order; returns the futures whose success acknowledges all of them.

        ``headers``, when given, holds each record's headers (``[(name, bytes)]`` or None), as ``send()`` takes.
        """
        if not values:
            return []
        if headers is not None and len(headers) != len(values):
            raise ValueError("headers must hold one entry per value")
        if not self.fast:
            send = self.producer.send
            if headers is None:
                return [send(topic, key=key, value=v) for v in values]
            return [send(topic, key=key, value=v, headers=list(h) if h else None)
                    for v, h in zip(values, headers, strict=True)]
        tp = self._partition_of(topic, key)
        acc = self._acc
        config = acc.config  # type: ignore[union-attr]
        hdrs = headers if headers is not None else [None] * len(values)
        futures: list[Any] = []
        n = len(values)
        i = 0
        while i < n:
            now = time.monotonic()
            with acc._tp_lock(tp):  # type: ignore[union-attr]
                if acc._closed:  # type: ignore[union-attr]
                    raise KafkaError("the producer is closed")
                dq = acc._batches[tp]  # type: ignore[union-attr]
                batch = dq[-1] if dq else None
                first = i
                if batch is not None:
                    append = batch.records.append
                    while i < n and append(None, key, values[i], hdrs[i]) is not None:
                        i += 1
                if i == first:  # no open batch, or it is full: start one, as RecordAccumulator.append does
                    batch = ProducerBatch(tp, MemoryRecordsBuilder(config["message_version"],
                                                                   config["compression_attrs"],
                                                                   config["batch_size"]), now=now)
                    append = batch.records.append
                    while i < n and append(None, key, values[i], hdrs[i]) is not None:
                        i += 1
                    if i == first:
                        raise KafkaError(f"a record of {len(values[i])} bytes does not fit an empty batch")
                    dq.append(batch)
                    acc._incomplete.add(batch)  # type: ignore[union-attr]
                batch.last_append = now  # type: ignore[union-attr]
                futures.append(self._ack_of(batch))
        self._wakeup()  # type: ignore[misc]
        return futures

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        """One record with its own future (the public, slower path)."""
        return self.producer.send(topic, key=key, value=value)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self.producer.flush(timeout_s)
        except _KafkaError as exc:
            raise KafkaError(f"flushing the producer failed: {type(exc).__name__}: {exc}") from exc
