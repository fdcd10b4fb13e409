"""Small helpers every event producer uses: event time, ids, host name, record names."""

from __future__ import annotations

import os
import socket
import time
import uuid

LOG_EVENT = "LogEvent"
METRIC_EVENT = "MetricEvent"
HEALTH_EVENT = "HealthEvent"
ALERT_EVENT = "AlertEvent"
CONTROL_EVENT = "ControlEvent"

HOSTNAME = os.environ.get("TOCSIN_HOSTNAME") or socket.gethostname()


def now_us() -> int:
    """Event time: microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


def new_event_id() -> str:
    """A random unique id for events that have no natural identity."""
    return uuid.uuid4().hex


def iso(ts_us: int) -> str:
    """RFC 3339 UTC with microseconds, as the seed's API printed timestamps."""
    secs, micros = divmod(ts_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"
