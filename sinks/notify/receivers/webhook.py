"""Webhook receiver: the Alertmanager webhook v4 JSON, so receivers written for Alertmanager accept it.

Body (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)::

    {"version": "4", "groupKey": ..., "truncatedAlerts": 0, "status": "firing|resolved",
     "receiver": ..., "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": ..., "alerts": [{"status", "labels", "annotations", "startsAt",
     "endsAt", "generatorURL", "fingerprint"}]}

An acknowledged alert (tocsin.processors.ack) also carries ``acknowledgement``
(``by``, ``at``, ``note``, ``expiresAt``), and with ``api.public_url`` set every
alert carries ``links`` (``alert``, ``ack``, ``silence`` pages); Alertmanager's
receivers ignore both.

With ``hmac_secret`` set, ``signature_header`` carries ``sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes, so the receiver can check origin and integrity.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tocsin.core.events import iso
from tocsin.sinks.notify.config import WebhookReceiverConfig
from tocsin.sinks.notify.receivers.base import AlertView, DeliveryResult, Notification, Notifier

ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager puts in endsAt of a firing alert
NOTIFICATION_ID_HEADER = "X-Tocsin-Notification-Id"


def alert_json(alert: AlertView, external_url: str, public_url: str = "") -> dict[str, Any]:
    links = alert.links(public_url)
    return {
        **({"links": links} if links else {}),
        "status": alert.status,
        "labels": alert.am_labels(),
        "annotations": alert.am_annotations(),
        "startsAt": alert.starts_at,
        "endsAt": (alert.ends_at or alert.starts_at) if alert.status == "resolved" else ZERO_TIME,
        "generatorURL": alert.generator_url(external_url),
        "fingerprint": alert.fingerprint,
        **({"acknowledgement": {"by": alert.acked_by, "at": iso(alert.acked_at_us) if alert.acked_at_us else None,
                                "note": alert.ack_note or "",
                                "expiresAt": iso(alert.ack_expires_at_us) if alert.ack_expires_at_us else None}}
           if alert.acked() else {}),
    }


def webhook_payload(n: Notification, max_alerts: int = 0) -> dict[str, Any]:
    """The v4 document for one notification; ``max_alerts`` truncates like Alertmanager's option."""
    alerts = list(n.alerts)
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": n.common_labels,
        "commonAnnotations": n.common_annotations,
        "externalURL": n.external_url,
        "alerts": [alert_json(a, n.external_url, n.public_url) for a in alerts],
    }


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookNotifier(Notifier[WebhookReceiverConfig]):
    """POSTs the v4 JSON; the notification id header lets a receiver drop a retried duplicate."""

    type = "webhook"
    parts = ()

    def send(self, notification: Notification) -> DeliveryResult:
        cfg = self.config
        body = json.dumps(webhook_payload(notification, cfg.max_alerts), separators=(",", ":")).encode()
        headers = {**cfg.headers, NOTIFICATION_ID_HEADER: notification.id}
        if cfg.hmac_secret is not None:
            headers[cfg.signature_header] = sign(cfg.hmac_secret.get_secret_value().encode(), body)
        return self.post_json(cfg.url, body, headers)
