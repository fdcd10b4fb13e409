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

A batch future is done when the broker answered; it failed when it carries an
exception, or a ``record_exceptions_fn`` in its value (see ``batch_failure``).
This relies on kafka-python 3.0 internals (``_accumulator``, ``_sender``,
``ProducerBatch``); where they differ, ``fast`` is False and ``send_many``
falls back to ``send()`` with per-record futures, which ``batch_failure``
understands too.

Install ``crc32c`` beside kafka-python: without it every produced batch is
checksummed in pure Python, which alone caps a producer near 15,000 records/s.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError as _KafkaError
from kafka.structs import TopicPartition

from tocsin.core.errors import KafkaError

log = logging.getLogger(__name__)

# How long a cached partition choice is trusted: a topic that gained
# partitions changes where keys go, as it does for send().
_TP_CACHE_TTL_S = 60.0

try:
    from kafka.producer.producer_batch import ProducerBatch
    from kafka.record.memory_records import MemoryRecordsBuilder
except ImportError:  # pragma: no cover - another kafka-python layout: use send()
    ProducerBatch = None  # type: ignore[assignment,misc]
    MemoryRecordsBuilder = None  # type: ignore[assignment,misc]


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


class RecordSender:
    """Appends runs of (topic, key, value) records to a KafkaProducer; returns futures to watch.

    >>> sender = RecordSender(producer)                          # doctest: +SKIP
    >>> futures = sender.send_many("tocsin.logs", b"shop", values)  # doctest: +SKIP
    >>> all(f.is_done and batch_failure(f) is None for f in futures)  # doctest: +SKIP
    """

    def __init__(self, producer: KafkaProducer, metadata_timeout_s: float = 5.0, fast: bool = True) -> None:
        self.producer = producer
        self.metadata_timeout_s = metadata_timeout_s
        acc = getattr(producer, "_accumulator", None)
        sender = getattr(producer, "_sender", None)
        self.fast = bool(
            fast and ProducerBatch is not None and acc is not None and sender is not None
            and all(hasattr(acc, a) for a in ("_batches", "_tp_lock", "_incomplete", "config"))
            and callable(getattr(sender, "wakeup", None))
            and acc.config.get("message_version", 2) >= 2
        )
        self._acc = acc
        self._wakeup = sender.wakeup if sender is not None else None
        self._tps: dict[tuple[str, bytes], TopicPartition] = {}
        self._tps_at = time.monotonic()

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

    def send_many(self, topic: str, key: bytes, values: list[bytes]) -> list[Any]:
        """Queues the records in order; returns the futures whose success acknowledges all of them."""
        if not values:
            return []
        if not self.fast:
            send = self.producer.send
            return [send(topic, key=key, value=v) for v in values]
        tp = self._partition_of(topic, key)
        acc = self._acc
        config = acc.config
        futures: list[Any] = []
        n = len(values)
        i = 0
        while i < n:
            now = time.monotonic()
            with acc._tp_lock(tp):
                if acc._closed:
                    raise KafkaError("the producer is closed")
                dq = acc._batches[tp]
                batch = dq[-1] if dq else None
                first = i
                if batch is not None:
                    append = batch.records.append
                    while i < n and append(None, key, values[i], None) is not None:
                        i += 1
                if i == first:  # no open batch, or it is full: start one, as RecordAccumulator.append does
                    batch = ProducerBatch(tp, MemoryRecordsBuilder(config["message_version"],
                                                                   config["compression_attrs"],
                                                                   config["batch_size"]), now=now)
                    append = batch.records.append
                    while i < n and append(None, key, values[i], None) is not None:
                        i += 1
                    if i == first:
                        raise KafkaError(f"a record of {len(values[i])} bytes does not fit an empty batch")
                    dq.append(batch)
                    acc._incomplete.add(batch)
                batch.last_append = now  # type: ignore[union-attr]
                futures.append(batch.produce_future)  # type: ignore[union-attr]
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
