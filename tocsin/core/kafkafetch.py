"""A leaner record reader for kafka-python's consumer: the same records, about half the Python per record.

kafka-python parses every record of a fetched batch with seven varint calls,
builds a ``DefaultRecord``, then a ``ConsumerRecord`` through deserializer,
CRC and size bookkeeping calls: about 4-5 µs per record on this project's
machine, as much as decoding the Avro body. ``install(consumer)`` swaps the
per-partition record reader of one consumer for ``LeanPartitionRecords``,
which reads v2 batches with inline varints and builds the same
``ConsumerRecord`` tuples (same fields and values; checksum ``None`` as
kafka-python gives for v2). Everything else (fetching, positions, rebalances,
decompression, CRC checks, control and aborted batches, older formats) stays
kafka-python's: batches the lean path does not handle go to kafka-python's
own code, record by record.

kafka-python is pinned (pyproject.toml); its ``Fetcher`` creates its readers
via ``self.PartitionRecords``. ``SURFACE`` names every structure the lean
reader relies on (the ``ConsumerRecord`` fields, the v2 batch header struct,
``PartitionRecords`` methods and signatures); ``supported()`` compares it
with the installed kafka-python once per process (``tocsin.core.kafkainternals``)
and, on any difference, logs a WARNING naming it; ``install`` then leaves the
consumer with kafka-python's own reader.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterator
from typing import Any

from kafka.errors import CorruptRecordError
from kafka.record.util import decode_varint

from tocsin.core import kafkainternals
from tocsin.core.kafkainternals import attributes, signature

log = logging.getLogger(__name__)

try:
    from kafka.consumer.fetcher import ConsumerRecord, Fetcher
    from kafka.record.default_records import DefaultRecordBatch

    _Base: Any = Fetcher.PartitionRecords
except (ImportError, AttributeError):  # a kafka-python without these internals: install() is a no-op
    ConsumerRecord = DefaultRecordBatch = Fetcher = _Base = None  # type: ignore[assignment,misc]

_new = tuple.__new__
READ_UNCOMMITTED = 0
# Attributes PartitionRecords.__init__ sets that the lean reader reads or writes.
_STATE = ("isolation_level", "check_crcs", "next_fetch_offset", "records_read", "bytes_read", "leader_epoch")
_BATCH = ("_buffer", "_header_data", "_pos", "_maybe_uncompress", "is_control_batch", "leader_epoch",
          "next_offset", "validate_crc", "magic", "base_offset")

# What the lean reader relies on, as kafka-python 3.0.12 has it (see tocsin.core.kafkainternals).
SURFACE: kafkainternals.Surface = {
    "ConsumerRecord._fields": "topic, partition, leader_epoch, offset, timestamp, timestamp_type, key, value, "
                              "headers, checksum, serialized_key_size, serialized_value_size, serialized_header_size",
    # base_offset, length, leader_epoch, magic, crc, attributes, last_offset_delta, first_timestamp,
    # max_timestamp, producer_id, producer_epoch, base_sequence, record_count: _read_v2 indexes h[0..12].
    "DefaultRecordBatch.HEADER_STRUCT.format": ">qiibIhiqqqhii",
    "DefaultRecordBatch.TIMESTAMP_TYPE_MASK": "8",
    "DefaultRecordBatch attributes": ", ".join(_BATCH),
    "Fetcher creates readers with": "self.PartitionRecords(",
    "PartitionRecords.__init__": "(self, fetch_offset, tp, records, key_deserializer=…, value_deserializer=…, "
                                 "check_crcs=…, isolation_level=…, aborted_transactions=…, metric_aggregator=…, "
                                 "on_drain=…)",
    "PartitionRecords.__init__ sets": ", ".join(_STATE),
    "PartitionRecords._unpack_records": "(self, tp, records, key_deserializer, value_deserializer)",
    "PartitionRecords.drain": "(self)",
    "PartitionRecords methods": "_consume_aborted_transactions_up_to, _contains_abort_marker, _is_batch_aborted, take",
    "decode_varint": "(buffer, pos=…)",
}


def installed_surface() -> kafkainternals.Surface:
    """The installed kafka-python's side of ``SURFACE``."""
    def sets() -> str:
        src = inspect.getsource(_Base.__init__)
        return ", ".join(a for a in _STATE if f"self.{a} =" in src)

    return kafkainternals.probe({
        "ConsumerRecord._fields": lambda: ", ".join(ConsumerRecord._fields),
        "DefaultRecordBatch.HEADER_STRUCT.format": lambda: DefaultRecordBatch.HEADER_STRUCT.format,
        "DefaultRecordBatch.TIMESTAMP_TYPE_MASK": lambda: str(DefaultRecordBatch.TIMESTAMP_TYPE_MASK),
        "DefaultRecordBatch attributes": lambda: attributes(DefaultRecordBatch, _BATCH),
        "Fetcher creates readers with": lambda: ("self.PartitionRecords(" if "self.PartitionRecords("
                                                 in inspect.getsource(Fetcher) else kafkainternals.MISSING),
        "PartitionRecords.__init__": lambda: signature(_Base.__init__),
        "PartitionRecords.__init__ sets": sets,
        "PartitionRecords._unpack_records": lambda: signature(_Base._unpack_records),
        "PartitionRecords.drain": lambda: signature(_Base.drain),
        "PartitionRecords methods": lambda: attributes(_Base, ("_consume_aborted_transactions_up_to",
                                                               "_contains_abort_marker", "_is_batch_aborted",
                                                               "take")),
        "decode_varint": lambda: signature(decode_varint),
    })


@functools.cache
def supported() -> bool:
    """Once per process: does the installed kafka-python have what the lean reader relies on?"""
    return kafkainternals.verify("the lean record reader (tocsin.core.kafkafetch)", SURFACE, installed_surface(),
                                 "kafka-python's own record reader")


def install(consumer: Any) -> bool:
    """Use the lean reader for ``consumer``'s fetches; False (and unchanged) where kafka-python differs."""
    fetcher = getattr(consumer, "_fetcher", None)
    if not supported() or fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        return False
    if fetcher.config.get("key_deserializer") or fetcher.config.get("value_deserializer"):
        return False  # raw bytes only: deserializers are kafka-python's business
    fetcher.PartitionRecords = LeanPartitionRecords
    return True


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    return decode_varint(buf, pos)


class LeanPartitionRecords(_Base or object):  # type: ignore[misc]
    """``Fetcher.PartitionRecords`` with v2 batches read inline (see the module docstring)."""

    def _unpack_records(self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
                        ) -> Iterator[Any]:
        if self.isolation_level != READ_UNCOMMITTED or key_deserializer or value_deserializer:
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        topic, partition = tp.topic, tp.partition
        try:
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(
                        f"Record batch for partition {tp} at offset {batch.base_offset} failed crc check")
                if not isinstance(batch, DefaultRecordBatch):  # message format v0/v1: kafka-python's way
                    yield from self._legacy(tp, batch)
                    batch = records.next_batch()
                    continue
                self.leader_epoch = epoch = batch.leader_epoch
                if batch.is_control_batch:  # transaction markers are not returned to consumers
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                batch._maybe_uncompress()
                yield from self._read_v2(batch, topic, partition, epoch)
                batch = records.next_batch()
            if last_batch is not None and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()
        except StopIteration:  # as kafka-python: a StopIteration must not end the generator silently
            log.exception("StopIteration raised unpacking messageset")
            raise RuntimeError("StopIteration raised unpacking messageset") from None

    def _read_v2(self, batch: Any, topic: str, partition: int, epoch: int) -> Iterator[Any]:
        h = batch._header_data  # base_offset, length, epoch, magic, crc, attributes, last_delta, first_ts, max_ts...
        base_offset, first_ts, max_ts, count = h[0], h[7], h[8], h[12]
        log_append = bool(h[5] & DefaultRecordBatch.TIMESTAMP_TYPE_MASK)
        ts_type = 1 if log_append else 0
        buf = bytes(batch._buffer)
        pos = batch._pos
        end = len(buf)
        read = 0
        try:
            # Every varint is decoded inline, one-byte case first, not through a helper: a call per field
            # is most of what made kafka-python's reader slow. The repetition below is on purpose.
            for _ in range(count):
                b = buf[pos]  # length: varint
                if b < 0x80:
                    length, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    length, pos = decode_varint(buf, pos)
                start = pos
                pos += 1  # attributes: int8, unused
                b = buf[pos]  # timestamp delta: varlong
                if b < 0x80:
                    ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    ts_delta, pos = decode_varint(buf, pos)
                b = buf[pos]  # offset delta
                if b < 0x80:
                    offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    offset_delta, pos = decode_varint(buf, pos)
                b = buf[pos]  # key length, -1 for null
                if b < 0x80:
                    klen, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    klen, pos = decode_varint(buf, pos)
                if klen >= 0:
                    key = buf[pos:pos + klen]
                    pos += klen
                else:
                    key = None
                b = buf[pos]  # value length, -1 for null
                if b < 0x80:
                    vlen, pos = (b >> 1) ^ -(b & 1), pos + 1
                else:
                    vlen, pos = decode_varint(buf, pos)
                if vlen >= 0:
                    value = buf[pos:pos + vlen]
                    pos += vlen
                else:
                    value = None
                nheaders, pos = _varint(buf, pos)
                headers = []
                header_size = -1
                if nheaders:
                    if nheaders < 0:
                        raise CorruptRecordError(f"Found invalid number of record headers {nheaders}")
                    header_size = 0
                    for _h in range(nheaders):
                        hk_len, pos = _varint(buf, pos)
                        if hk_len < 0:
                            raise CorruptRecordError(f"Invalid negative header key size {hk_len}")
                        hkey = buf[pos:pos + hk_len].decode("utf-8")
                        pos += hk_len
                        hv_len, pos = _varint(buf, pos)
                        if hv_len >= 0:
                            hval = buf[pos:pos + hv_len]
                            pos += hv_len
                            header_size += hk_len + hv_len
                        else:
                            hval = None
                            header_size += hk_len
                        headers.append((hkey, hval))
                if pos - start != length:
                    raise CorruptRecordError(f"Invalid record size: expected to read {length} bytes in record "
                                             f"payload, but instead read {pos - start}")
                if pos > end:
                    raise CorruptRecordError("record runs past the end of its batch")
                offset = base_offset + offset_delta
                read += 1
                self.next_fetch_offset = offset + 1
                yield _new(ConsumerRecord, (
                    topic, partition, epoch, offset, max_ts if log_append else first_ts + ts_delta, ts_type,
                    key, value, headers, None, -1 if key is None else klen, -1 if value is None else vlen,
                    header_size))
        except (IndexError, ValueError) as exc:  # as kafka-python: a short buffer, a header key not UTF-8
            raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
        finally:
            self.records_read += read
            self.bytes_read += end - batch._pos if read == count else 0
        if pos != end:
            raise CorruptRecordError(f"{end - pos} unconsumed bytes after all records consumed")

    def _legacy(self, tp: Any, batch: Any) -> Iterator[Any]:
        """v0/v1 message sets, exactly as kafka-python unpacks them (a broker older than Kafka 0.11)."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(f"Record for partition {tp} at offset {record.offset} failed crc check")
            key, value = record.key, record.value
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                                 record.timestamp_type, key, value, record.headers, record.checksum,
                                 len(key) if key is not None else -1, len(value) if value is not None else -1, -1)
