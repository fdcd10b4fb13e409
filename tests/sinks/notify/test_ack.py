"""Acknowledged alerts in the notify sink: repeats held back (pure router, injected clock), PagerDuty's
``acknowledge`` at a real HTTP server, and who acked in the Slack and e-mail texts."""

from __future__ import annotations

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, record, running_sink, wait_until
from tocsin.sinks.notify.config import NotifyConfig
from tocsin.sinks.notify.receivers.base import Notification
from tocsin.sinks.notify.receivers.slack import slack_payload
from tocsin.sinks.notify.routing import Router, Transition, alert_view
from tocsin.sinks.notify.templates import TemplateRenderer

notify_env = notify_support.notify_env  # the fixture
T0 = 1_800_000_000.0
KEY = "R0UT1NGKEY0123456789012345678901"


def _router() -> Router:
    return Router(NotifyConfig.model_validate({
        "receivers": [{"name": "chat", "type": "webhook", "url": "http://h/chat"}],
        "route": {"receiver": "chat", "group_wait_s": 0, "group_interval_s": 10, "repeat_interval_s": 60},
        "inhibit_rules": []}))


def _sent(router: Router, now: float) -> list[bool]:
    out, _ = router.flush(now)
    for o in out:
        router.delivered(o, True, now)
    return [o.repeat for o in out]


def _us(s: float) -> int:
    return int(s * 1e6)


def test_repeats_stop_while_acked_and_restart_when_the_ack_lapses_or_is_withdrawn():
    router = _router()
    fire = alert_event("error_rate", "shop", ts=_us(T0), started_at=_us(T0))
    router.add(Transition(fire), T0)
    assert _sent(router, T0) == [False]
    assert _sent(router, T0 + 61) == [True]  # a repeat, not acked yet
    ack = dict(fire, event_id="ack1", ts=_us(T0 + 70), acked_by="alice", acked_at=_us(T0 + 70),
               ack_expires_at=_us(T0 + 400), previous_state="firing")
    router.add(Transition(ack), T0 + 70)
    assert _sent(router, T0 + 80) == [False]  # the ack itself is told once (who acked)
    assert [t for t in range(81, 400, 5) if _sent(router, T0 + t)] == []  # no repeat while it holds
    assert _sent(router, T0 + 401) == [True]  # lapsed: the repeat goes at once, not a repeat interval later

    unack = dict(ack, event_id="ack2", ts=_us(T0 + 500), acked_by=None, acked_at=None, ack_expires_at=None)
    router.add(Transition(dict(ack, event_id="ack3", ts=_us(T0 + 450), ack_expires_at=None)), T0 + 450)
    assert _sent(router, T0 + 460) == [False] and _sent(router, T0 + 600) == []
    router.add(Transition(unack), T0 + 610)
    assert _sent(router, T0 + 620) == [False]  # the unack is told, and repeats resume
    assert _sent(router, T0 + 681) == [True]


def test_pagerduty_gets_acknowledge_with_the_incident_dedup_key(notify_env, httpserver):
    rec = record(httpserver, "/v2/enqueue", default=202)
    cfg = notify_env({
        "receivers": [{"name": "oncall", "type": "pagerduty", "url": httpserver.url_for("/v2/enqueue"),
                       "routing_key": KEY, "backoff_initial_s": 0.05}],
        "route": {"receiver": "oncall", "group_wait_s": 0.2, "group_interval_s": 0.2},
        "inhibit_rules": []})
    fire = alert_event("error_rate", "shop", severity="critical")
    ack = dict(fire, event_id="ack-" + fire["event_id"], ts=fire["ts"] + 1, previous_state="firing",
               previous_severity="critical", acked_by="alice", acked_at=fire["ts"] + 1, ack_note="on it",
               ack_changed_at=fire["ts"] + 1)
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [fire])
        wait_until(lambda: rec.count() >= 1, what="the trigger")
        produce_alerts(cfg, [ack])
        wait_until(lambda: rec.count() >= 2, what="the acknowledge")
        wait_until(sink.idle, what="settled")
    trigger, acknowledge = rec.bodies()
    assert trigger["event_action"] == "trigger"
    assert acknowledge == {"routing_key": KEY, "event_action": "acknowledge", "dedup_key": fire["fingerprint"],
                           "client": "Tocsin"}


def test_slack_and_email_say_who_acked_and_escape_the_note():
    ev = alert_event("error_rate", "shop", acked_by="alice <ops>", acked_at=1, ack_note="restarting <b>gw</b>")
    n = Notification("n1", "r", "k", {"service": "shop"}, (alert_view(ev),))
    r = TemplateRenderer()
    slack = r.render(n, "slack", ("title", "text"))
    assert "acknowledged by *alice &lt;ops&gt;*: restarting &lt;b&gt;gw&lt;/b&gt;" in slack["text"]
    assert "acknowledged by" in str(slack_payload(Notification(n.id, n.receiver, n.group_key, n.group_labels,
                                                               n.alerts, slack)))
    email = r.render(n, "email", ("text", "html"))
    assert "acknowledged by alice <ops> at 1970-01-01T00:00:00.000001Z: restarting <b>gw</b>" in email["text"]
    assert "Acknowledged by alice &lt;ops&gt;: restarting &lt;b&gt;gw&lt;/b&gt;" in email["html"]
    lapsed = alert_event("error_rate", "shop", acked_by="alice", acked_at=1, ack_expires_at=2)
    text = r.render(Notification("n2", "r", "k", {}, (alert_view(lapsed),)), "email", ("text",))["text"]
    assert "acknowledged" not in text
