"""Records to Avro ``LogEvent`` values (and the ``MetricEvent`` values some parsers derive from them).

A record's event_id is its file generation's prefix plus its start offset in
hex, so the same line read again (after a rewind or a crash) has the same id.
An event larger than ``max_event_bytes`` has its message (then its attrs) cut
and is marked ``truncated``, so the broker never refuses it as too large.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tocsin.core.events import HOSTNAME, now_us
from tocsin.producers.logship.reader import Tailer, cut_utf8
from tocsin.producers.logship.stats import ShipStats
from tocsin.producers.multiline import Record

TRUNCATED_MARK = "true"


def encode_records(t: Tailer, records: list[Record], max_event: int, encode_metric: Callable[[dict[str, Any]], bytes],
                   stats: ShipStats) -> tuple[list[bytes], list[bytes]]:
    """(log event values, metric event values) of ``records`` read from ``t``, in order."""
    source = t.source
    parse = source.parser.parse
    encode = source.encode
    service = source.service
    prefix = t.state.id
    truncated = t.truncated
    emits_metrics = source.parser.emits_metrics
    read_ts = now_us()
    values: list[bytes] = []
    metric_values: list[bytes] = []
    append = values.append
    for data, start, _end, nlines in records:
        rec = parse(data)
        if rec["ts"] is None:
            rec["ts"] = read_ts
        rec["event_id"] = f"{prefix}{start:x}"
        rec["service"] = service
        rec["host"] = HOSTNAME
        if truncated and start in truncated:
            rec["attrs"]["truncated"] = TRUNCATED_MARK
            rec["attrs"]["original_bytes"] = str(truncated.pop(start))
        if nlines > 1:
            rec["attrs"]["lines"] = str(nlines)
        value = encode(rec)
        if len(value) > max_event:
            value = shrink(rec, max_event, encode, stats)
        append(value)
        if emits_metrics:
            for i, (name, val, unit, labels) in enumerate(source.parser.metrics(rec)):
                metric = {"event_id": f"{rec['event_id']}.m{i}", "ts": rec["ts"], "service": service,
                          "host": HOSTNAME, "name": name, "value": val, "unit": unit, "labels": labels}
                metric_values.append(encode_metric(metric))
    return values, metric_values


def shrink(rec: dict[str, Any], max_event: int, encode: Callable[[dict[str, Any]], bytes], stats: ShipStats) -> bytes:
    """Cuts the message (then attrs) of an event too large for the broker; marks it truncated."""
    stats.oversize_events += 1
    attrs = rec["attrs"]
    attrs["truncated"] = TRUNCATED_MARK
    value = encode(rec)
    excess = len(value) - max_event + 64
    msg = rec["message"].encode()
    if excess < len(msg):
        rec["message"] = cut_utf8(msg, len(msg) - excess).decode("utf-8", "replace")
        value = encode(rec)
    if len(value) > max_event:  # the attributes themselves are too big
        rec["attrs"] = {"truncated": TRUNCATED_MARK, "dropped_attrs": str(len(attrs))}
        msg = rec["message"].encode()
        rec["message"] = cut_utf8(msg, max(0, max_event // 2)).decode("utf-8", "replace")
        value = encode(rec)
    return value
