"""The ClickHouse sink's client layer: Avro bodies in, rows stored once, bad records isolated.

Wire format handed to ClickHouse: an Avro Object Container File (Avro 1.11
spec, "Object Container Files") per insert, written here without decoding a
row: header (``Obj\\x01``, the writer schema, a sync marker), then **one block
per Kafka message** (count 1, byte size, the message body minus its 10-byte
single-object header, sync). ClickHouse's ``FORMAT Avro`` decodes it into the
schema's ingest ``Null`` table, whose views unnest batches into the event
tables (see ``sinks/clickhouse/schema.py``). One block per message keeps a
corrupt body from bleeding into its neighbours: a short body fails the insert,
trailing bytes stay inside their block. ClickHouse is the decoder of record
here and is more lenient than the codec in two ways: it ignores trailing bytes
after a record and stores strings as bytes without checking UTF-8.

Every insert carries an ``insert_deduplication_token`` chosen by the caller;
ClickHouse derives the tokens of the views' inserts from it, so a retried
insert is stored once in the tables and the rollups alike.

Fault switch (tests only; off unless set): while ``TOCSIN_FAULT_CLICKHOUSE_UNTIL``
(epoch seconds) lies in the future, or the file named by
``TOCSIN_FAULT_CLICKHOUSE_FILE`` exists, every insert fails as if ClickHouse
were down.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tocsin.core.errors import DecodeError, StoreError
from tocsin.schemas.codec import HEADER_LEN, MAGIC, default_codec
from tocsin.sinks.clickhouse.schema import INGEST

FAULT_UNTIL_ENV = "TOCSIN_FAULT_CLICKHOUSE_UNTIL"
FAULT_FILE_ENV = "TOCSIN_FAULT_CLICKHOUSE_FILE"

# ClickHouse error codes that mean "this data cannot be stored", as opposed to
# "ClickHouse cannot take it now": retrying them would stall the sink forever.
# (src/Common/ErrorCodes.cpp; 1001 is std::exception, which avro-cpp raises.)
DATA_ERROR_CODES = frozenset({
    6, 27, 32, 33, 38, 41, 53, 69, 70, 72, 76, 117, 130, 131, 190, 321, 344, 407,
})
_CODE_RE = re.compile(r"Code: (\d+)")

# Insert settings: one block per insert (so a parse error writes nothing),
# token dedup through the views, and no refusal of old or future timestamps
# spread over many days (they are data, not an error).
INSERT_SETTINGS: dict[str, Any] = {
    "input_format_parallel_parsing": 0,
    "max_insert_block_size": 10_000_000,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "throw_on_max_partitions_per_insert_block": 0,
    "input_format_avro_allow_missing_fields": 1,
}


def _zigzag(n: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_long(data: bytes | memoryview, pos: int = 0) -> int:
    """The Avro ``long`` at ``pos``; raises DecodeError on a truncated varint."""
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated or oversized Avro varint")
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7


def container(schema_json: str, bodies: list[bytes]) -> bytes:
    """An Avro Object Container File with one block per body (null codec)."""
    sync = hashlib.md5(schema_json.encode()).digest()  # any 16 bytes; stable keeps inserts byte-identical
    meta = {"avro.schema": schema_json.encode(), "avro.codec": b"null"}
    parts = [b"Obj\x01", _zigzag(len(meta))]
    for key, value in meta.items():
        parts += [_zigzag(len(key)), key.encode(), _zigzag(len(value)), value]
    parts += [_zigzag(0), sync]
    one = _zigzag(1)
    for body in bodies:
        parts += [one, _zigzag(len(body)), body, sync]
    return b"".join(parts)


@dataclass(frozen=True)
class Writer:
    """What the sink needs to know about one writer schema (by fingerprint)."""

    fingerprint: bytes
    record: str
    ingest_table: str
    schema_json: str
    is_batch: bool


class Framer:
    """Classifies a Kafka value by its single-object header, without decoding the body.

    ``frame(value) -> (Writer, body, events)``; raises DecodeError for values
    that are not Tocsin events or are events the sink does not store.
    """

    def __init__(self) -> None:
        self._registry = default_codec().registry
        self._writers: dict[bytes, Writer] = {}

    def writer(self, fp: bytes) -> Writer:
        w = self._writers.get(fp)
        if w is None:
            version = self._registry.by_fingerprint(fp)
            if version is None:
                raise DecodeError(f"unknown writer schema fingerprint {fp[::-1].hex()}")
            if version.name not in INGEST:
                raise DecodeError(f"{version.name} records are not stored by the ClickHouse sink")
            w = Writer(fp, version.name, INGEST[version.name][0], json.dumps(version.source),
                       version.name.endswith("Batch"))
            self._writers[fp] = w
        return w

    def is_batch(self, value: bytes) -> bool:
        """Whether ``value`` (a valid single-object message) is a batch; False when it cannot tell."""
        version = self._registry.by_fingerprint(bytes(value[2:HEADER_LEN])) if len(value) >= HEADER_LEN else None
        return version is not None and version.name.endswith("Batch")

    def frame(self, value: bytes | None) -> tuple[Writer, bytes, int]:
        if not value or len(value) < HEADER_LEN:
            raise DecodeError(f"message of {len(value or b'')} bytes is shorter than the 10-byte header")
        if value[:2] != MAGIC:
            raise DecodeError(f"not Avro single-object encoding: marker {value[:2].hex()} != c301")
        w = self.writer(bytes(value[2:HEADER_LEN]))
        body = value[HEADER_LEN:]
        # A batch body starts with the events array's first block count (negative: a byte size follows).
        events = abs(read_long(body)) if w.is_batch else 1
        return w, body, events


class FaultSwitch:
    """Fails inserts while a test asks it to (environment or file flag, checked per insert)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env

    def active(self) -> bool:
        until = self._env.get(FAULT_UNTIL_ENV)
        if until:
            try:
                if time.time() < float(until):
                    return True
            except ValueError:
                pass
        flag = self._env.get(FAULT_FILE_ENV)
        return bool(flag) and os.path.exists(flag)

    def check(self) -> None:
        if self.active():
            raise StoreError("ClickHouse insert failed: fault injected by the test switch")


def error_code(exc: BaseException) -> int | None:
    m = _CODE_RE.search(str(exc))
    return int(m.group(1)) if m else None


def is_data_error(exc: BaseException) -> bool:
    """True when ClickHouse refused the data itself (retrying cannot help)."""
    if isinstance(exc, StoreError):
        return False
    code = error_code(exc)
    if code == 1001:
        return "avro" in str(exc).lower()
    return code in DATA_ERROR_CODES


@dataclass
class Group:
    """Messages of one topic partition and one writer schema, inserted as one block under one token."""

    writer: Writer
    token: str
    bodies: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    events: int = 0


@dataclass
class Rejected:
    """A message ClickHouse (or the codec) refused, for the dead-letter topic."""

    offset: int
    key: bytes | None
    value: bytes
    reason: str


class IngestWriter:
    """Inserts groups into their ingest tables; isolates bad messages instead of stalling.

    ``insert(group) -> list[Rejected]``: raises ``StoreError`` when ClickHouse is
    unavailable (the caller retries the same group with the same token later).
    On a data error it narrows down, deterministically, so a retry after a
    crash makes the same inserts with the same tokens:

    1. decode every message with the codec; undecodable ones are rejected;
    2. insert the rest under the group's token;
    3. if ClickHouse still refuses, insert them one by one (token ``<group
       token>/<offset>``) and reject those it refuses.
    """

    def __init__(self, client: Any, database: str, fault: FaultSwitch | None = None) -> None:
        self.client = client
        self.database = database
        self.fault = fault or FaultSwitch()

    def _raw(self, writer: Writer, bodies: list[bytes], token: str) -> None:
        self.fault.check()
        try:
            self.client.raw_insert(
                f"`{self.database}`.`{writer.ingest_table}`", None, container(writer.schema_json, bodies),
                settings={**INSERT_SETTINGS, "insert_deduplication_token": token}, fmt="Avro",
            )
        except Exception as exc:
            if is_data_error(exc):
                raise
            raise StoreError(f"ClickHouse insert into {writer.ingest_table} failed: {type(exc).__name__}: "
                             f"{str(exc)[:500]}") from exc

    def insert(self, group: Group) -> list[Rejected]:
        if not group.bodies:
            return []
        try:
            self._raw(group.writer, group.bodies, group.token)
            return []
        except StoreError:
            raise
        except Exception:
            pass  # a data error: narrow it down below
        codec = default_codec()
        rejected: list[Rejected] = []
        keep: list[int] = []
        for i, value in enumerate(group.values):
            try:
                codec.decode(value)
                keep.append(i)
            except DecodeError as exc:
                rejected.append(Rejected(group.offsets[i], group.keys[i], value, exc.reason))
        if keep:
            try:
                self._raw(group.writer, [group.bodies[i] for i in keep], group.token)
                keep = []
            except StoreError:
                raise
            except Exception:
                pass
        for i in keep:
            try:
                self._raw(group.writer, [group.bodies[i]], f"{group.token}/{group.offsets[i]}")
            except StoreError:
                raise
            except Exception as exc:
                reason = f"ClickHouse refused the record: {str(exc)[:1000]}"
                rejected.append(Rejected(group.offsets[i], group.keys[i], group.values[i], reason))
        rejected.sort(key=lambda r: r.offset)
        return rejected
