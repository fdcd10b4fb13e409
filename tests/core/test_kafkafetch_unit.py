"""The lean reader against kafka-python's on batches built in memory: formats v1 and v2, corrupt input."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

from tocsin.core.kafkafetch import LeanPartitionRecords

TP = TopicPartition("t", 3)


def _batches(magic: int, compression: int = 0, n: int = 300) -> bytes:
    out = b""
    offset = 0
    for size in (1, 7, n):
        builder = MemoryRecordsBuilder(magic, compression, batch_size=1 << 20, offset=offset)
        for i in range(size):
            headers = [("h", bytes(i % 200)), ("k", b"")] if magic == 2 and i % 3 == 0 else []
            builder.append(1_700_000_000_000 + i * 997, key=None if i % 4 == 0 else b"k" * (i % 90),
                           value=bytes(range(i % 256)) * (1 + i % 3), headers=headers)
        builder.close()
        out += builder.buffer()
        offset += size
    return out


def _take(cls: Any, data: bytes, fetch_offset: int = 0, check_crcs: bool = True) -> list[tuple[Any, ...]]:
    part = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=check_crcs)
    out: list[tuple[Any, ...]] = []
    while part:
        records = part.take(13)
        if not records:
            break
        out.extend(tuple(r) for r in records)
    return out


@pytest.mark.parametrize(("magic", "compression"), [(2, 0), (2, 1), (1, 0), (1, 1)])
def test_same_records_as_kafka_python(magic: int, compression: int) -> None:
    data = _batches(magic, compression)
    expected = _take(Fetcher.PartitionRecords, data)
    assert len(expected) == 308
    assert _take(LeanPartitionRecords, data) == expected
    # A fetch from inside a batch skips the records before the fetch offset.
    assert _take(LeanPartitionRecords, data, fetch_offset=100) == _take(Fetcher.PartitionRecords, data, 100)


def test_position_after_each_take_matches_kafka_python() -> None:
    data = _batches(2)
    std = Fetcher.PartitionRecords(0, TP, MemoryRecords(data))
    lean = LeanPartitionRecords(0, TP, MemoryRecords(data))
    while std:
        a, b = std.take(29), lean.take(29)
        assert [r.offset for r in a] == [r.offset for r in b]
        assert std.next_fetch_offset == lean.next_fetch_offset
        if not a:
            break


def test_a_record_cut_short_is_a_corrupt_record_not_a_crash() -> None:
    data = bytearray(_batches(2, n=20))
    # Lengthen the first record of the last batch: its body now runs into the next record's bytes.
    batches = MemoryRecords(bytes(data))
    starts = []
    pos = 0
    while batches.has_next():
        b = batches.next_batch()
        starts.append(pos)
        pos += b.size_in_bytes
    first_record = starts[-1] + 61  # v2 batch header is 61 bytes
    data[first_record] += 4  # the record's length varint (small, one byte, zigzag): +2 bytes
    with pytest.raises(CorruptRecordError):
        _take(LeanPartitionRecords, bytes(data), check_crcs=False)
    with pytest.raises(CorruptRecordError):
        _take(Fetcher.PartitionRecords, bytes(data), check_crcs=False)
    with pytest.raises(CorruptRecordError):  # and with CRC checks (the default), the batch fails its CRC
        _take(LeanPartitionRecords, bytes(data))
