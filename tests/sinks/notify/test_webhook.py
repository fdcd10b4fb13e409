"""Webhook receiver against a real HTTP server: Alertmanager v4 JSON field by field, HMAC, retries, 4xx."""

from __future__ import annotations

import hashlib
import hmac

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import (
    alert_event,
    deliver_one,
    produce_alerts,
    query,
    record,
    resolved_of,
    running_sink,
    wait_until,
)
from tocsin.core.events import iso
from tocsin.sinks.notify.receivers.base import AlertView, Notification
from tocsin.sinks.notify.receivers.webhook import ZERO_TIME, webhook_payload

__all__ = ["notify_env"]  # the fixture, imported for pytest

SECRET = "s3cret"

notify_env = notify_support.notify_env  # the fixture


def _cfg(notify_env, url, **receiver):
    return notify_env({
        "receivers": [{"name": "hook", "type": "webhook", "url": url, "hmac_secret": SECRET,
                       "backoff_initial_s": 0.05, "backoff_max_s": 0.2, **receiver}],
        "route": {"receiver": "hook", "group_wait_s": 0.3, "group_interval_s": 0.5},
        "external_url": "http://tocsin.example:8080",
    })


def test_firing_then_resolved_payloads_are_alertmanager_v4_and_signed(notify_env, httpserver):
    rec = record(httpserver, "/hook")
    cfg = _cfg(notify_env, httpserver.url_for("/hook"))
    err = alert_event("error_rate", "shop", severity="critical", value=9.5, threshold=5.0)
    lat = alert_event("p95_latency", "shop", severity="warning", value=700.0, threshold=500.0)
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [err, lat])
        wait_until(lambda: rec.count() >= 1, what="the firing notification")
        produce_alerts(cfg, [resolved_of(err)])
        wait_until(lambda: rec.count() >= 2, what="the resolved notification")
        wait_until(sink.idle, what="everything settled")

    first, second = rec.bodies()
    # The critical error_rate inhibits the warning latency alert of the same service.
    assert first["version"] == "4"
    assert first["status"] == "firing"
    assert first["receiver"] == "hook"
    assert first["groupLabels"] == {"service": "shop"}
    assert first["groupKey"] == '0:hook:{service="shop"}'
    assert first["truncatedAlerts"] == 0
    assert first["externalURL"] == "http://tocsin.example:8080"
    assert [a["labels"]["alertname"] for a in first["alerts"]] == ["error_rate"]
    alert = first["alerts"][0]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "error_rate", "service": "shop", "severity": "critical"}
    assert alert["annotations"] == {"summary": "error_rate high on shop", "value": "9.5", "threshold": "5"}
    assert alert["startsAt"] == iso(err["started_at"])
    assert alert["endsAt"] == ZERO_TIME
    assert alert["fingerprint"] == err["fingerprint"]
    assert alert["generatorURL"] == f"http://tocsin.example:8080/dashboard#alert-{err['alert_id']}"
    assert first["commonLabels"] == alert["labels"]

    # Once the critical resolved, the still-firing warning is no longer inhibited: it goes out with the resolve.
    assert second["status"] == "firing"
    by_name = {a["labels"]["alertname"]: a for a in second["alerts"]}
    assert by_name["error_rate"]["status"] == "resolved"
    assert by_name["error_rate"]["labels"]["severity"] == "critical"
    assert by_name["error_rate"]["endsAt"] != ZERO_TIME
    assert by_name["p95_latency"]["status"] == "firing"

    for r in rec.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["X-Tocsin-Signature"] == expected
        assert r.headers["Content-Type"] == "application/json"

    rows = query(cfg, "SELECT alert_event_id, status, receiver_type, attempt, http_status, rule "
                                         "FROM {log} ORDER BY ts, rule")
    statuses = {(r[5], r[1]) for r in rows}
    assert ("p95_latency", "inhibited") in statuses
    assert ("p95_latency", "sent") in statuses
    assert ("error_rate", "sent") in statuses
    assert all(r[2] == "webhook" and r[4] in (0, 200) for r in rows)
    sent_ids = [r[0] for r in rows if r[1] == "sent"]
    assert len(sent_ids) == len(set(sent_ids)) == 3  # err firing, err resolved, latency firing: once each


def test_429_then_500_then_200_is_retried_to_one_success(notify_env, httpserver):
    rec = record(httpserver, "/hook", script=[429, 500], retry_after="1")
    cfg = _cfg(notify_env, httpserver.url_for("/hook"))
    ev = alert_event("error_rate", "cart", severity="critical")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [ev])
        wait_until(lambda: rec.count() >= 3, what="three attempts")
        wait_until(sink.idle, what="settled")
    assert rec.count() == 3
    # Retry-After: 1 was honoured between the 429 and the next attempt.
    assert rec.requests[1].at - rec.requests[0].at >= 0.95
    assert len({r.body for r in rec.requests}) == 1, "every retry sends the same notification"
    rows = query(cfg, "SELECT attempt, status, http_status FROM {log} ORDER BY attempt")
    assert rows == [(1, "retrying", 429), (2, "retrying", 500), (3, "sent", 200)]


def test_400_is_not_retried_and_is_logged_as_failed(notify_env, httpserver):
    rec = record(httpserver, "/hook", default=400)
    cfg = _cfg(notify_env, httpserver.url_for("/hook"))
    assert deliver_one(cfg, rec, "search", "warning")["failed"] == 1
    assert rec.count() == 1
    rows = query(cfg, "SELECT attempt, status, http_status, error FROM {log}")
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "failed", 400)]
    assert "HTTP 400" in rows[0][3]


def test_max_alerts_truncates_like_alertmanager():
    alerts = tuple(
        AlertView(fingerprint=f"f{i}", alert_id=f"a{i}", event_id=f"e{i}", rule="r", severity="warning",
                  state="firing", labels={"service": "s"}, annotations={}, starts_at_us=1, ends_at_us=None, ts_us=1)
        for i in range(5))
    n = Notification("n1", "hook", "k", {"service": "s"}, alerts)
    body = webhook_payload(n, max_alerts=2)
    assert len(body["alerts"]) == 2
    assert body["truncatedAlerts"] == 3
