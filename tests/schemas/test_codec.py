"""The Avro single-object codec: round trips, schema evolution, and hostile bytes."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tocsin.core.errors import DecodeError, EncodeError
from tocsin.schemas.codec import MAGIC, Codec, SchemaRegistry, default_codec, schema_fingerprint

SAMPLES = {
    "LogEvent": {"event_id": "f:1", "ts": 1_767_225_600_123_456, "service": "shop", "host": "web-1",
                 "level": "ERROR", "logger": "shop.checkout", "message": "payment failed: <timeout>",
                 "trace_id": "abc123", "attrs": {"route": "/checkout", "ü": "ø"}},
    "MetricEvent": {"event_id": "m1", "ts": 1, "service": "shop", "host": "web-1", "name": "api_response_time",
                    "value": 512.25, "unit": "ms", "labels": {"route": "/api/orders/{id}"}},
    "HealthEvent": {"event_id": "h1", "ts": 2, "service": "shop", "host": "web-1", "check": "database",
                    "status": "healthy", "response_time_ms": 12.5, "details": {"query_time_ms": "12.5"},
                    "error": None},
    "AlertEvent": {"event_id": "a1", "ts": 3, "alert_id": "fp-3", "fingerprint": "fp", "rule": "error_rate",
                   "severity": "critical", "previous_severity": "warning", "state": "firing",
                   "previous_state": "firing", "value": 7.0, "threshold": 5.0, "labels": {"service": "shop"},
                   "annotations": {"summary": "7 errors/min"}, "started_at": 1, "ended_at": None,
                   "resolved_by": None, "acked_by": "alice", "acked_at": 2, "ack_note": "on it",
                   "ack_expires_at": 9, "ack_changed_at": 2},
    "ControlEvent": {"event_id": "c1", "ts": 4, "action": "silence_create", "alert_id": None, "fingerprint": None,
                     "silence_id": "s1", "matchers": [{"label": "service", "op": "=", "value": "shop"}],
                     "ends_at": 99, "reason": "maintenance", "actor": "ops", "starts_at": 5, "created_by": "ops"},
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_schema_round_trips(codec: Codec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    assert data[:2] == MAGIC
    assert codec.decode(data) == (name, SAMPLES[name])


def test_every_shipped_schema_has_a_sample() -> None:
    assert set(SAMPLES) | {"LogBatch", "MetricBatch"} == set(default_codec().registry.names)


def test_batch_round_trips_and_single_events_read_the_same_way(codec: Codec) -> None:
    events = [dict(SAMPLES["LogEvent"], event_id=f"f:{i}") for i in range(3)]
    assert codec.decode_events(codec.encode_batch("LogEvent", events)) == ("LogEvent", events)
    assert codec.decode_events(codec.encode("LogEvent", events[0])) == ("LogEvent", events[:1])


def _crc64_avro(data: bytes) -> int:
    """The Avro specification's reference algorithm, written out as an independent oracle."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_is_crc64_avro_of_canonical_form_little_endian() -> None:
    schema = json.loads((Path(__file__).parents[2] / "schemas/avro/LogEvent.v1.avsc").read_text())
    canonical = to_parsing_canonical_form(schema).encode()
    assert schema_fingerprint(schema) == struct.pack("<Q", _crc64_avro(canonical))
    # The specification's own example: '"int"' -> 0x7275d51a3f395c8f.
    assert _crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    assert schema_fingerprint("int") == struct.pack("<Q", 0x7275D51A3F395C8F)


def _write(directory: Path, name: str, version: int, fields: list[dict]) -> None:
    schema = {"type": "record", "name": name, "namespace": "t", "fields": fields}
    (directory / f"{name}.v{version}.avsc").write_text(json.dumps(schema))


def test_v1_writer_is_read_by_v2_reader_with_a_defaulted_field(tmp_path: Path) -> None:
    v1_fields = [{"name": "id", "type": "string"}, {"name": "n", "type": "long"}]
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    _write(old_dir, "Thing", 1, v1_fields)
    _write(new_dir, "Thing", 1, v1_fields)
    _write(new_dir, "Thing", 2, [*v1_fields, {"name": "zone", "type": "string", "default": "eu"}])
    old_agent, new_processor = Codec(SchemaRegistry.load(old_dir)), Codec(SchemaRegistry.load(new_dir))

    data = old_agent.encode("Thing", {"id": "x", "n": 7})
    assert new_processor.decode(data) == ("Thing", {"id": "x", "n": 7, "zone": "eu"})
    # and a v2 message is not readable by the v1-only agent: a typed error, not a crash
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint"):
        old_agent.decode(new_processor.encode("Thing", {"id": "y", "n": 1, "zone": "us"}))


def test_unknown_fingerprint_raises_decode_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint"):
        codec.decode(MAGIC + b"\x00" * 8 + b"\x02a")


@pytest.mark.parametrize("cut", [1, 5, 11, 20, -1])
def test_truncated_message_raises_decode_error(codec: Codec, cut: int) -> None:
    data = codec.encode("LogEvent", SAMPLES["LogEvent"])
    with pytest.raises(DecodeError):
        codec.decode(data[:cut])


def test_wrong_magic_and_trailing_bytes_raise_decode_error(codec: Codec) -> None:
    data = codec.encode("MetricEvent", SAMPLES["MetricEvent"])
    with pytest.raises(DecodeError, match="marker"):
        codec.decode(b"{}" + data[2:])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"\x00")
    with pytest.raises(DecodeError):
        codec.decode(None)


def test_record_that_does_not_fit_raises_encode_error(codec: Codec) -> None:
    with pytest.raises(EncodeError):
        codec.encode("MetricEvent", {**SAMPLES["MetricEvent"], "value": "not a number"})
    with pytest.raises(EncodeError, match="no schema named"):
        codec.encode("Nope", {})


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        default_codec().decode_events(data)


_HEADERS = [MAGIC + default_codec().registry.latest(n).fingerprint for n in sorted(SAMPLES)]


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_HEADERS), st.binary(max_size=200))
def test_known_header_with_garbage_body_raises_only_decode_error(header: bytes, body: bytes) -> None:
    """The harder case: the fingerprint is right, so fastavro really parses the garbage."""
    codec = default_codec()
    try:
        name, events = codec.decode_events(header + body)
    except DecodeError:
        return
    assert name in SAMPLES and events
