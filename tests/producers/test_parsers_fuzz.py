"""Hypothesis over the log parsers: any bytes give a record with the fields the shipper needs, never an error."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tocsin.producers.parsers import make_parser

PARSERS = ["text", "json", "nginx", r"regex:(?P<level>\w+) (?P<message>.*)"]
JSONISH = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
                       lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                       max_leaves=12)


def _check(record: dict) -> None:
    assert isinstance(record["message"], str) and isinstance(record["level"], str)
    assert record["ts"] is None or isinstance(record["ts"], int)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in record.get("attrs", {}).items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=512))
def test_any_bytes_parse_to_a_record(raw):
    for spec in PARSERS:
        _check(make_parser(spec).parse(raw))


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["ts", "timestamp", "time", "level", "levelname", "message", "msg",
                                            "logger", "trace_id", "extra", "event"]), JSONISH, max_size=8))
def test_hostile_json_lines_parse_to_a_record(doc):
    raw = json.dumps(doc, allow_nan=True).encode()
    _check(make_parser("json").parse(raw))
