"""Escalation (`escalate_after` + `escalate_to` on a route): pure logic with an injected clock, then the sink."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import (
    alert_event,
    produce_alerts,
    query,
    record,
    resolved_of,
    running_sink,
    wait_until,
)
from tocsin.sinks.notify.config import NotifyConfig
from tocsin.sinks.notify.routing import Router, Transition

notify_env = notify_support.notify_env  # the fixture
T0 = 1_800_000_000.0


def _router() -> Router:
    return Router(NotifyConfig.model_validate({
        "receivers": [{"name": "chat", "type": "webhook", "url": "http://h/chat"},
                      {"name": "pager", "type": "pagerduty", "routing_key": "k"}],
        "route": {"receiver": "chat", "group_wait_s": 0, "group_interval_s": 30, "repeat_interval_s": 86400,
                  "routes": [{"matchers": ["severity=critical"], "escalate_after": "15m", "escalate_to": "pager"}]},
        "inhibit_rules": []}))


def _fire(router: Router, now: float, **extra) -> dict:
    ev = alert_event("error_rate", "shop", severity="critical", ts=int(now * 1e6), **extra)
    router.add(Transition(ev, "p", 0), now)
    return ev


def _sent(router: Router, now: float) -> list[str]:
    out, _ = router.flush(now)
    for o in out:
        router.delivered(o, True, now)
    return [o.group.receiver for o in out]


def test_still_firing_unacked_alert_escalates_once_after_escalate_after():
    router = _router()
    ev = _fire(router, T0)
    assert _sent(router, T0) == ["chat"]
    assert _sent(router, T0 + 899) == []
    assert _sent(router, T0 + 901) == ["pager"]
    assert _sent(router, T0 + 960) == [] and _sent(router, T0 + 3600) == []  # once per incident
    router.add(Transition(resolved_of(ev, ts=int((T0 + 4000) * 1e6)), "p", 1), T0 + 4000)
    assert sorted(_sent(router, T0 + 4000)) == ["chat", "pager"]  # the escalation receiver hears the resolve


def test_resolved_or_acked_alert_does_not_escalate_and_a_lapsed_ack_does():
    router = _router()
    ev = _fire(router, T0)
    _sent(router, T0)
    router.add(Transition(resolved_of(ev, ts=int((T0 + 60) * 1e6)), "p", 1), T0 + 60)
    assert _sent(router, T0 + 60) == ["chat"] and _sent(router, T0 + 1000) == []

    router = _router()
    _fire(router, T0, acked_by="alice", ack_expires_at=int((T0 + 1800) * 1e6))
    _sent(router, T0)
    assert _sent(router, T0 + 1000) == []  # acked: nobody else is paged
    assert _sent(router, T0 + 1801) == ["pager"]  # the ack lapsed while it still fires


def test_restart_after_an_escalation_does_not_escalate_again():
    router = _router()
    ev = alert_event("error_rate", "shop", severity="critical", ts=int(T0 * 1e6))
    sent = {"chat": ("0.0:chat:{service=\"shop\"}", T0), "pager": ("0.0.escalation:pager:{service=\"shop\"}", T0 + 901)}
    router.restore(Transition(ev), sent, T0 + 1000)
    assert _sent(router, T0 + 2000) == []
    fresh = _router()
    fresh.restore(Transition(ev), {"chat": sent["chat"]}, T0 + 100)  # restarted before the escalation was due
    assert _sent(fresh, T0 + 901) == ["pager"]


@pytest.mark.parametrize("route, message", [
    ({"escalate_after": "15m"}, "escalate_after and escalate_to go together"),
    ({"escalate_after": "15m", "escalate_to": "nobody"}, "escalate_to: unknown receiver 'nobody'"),
    ({"escalate_after": "soon", "escalate_to": "chat"}, "expected e.g. 15m"),
])
def test_escalation_config_errors(route, message):
    with pytest.raises(ValidationError, match=message):
        NotifyConfig.model_validate({"receivers": [{"name": "chat", "type": "webhook", "url": "http://h/"}],
                                     "route": {"receiver": "chat", "routes": [route]}})


def test_the_sink_escalates_once_and_logs_it_like_any_delivery(notify_env, httpserver):
    chat = record(httpserver, "/chat")
    pager = record(httpserver, "/pager")
    cfg = notify_env({
        "receivers": [{"name": "chat", "type": "webhook", "url": httpserver.url_for("/chat")},
                      {"name": "pager", "type": "webhook", "url": httpserver.url_for("/pager")}],
        "route": {"receiver": "chat", "group_wait_s": 0, "group_interval_s": 0.3,
                  "escalate_after": "2s", "escalate_to": "pager"},
        "inhibit_rules": [],
    })
    ev = alert_event("error_rate", "shop", severity="critical")
    with running_sink(cfg) as sink:
        produce_alerts(cfg, [ev])
        wait_until(lambda: chat.count() >= 1, what="the first notification")
        wait_until(lambda: pager.count() >= 1, what="the escalation")
        wait_until(sink.idle, what="settled")
        # Once per incident: later flushes do not escalate again (the routing state says so at once).
        assert not sink.router.escalations.watching and ev["alert_id"] in sink.router.escalations.escalated
    assert pager.count() == 1 and chat.count() == 1
    assert [a["labels"]["service"] for a in pager.bodies()[0]["alerts"]] == ["shop"]
    rows = query(cfg, f"SELECT receiver, status, group_key FROM {{log}} WHERE alert_id = '{ev['alert_id']}' "
                      "ORDER BY receiver")
    assert [(r, s) for r, s, _ in rows] == [("chat", "sent"), ("pager", "sent")]
    assert rows[1][2].startswith("0.escalation:pager:")
