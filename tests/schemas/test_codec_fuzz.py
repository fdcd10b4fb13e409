"""Hypothesis over the Avro decoding path: arbitrary or mutated bytes raise DecodeError, never anything else."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.core.errors import DecodeError
from tocsin.core.events import LOG_EVENT
from tocsin.schemas.codec import default_codec

CODEC = default_codec()
GOOD = CODEC.encode(LOG_EVENT, {"event_id": "e", "ts": 1_700_000_000_000_000, "service": "shop", "host": "h",
                                "level": "INFO", "logger": "l", "message": "m", "trace_id": None, "attrs": {"a": "b"}})
BATCH = CODEC.encode_batch(LOG_EVENT, [CODEC.decode(GOOD)[1]] * 3)


def _decode(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else fails the test
        CODEC.decode_events(data)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=256))
def test_arbitrary_bytes(data):
    _decode(data)
    _decode(GOOD[:10] + data)  # a known header, a random body


@settings(max_examples=500, deadline=None)
@given(base=st.sampled_from([GOOD, BATCH]), at=st.integers(min_value=10, max_value=200),
       byte=st.integers(min_value=0, max_value=255), cut=st.integers(min_value=0, max_value=40))
def test_mutated_and_truncated_messages(base, at, byte, cut):
    data = bytearray(base)
    data[at % len(data)] = byte
    _decode(bytes(data))
    _decode(bytes(data[: max(10, len(data) - cut)]))
