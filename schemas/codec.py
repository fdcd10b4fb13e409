"""Avro single-object encoding of Tocsin events, with fastavro.

Wire format (Avro 1.10 specification, "Single-object encoding")::

    0xC3 0x01 | CRC-64-AVRO fingerprint of the writer schema's parsing
    canonical form (8 bytes, little-endian) | Avro binary body

Readers keep every released schema version (``SchemaRegistry``) and resolve
the writer's schema by fingerprint against the newest reader schema of the
same record, so an old agent and a new processor interoperate.

Batches: ``LogBatch`` and ``MetricBatch`` carry several events of one service
in one Kafka message (kafka-python spends ~40 us per message, more than the
encoding). ``decode_events`` returns the events of either form, so consumers
never care which one a producer sent.

Timestamps (``timestamp-micros``) stay plain ``int`` microseconds since the
epoch in memory: converting to ``datetime`` on every decode costs more than
the rest of the decode, and the canonical form (hence the fingerprint) does
not include logical types, so the wire bytes are the same either way.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from tocsin.core.errors import DecodeError, EncodeError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10  # 2 magic bytes + 8 fingerprint bytes
SCHEMA_DIR = Path(__file__).parent / "avro"
BATCH_OF = {"LogEvent": "LogBatch", "MetricEvent": "MetricBatch"}
ITEM_OF = {batch: item for item, batch in BATCH_OF.items()}
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


def _strip_logical_types(node: Any) -> Any:
    """Drop ``logicalType`` so fastavro reads and writes timestamps as ints."""
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@dataclass(frozen=True)
class SchemaVersion:
    """One released version of one record schema."""

    name: str
    version: int
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, little-endian as on the wire."""
    parsed: Any
    """fastavro-parsed schema with logical types removed (ints for timestamps)."""
    source: dict[str, Any]


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8 wire bytes naming ``schema``: CRC-64-AVRO, little-endian."""
    # fastavro returns the hex of the little-endian bytes, i.e. already in wire order.
    return bytes.fromhex(_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class SchemaRegistry:
    """Every schema version kept in a directory, indexed by name and fingerprint.

    >>> reg = SchemaRegistry.load()
    >>> reg.latest("LogEvent").version >= 1
    True
    """

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_fp: dict[bytes, SchemaVersion] = {}
        self._latest: dict[str, SchemaVersion] = {}
        for v in versions:
            self._by_fp[v.fingerprint] = v
            cur = self._latest.get(v.name)
            if cur is None or v.version > cur.version:
                self._latest[v.name] = v

    @classmethod
    def load(cls, directory: Path | str = SCHEMA_DIR) -> SchemaRegistry:
        versions = []
        for path in sorted(Path(directory).glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise EncodeError(f"{path}: schema file names must look like Name.vN.avsc")
            source = json.loads(path.read_text())
            if source.get("name") != m["name"]:
                raise EncodeError(f"{path}: record name {source.get('name')!r} != file name")
            parsed = fastavro.parse_schema(_strip_logical_types(copy.deepcopy(source)))
            versions.append(
                SchemaVersion(m["name"], int(m["version"]), schema_fingerprint(source), parsed, source)
            )
        return cls(versions)

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self._latest[name]
        except KeyError:
            raise EncodeError(f"no schema named {name!r}; known: {sorted(self._latest)}") from None

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fp)

    @property
    def versions(self) -> list[SchemaVersion]:
        return list(self._by_fp.values())

    @property
    def names(self) -> list[str]:
        return sorted(self._latest)


class Codec:
    """Encodes records with the newest schema of their name; decodes any known version.

    >>> codec = default_codec()
    >>> data = codec.encode("MetricEvent", {"event_id": "1", "ts": 0, "service": "s",
    ...     "host": "h", "name": "cpu_usage", "value": 1.0})
    >>> codec.decode(data)[1]["value"]
    1.0
    """

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._writers: dict[str, tuple[bytes, Any]] = {}
        # fingerprint -> (name, writer, reader or None when they are the same version): a plain dict
        # lookup on the hot path, and it never grows with whatever fingerprints bad input carries.
        self._resolved: dict[bytes, tuple[str, Any, Any]] = {}
        for v in registry.versions:
            reader = registry.latest(v.name)
            self._resolved[v.fingerprint] = (v.name, v.parsed, None if reader is v else reader.parsed)

    def _writer(self, name: str) -> tuple[bytes, Any]:
        w = self._writers.get(name)
        if w is None:
            v = self.registry.latest(name)
            w = self._writers[name] = (MAGIC + v.fingerprint, v.parsed)
        return w

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        header, parsed = self._writer(name)
        buf = io.BytesIO()
        buf.write(header)
        try:
            fastavro.schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{name} record does not fit its schema: {exc}") from exc
        return buf.getvalue()

    def encode_batch(self, item_name: str, records: list[dict[str, Any]]) -> bytes:
        """Several ``item_name`` records in one message (``LogEvent`` -> ``LogBatch``)."""
        return self.encode(BATCH_OF[item_name], {"events": records})

    def decode_events(self, data: bytes | None) -> tuple[str, list[dict[str, Any]]]:
        """``(event record name, events)`` from a single event or a batch message."""
        name, record = self.decode(data)
        item = ITEM_OF.get(name)
        if item is not None:
            return item, record["events"]
        return name, [record]

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """Returns ``(record name, record)``; any failure raises ``DecodeError``."""
        if not data or len(data) < HEADER_LEN:
            raise DecodeError(f"message of {len(data or b'')} bytes is shorter than the 10-byte header")
        if type(data) is not bytes:
            data = bytes(data)  # memoryview/bytearray: slices below must be hashable bytes
        if data[:2] != MAGIC:
            raise DecodeError(f"not Avro single-object encoding: marker {data[:2].hex()} != c301")
        resolved = self._resolved.get(data[2:HEADER_LEN])
        if resolved is None:
            raise DecodeError(f"unknown writer schema fingerprint {data[2:HEADER_LEN][::-1].hex()}")
        name, writer, reader = resolved
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise DecodeError(f"{name} body does not decode: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{name} body has {len(data) - buf.tell()} trailing bytes")
        return name, record


@functools.cache
def default_codec() -> Codec:
    """The process-wide codec over the schemas shipped in ``schemas/avro``."""
    return Codec(SchemaRegistry.load())
