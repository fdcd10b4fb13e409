"""Alertmanager receiver: POST /api/v2/alerts of a real Alertmanager; a resolve is the same labels with endsAt.

Alertmanager identifies an alert by its label set, so the labels of the
firing and the resolving post must be equal: ``alertname`` (the rule), the
alert's labels and ``severity``. A firing alert's endsAt is now +
``firing_ttl_s`` (repeats refresh it); an escalation also ends the label set
of the previous severity, so a warning does not linger beside its critical.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tocsin.core.events import iso
from tocsin.sinks.notify.config import AlertmanagerReceiverConfig
from tocsin.sinks.notify.receivers.base import AlertView, DeliveryResult, Notification, Notifier

API_PATH = "/api/v2/alerts"
NO_SEVERITY = ("", "none")


def postable_alerts(alert: AlertView, external_url: str, firing_ttl_s: float, now_us: int) -> list[dict[str, Any]]:
    base = {"annotations": {**alert.am_annotations(), "tocsin_fingerprint": alert.fingerprint},
            "startsAt": alert.starts_at, "generatorURL": alert.generator_url(external_url)}
    if alert.status == "resolved":
        return [{**base, "labels": alert.am_labels(), "endsAt": iso(alert.ends_at_us or now_us)}]
    out = [{**base, "labels": alert.am_labels(), "endsAt": iso(now_us + int(firing_ttl_s * 1e6))}]
    if alert.previous_severity not in NO_SEVERITY and alert.previous_severity != alert.severity:
        out.append({**base, "labels": alert.am_labels(alert.previous_severity), "endsAt": iso(now_us)})
    return out


class AlertmanagerNotifier(Notifier[AlertmanagerReceiverConfig]):
    """One POST with every alert of the notification."""

    type = "alertmanager"
    parts = ()

    def send(self, notification: Notification) -> DeliveryResult:
        now = time.time_ns() // 1000
        alerts = [p for a in notification.alerts
                  for p in postable_alerts(a, notification.external_url, self.config.firing_ttl_s, now)]
        return self.post_json(self.config.url.rstrip("/") + API_PATH, json.dumps(alerts).encode())
