"""Slack receiver against a real HTTP server: blocks, colour by severity, escaping, rate-limit answers."""

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
from tocsin.sinks.notify.receivers.slack import COLOURS, RESOLVED_COLOUR

notify_env = notify_support.notify_env  # the fixture


def _cfg(notify_env, url, **route):
    return notify_env({
        "receivers": [{"name": "chat", "type": "slack", "url": url, "channel": "#ops", "username": "tocsin",
                       "backoff_initial_s": 0.05, "rate_limit_per_s": 20, "rate_limit_burst": 5}],
        "route": {"receiver": "chat", "group_wait_s": 0.3, "group_interval_s": 0.3, **route},
        "inhibit_rules": [],
    })


def test_slack_message_has_blocks_coloured_by_severity_and_escaped_text(notify_env, httpserver):
    rec = record(httpserver, "/services/T0/B0/xyz")
    cfg = _cfg(notify_env, httpserver.url_for("/services/T0/B0/xyz"))
    crit = alert_event("error_rate", "shop", severity="critical")
    crit["annotations"] = {"summary": "5xx > 5% on <checkout> & cart"}
    warn = alert_event("disk_usage", "db", severity="warning")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [crit, warn])
        wait_until(lambda: rec.count() >= 2, what="two group notifications")
        produce_alerts(cfg, [resolved_of(crit)])
        wait_until(lambda: rec.count() >= 3, what="the resolve")
        wait_until(sink.idle, what="settled")
    bodies = rec.bodies()
    by_title = {b["text"]: b for b in bodies}
    assert len(by_title) == 3
    shop = next(b for b in bodies[:2] if "shop" in b["text"])
    db = next(b for b in bodies[:2] if "db" in b["text"])
    assert shop["text"] == "[FIRING:1] shop error_rate"
    assert shop["channel"] == "#ops" and shop["username"] == "tocsin"
    att = shop["attachments"][0]
    assert att["color"] == COLOURS["critical"] == "#d62728"
    header, section, context = att["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": shop["text"], "emoji": True}}
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    # Slack's mrkdwn control characters are escaped in template output.
    assert "5xx &gt; 5% on &lt;checkout&gt; &amp; cart" in section["text"]["text"]
    assert "*error_rate* on *shop*" in section["text"]["text"]
    assert context["elements"][0]["text"] == "group: service=shop"
    assert db["attachments"][0]["color"] == COLOURS["warning"]
    resolved = bodies[2]
    assert resolved["text"] == "[RESOLVED] shop error_rate"
    assert resolved["attachments"][0]["color"] == RESOLVED_COLOUR
    assert "resolved" in resolved["attachments"][0]["blocks"][1]["text"]["text"]


def test_slack_429_with_retry_after_then_500_then_200_delivers_once(notify_env, httpserver):
    rec = record(httpserver, "/hook", script=[429, 500], retry_after="1")
    cfg = _cfg(notify_env, httpserver.url_for("/hook"))
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [alert_event("error_rate", "shop", severity="critical")])
        wait_until(lambda: rec.count() >= 3, what="three attempts")
        wait_until(sink.idle, what="settled")
    assert rec.count() == 3
    assert rec.requests[1].at - rec.requests[0].at >= 0.95, "Retry-After honoured"
    assert query(cfg, "SELECT attempt, status, http_status FROM {log} ORDER BY attempt") == [
        (1, "retrying", 429), (2, "retrying", 500), (3, "sent", 200)]


def test_slack_404_for_a_revoked_hook_is_final(notify_env, httpserver):
    rec = record(httpserver, "/gone", default=404)
    cfg = _cfg(notify_env, httpserver.url_for("/gone"))
    deliver_one(cfg, rec)
    assert rec.count() == 1
    assert query(cfg, "SELECT status, http_status FROM {log}") == [("failed", 404)]


def test_broken_route_template_never_drops_the_alert(notify_env, httpserver):
    rec = record(httpserver, "/hook")
    cfg = _cfg(notify_env, httpserver.url_for("/hook"), templates={"title": "{{ alerts[0].nope.deeper }}",
                                                                   "text": "custom: {{ alerts | length }} alert(s)"})
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [alert_event("error_rate", "shop", severity="critical")])
        wait_until(lambda: rec.count() >= 1, what="the notification despite the broken title")
        wait_until(sink.idle, what="settled")
        assert sink.stats()["template_failures"] == 1
    body = rec.bodies()[0]
    assert body["text"] == "[FIRING:1] shop error_rate", "the built-in title stood in"
    assert body["attachments"][0]["blocks"][1]["text"]["text"] == "custom: 1 alert(s)", "the good override kept"
