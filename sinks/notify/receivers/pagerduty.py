"""PagerDuty receiver: Events API v2, one trigger, acknowledge or resolve event per alert, ``dedup_key`` = fingerprint.

Event (developer.pagerduty.com/docs/events-api-v2/trigger-events)::

    {"routing_key", "event_action": "trigger|acknowledge|resolve", "dedup_key": <fingerprint>,
     "payload": {"summary", "source", "severity", "timestamp", "component", "group",
                 "class", "custom_details"}, "client", "client_url"}

An alert that carries a live ack (``acked_by``, tocsin.processors.ack) is sent
as ``acknowledge`` with the incident's dedup_key and no payload, as the Events
API wants. PagerDuty answers 202. A notification with several alerts is several events;
those already accepted are not sent again when the rest is retried, so a retry
never doubles a trigger.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from tocsin.sinks.notify.config import PagerDutyReceiverConfig
from tocsin.sinks.notify.receivers.base import AlertView, DeliveryResult, Notification, Notifier

SUMMARY_MAX_CHARS = 1024  # PagerDuty truncates payload.summary at 1024 characters
# Tocsin severity -> PagerDuty's critical, error, warning or info.
SEVERITY_MAP = {"critical": "critical", "error": "error", "warning": "warning", "info": "info", "none": "info"}


def event_action(alert: AlertView) -> str:
    if alert.status == "resolved":
        return "resolve"
    return "acknowledge" if alert.acked() else "trigger"


LINK_TEXT = {"alert": "Alert page", "ack": "Acknowledge", "silence": "Silence"}


def pagerduty_event(alert: AlertView, cfg: PagerDutyReceiverConfig, summary: str, group: str,
                    public_url: str = "") -> dict[str, Any]:
    action = event_action(alert)
    event: dict[str, Any] = {
        "routing_key": cfg.routing_key.get_secret_value(),
        "event_action": action,
        "dedup_key": alert.fingerprint,
        "client": cfg.client,
    }
    if cfg.client_url:
        event["client_url"] = cfg.client_url
    links = alert.links(public_url) if action == "trigger" else {}
    if links:  # the Events API takes links on a trigger: the alert's page, its ack and silence pages
        event["links"] = [{"href": href, "text": LINK_TEXT[name]} for name, href in links.items()]
    if action == "trigger":
        event["payload"] = {
            "summary": (summary or f"{alert.rule} on {alert.service}")[:SUMMARY_MAX_CHARS],
            "source": cfg.source or alert.labels.get("host") or alert.service or "tocsin",
            "severity": SEVERITY_MAP.get(alert.severity, "info"),
            "timestamp": alert.starts_at,
            "component": alert.service,
            "group": group,
            "class": alert.rule,
            "custom_details": {"labels": alert.am_labels(), "annotations": alert.am_annotations(),
                               "alert_id": alert.alert_id},
        }
    return event


class PagerDutyNotifier(Notifier[PagerDutyReceiverConfig]):
    """Sends each alert of a notification as its own event; remembers which were accepted across retries."""

    type = "pagerduty"
    parts = ()
    alert_parts = ("summary",)

    def __init__(self, config: PagerDutyReceiverConfig) -> None:
        super().__init__(config)
        self._accepted: dict[str, set[str]] = {}  # notification id -> event keys already accepted
        self._lock = threading.Lock()

    def send(self, notification: Notification) -> DeliveryResult:
        group = ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items()))
        with self._lock:
            done = self._accepted.setdefault(notification.id, set())
        result = DeliveryResult.sent(202)
        for alert in notification.alerts:
            key = f"{alert.fingerprint}:{event_action(alert)}"
            if key in done:
                continue
            summary = notification.rendered.get(f"summary@{alert.fingerprint}", "")
            body = json.dumps(pagerduty_event(alert, self.config, summary, group, notification.public_url)).encode()
            result = self.post_json(self.config.url, body)
            if result.outcome != "sent":
                break
            done.add(key)
        if result.outcome != "retry":  # finished one way or the other: forget the progress
            with self._lock:
                self._accepted.pop(notification.id, None)
        return result
