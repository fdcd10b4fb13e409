"""Notifications: routing, silences, time intervals, escalation, templates, the notification log,
delivery with retries and rate limits, the sink, the daily summary, and ``receivers/``.

Exported here is what other areas use; the rest is this package's own. Names resolve on first use
(PEP 562), so reading the config does not import the sink or the receivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin.core.exports import lazy_exports

_EXPORTS = {
    "MatcherSpec": "config",
    "NotifyConfig": "config",
    "NotifySettings": "config",
    "ReceiverConfig": "config",
    "RetryPolicy": "delivery",
    "SummaryConfig": "config",
    "create_event": "silences",
    "expire_event": "silences",
    "parse_duration": "silences",
    "parse_start": "silences",
    "publish": "silences",
    "read_store": "silences",
    "send_probe": "sink",
    "send_summary": "summary",
}
__all__ = [
    "MatcherSpec",
    "NotifyConfig",
    "NotifySettings",
    "ReceiverConfig",
    "RetryPolicy",
    "SummaryConfig",
    "create_event",
    "expire_event",
    "parse_duration",
    "parse_start",
    "publish",
    "read_store",
    "send_probe",
    "send_summary",
]

if TYPE_CHECKING:
    from tocsin.sinks.notify.config import MatcherSpec, NotifyConfig, NotifySettings, ReceiverConfig, SummaryConfig
    from tocsin.sinks.notify.delivery import RetryPolicy
    from tocsin.sinks.notify.silences import (
        create_event,
        expire_event,
        parse_duration,
        parse_start,
        publish,
        read_store,
    )
    from tocsin.sinks.notify.sink import send_probe
    from tocsin.sinks.notify.summary import send_summary


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
