"""PagerDuty receiver against a real HTTP server: Events API v2 trigger and resolve, dedup_key, retries."""

from __future__ import annotations

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

KEY = "R0UT1NGKEY0123456789012345678901"

notify_env = notify_support.notify_env  # the fixture


def _cfg(notify_env, url):
    return notify_env({
        "receivers": [{"name": "oncall", "type": "pagerduty", "url": url, "routing_key": KEY,
                       "client_url": "http://tocsin.example/dashboard", "backoff_initial_s": 0.05,
                       "rate_limit_per_s": 50, "rate_limit_burst": 10}],
        "route": {"receiver": "oncall", "group_wait_s": 0.2, "group_interval_s": 0.2},
        "inhibit_rules": [],
    })


def test_firing_then_resolved_gives_one_trigger_and_one_resolve_with_the_same_dedup_key(notify_env, httpserver):
    rec = record(httpserver, "/v2/enqueue", default=202)
    cfg = _cfg(notify_env, httpserver.url_for("/v2/enqueue"))
    ev = alert_event("error_rate", "shop", severity="critical", labels={"host": "web-1"})
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [ev])
        wait_until(lambda: rec.count() >= 1, what="the trigger")
        produce_alerts(cfg, [resolved_of(ev)])
        wait_until(lambda: rec.count() >= 2, what="the resolve")
        wait_until(sink.idle, what="settled")
    trigger, resolve = rec.bodies()
    assert rec.count() == 2
    assert trigger["routing_key"] == resolve["routing_key"] == KEY
    assert trigger["event_action"] == "trigger"
    assert resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == ev["fingerprint"]
    assert trigger["client"] == "Tocsin" and trigger["client_url"] == "http://tocsin.example/dashboard"
    p = trigger["payload"]
    assert p["summary"] == "[CRITICAL] error_rate on shop: error_rate high on shop"
    assert p["source"] == "web-1"
    assert p["severity"] == "critical"
    assert p["timestamp"] == iso(ev["started_at"])
    assert p["component"] == "shop"
    assert p["class"] == "error_rate"
    assert p["group"] == "service=shop"
    assert p["custom_details"]["labels"] == {"alertname": "error_rate", "service": "shop", "host": "web-1",
                                             "severity": "critical"}
    assert "payload" not in resolve


def test_warning_maps_to_warning_and_a_retry_never_doubles_a_trigger(notify_env, httpserver):
    # Two alerts in one group are two events; the second one's 429 and 500 must not resend the first.
    rec = record(httpserver, "/v2/enqueue", script=[202, 429, 500], default=202)
    cfg = _cfg(notify_env, httpserver.url_for("/v2/enqueue"))
    a = alert_event("disk_usage", "db", severity="warning")
    b = alert_event("memory_usage", "db", severity="warning")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [a, b])
        wait_until(lambda: rec.count() >= 4, what="four requests")
        wait_until(sink.idle, what="settled")
    bodies = rec.bodies()
    assert rec.count() == 4
    keys = [body["dedup_key"] for body in bodies]
    assert sorted(set(keys)) == sorted({a["fingerprint"], b["fingerprint"]})
    assert keys[1] == keys[2] == keys[3] != keys[0]
    assert all(body["payload"]["severity"] == "warning" for body in bodies)
    # One notification, three attempts; both transitions logged as sent once, on the final attempt.
    rows = query(cfg, "SELECT attempt, status, count() FROM {log} GROUP BY attempt, status ORDER BY attempt")
    assert rows == [(1, "retrying", 2), (2, "retrying", 2), (3, "sent", 2)]


def test_400_invalid_event_is_not_retried(notify_env, httpserver):
    rec = record(httpserver, "/v2/enqueue", default=400)
    cfg = _cfg(notify_env, httpserver.url_for("/v2/enqueue"))
    deliver_one(cfg, rec)
    assert rec.count() == 1
    assert query(cfg, "SELECT status, http_status FROM {log}") == [("failed", 400)]
