"""Which records are valid on which topic (one reason text for every stage), and hostile text made safe.

``record_reason(kind, name)`` and ``event_reason(kind, rec)`` decide for the
processor and the ClickHouse sink alike, so a poison record is dead-lettered
by both with the same ``error`` header: a record of another type on the topic
(an AlertEvent produced to tocsin.logs is not alert history), an empty
service, NaN or infinite numbers, timestamps before 2000 and absurd values.
``kind`` is the topic's role: logs, metrics, health or alerts.

``safe_text`` shows control characters escaped (``\\x1b`` as the four
characters ``\\x1b``), so an ANSI sequence in a service name, label or log
message can neither recolour nor rewrite a terminal, a text or Markdown file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

RECORDS_OF_KIND = {"logs": ("LogEvent", "LogBatch"), "metrics": ("MetricEvent", "MetricBatch"),
                   "health": ("HealthEvent",), "alerts": ("AlertEvent",)}
"""The records each topic carries (an event, or a batch of them)."""

MIN_TS_US = 946_684_800_000_000
"""2000-01-01T00:00:00Z: no Tocsin event happened before (a 0 or seconds-for-microseconds clock bug)."""
MAX_ABS_VALUE = 1e15
"""Larger metric values and response times are unit bugs (ns as s), not measurements."""
ALERT_STATES = frozenset({"inactive", "pending", "firing", "resolved"})
SEVERITIES = frozenset({"none", "info", "warning", "critical"})


def record_reason(kind: str, name: str) -> str | None:
    """Why a ``name`` record does not belong on a ``kind`` topic, or None."""
    expected = RECORDS_OF_KIND[kind]
    if name in expected:
        return None
    return f"a {name} on the {kind} topic (expected {expected[0]})"


def event_reason(kind: str, rec: dict[str, Any]) -> str | None:
    """Why one decoded event of a ``kind`` topic is unusable, or None. Field types are the schema's."""
    ts = rec["ts"]
    if ts < MIN_TS_US:
        return f"absurd timestamp {ts!r}: before 2000-01-01"
    if kind == "alerts":
        return _alert_reason(rec)
    if not rec["service"] or not rec["service"].strip():
        return "empty service"
    if kind == "metrics":
        v = rec["value"]
        if not -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE:  # also false for NaN
            return f"absurd metric value {v!r} for {rec['name']!r}"
        if not rec["name"]:
            return "metric without a name"
    elif kind == "health":
        v = rec["response_time_ms"]
        if v is not None and not 0 <= v <= MAX_ABS_VALUE:
            return f"absurd response_time_ms {v!r}"
    return None


def screen(kind: str, value: bytes, codec: Any, batched: bool) -> tuple[bytes | None, list[tuple[bytes, str]]]:
    """A stage's verdict on one Kafka value of a ``kind`` topic: ``(value to keep or None, dead letters)``.

    ``codec`` is Tocsin's Avro codec (``decode_events``, ``encode``, ``encode_batch``; DecodeError
    propagates). A bad event inside a good batch goes alone, re-encoded, and the batch is kept
    re-encoded without it, as the processor does; each dead letter is ``(value, reason)``.
    """
    name, events = codec.decode_events(value)
    reason = record_reason(kind, name)
    if reason is not None:
        return None, [(value, reason)]
    verdicts = [event_reason(kind, e) for e in events]
    if not any(verdicts):
        return value, []
    if not batched:
        return None, [(value, str(verdicts[0]))]
    dead = [(codec.encode(name, e), r) for e, r in zip(events, verdicts, strict=True) if r]
    good = [e for e, r in zip(events, verdicts, strict=True) if not r]
    return (codec.encode_batch(name, good) if good else None), dead


def _alert_reason(rec: dict[str, Any]) -> str | None:
    for name in ("event_id", "alert_id", "fingerprint", "rule"):
        if not rec[name]:
            return f"alert without {name}"
    if rec["state"] not in ALERT_STATES:
        return f"unknown alert state {rec['state'][:40]!r}"
    if rec["severity"] not in SEVERITIES:
        return f"unknown alert severity {rec['severity'][:40]!r}"
    for name in ("value", "threshold"):
        v = rec[name]
        if v is not None and not math.isfinite(v):
            return f"alert {name} {v!r} is not a finite number"
    if rec["started_at"] < MIN_TS_US or rec["started_at"] > rec["ts"]:
        return f"alert started_at {rec['started_at']!r} is not between 2000-01-01 and its ts"
    return None

# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides/isolates (Trojan Source).
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_LINE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m[0])
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(value: object, *, one_line: bool = False) -> str:
    """``value`` as text with control characters escaped; ``one_line`` escapes newline and tab too."""
    text = value if isinstance(value, str) else str(value)
    return (_CONTROL_LINE_RE if one_line else _CONTROL_RE).sub(_escape, text)


_JSON_UNSAFE_RE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with DEL, C1 and bidi controls as ``\\uXXXX``.

    json already escapes C0 controls; these it leaves raw. The result decodes to the same value.
    """
    return _JSON_UNSAFE_RE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def safe_cells(values: Iterable[object]) -> list[Any]:
    """Cells for a rich table: control characters escaped and never read as rich markup (``[red]``)."""
    from rich.text import Text

    return [Text(safe_text("" if v is None else v, one_line=True)) for v in values]
