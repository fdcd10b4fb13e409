"""Routing, grouping, silences and inhibition as pure logic: an injected clock, no Kafka, no HTTP."""

from __future__ import annotations

import pytest

from tests.sinks.notify.support import alert_event, resolved_of
from tocsin.sinks.notify.config import MatcherSpec, NotifyConfig
from tocsin.sinks.notify.routing import Router, Transition, alert_labels, build_routes
from tocsin.sinks.notify.silences import SilenceStore, create_event, expire_event

T0 = 1_700_000_000.0


def _cfg(**kw) -> NotifyConfig:
    base = {
        "receivers": [{"name": "hook", "type": "webhook", "url": "http://h/hook"},
                      {"name": "pager", "type": "pagerduty", "routing_key": "k"},
                      {"name": "chat", "type": "slack", "url": "http://h/chat"}],
        "route": {"receiver": "hook", "group_wait_s": 10, "group_interval_s": 60, "repeat_interval_s": 3600},
        "inhibit_rules": [],
    }
    base.update(kw)
    return NotifyConfig.model_validate(base)


def _t(ev: dict) -> Transition:
    return Transition(ev, partition="p0", offset=0)


def _flush(router: Router, now: float):
    out, settled = router.flush(now)
    for o in out:
        router.delivered(o, True, now)
    return out, settled


def test_alertmanager_route_semantics_deepest_match_continue_and_inheritance():
    cfg = _cfg(route={
        "receiver": "hook", "group_by": ["service"], "group_wait_s": 5,
        "routes": [
            {"matchers": ["severity=critical"], "receiver": "pager", "continue": True, "group_wait_s": 0,
             "routes": [{"matchers": ["service=~db|cache"], "receiver": "chat"}]},
            {"matchers": ['service!~"test-.*"'], "receiver": "hook", "group_by": ["service", "rule"]},
        ]})
    root = build_routes(cfg)
    crit_db = alert_labels(alert_event("error_rate", "db", severity="critical"))
    crit_shop = alert_labels(alert_event("error_rate", "shop", severity="critical"))
    warn_test = alert_labels(alert_event("error_rate", "test-1", severity="warning"))
    assert [(r.id, r.receiver) for r in root.match(crit_db)] == [("0.0.0", "chat"), ("0.1", "hook")]
    assert [(r.id, r.receiver) for r in root.match(crit_shop)] == [("0.0", "pager"), ("0.1", "hook")]
    assert [(r.id, r.receiver) for r in root.match(warn_test)] == [("0", "hook")]
    chat = root.match(crit_db)[0]
    assert chat.group_wait_s == 0 and chat.group_by == ("service",)  # inherited from its parent
    assert root.match(crit_db)[1].group_by == ("service", "rule")


def test_resolve_is_routed_with_the_severity_it_had():
    cfg = _cfg(route={"receiver": "hook", "routes": [{"matchers": ["severity=critical"], "receiver": "pager"}]})
    router = Router(cfg)
    ev = alert_event("error_rate", "shop", severity="critical")
    router.add(_t(ev), T0)
    res = _t(resolved_of(ev))
    router.add(res, T0 + 1)
    assert res.remaining == {"pager"}


def test_group_wait_then_group_interval_batches_alerts_of_a_group():
    router = Router(_cfg())
    a, b, c = (_t(alert_event(r, "shop")) for r in ("error_rate", "p95_latency", "cpu_usage"))
    router.add(a, T0)
    router.add(b, T0 + 3)
    assert router.flush(T0 + 9.9) == ([], [])  # still in group_wait
    out, _ = _flush(router, T0 + 10)
    assert len(out) == 1 and {x.rule for x in out[0].alerts} == {"error_rate", "p95_latency"}
    assert out[0].covered == [a, b]
    router.add(c, T0 + 20)
    assert router.flush(T0 + 69) == ([], [])  # group_interval since the last flush
    out, _ = _flush(router, T0 + 70)
    assert [x.rule for x in out[0].alerts] == ["cpu_usage"], "only what the receiver has not heard"


def test_transitions_within_a_window_coalesce_into_one_notification_covering_all():
    router = Router(_cfg())
    warn = alert_event("error_rate", "shop", severity="warning")
    crit = alert_event("error_rate", "shop", severity="critical", previous_state="firing",
                       previous_severity="warning", alert_id=warn["alert_id"], fingerprint=warn["fingerprint"],
                       started_at=warn["started_at"], ts=warn["ts"] + 1)
    tw, tc = _t(warn), _t(crit)
    router.add(tw, T0)
    router.add(tc, T0 + 1)
    out, _ = _flush(router, T0 + 10)
    assert [a.severity for a in out[0].alerts] == ["critical"]
    assert out[0].covered == [tw, tc]


def test_repeat_interval_resends_still_firing_alerts_and_only_them():
    router = Router(_cfg())
    a, b = _t(alert_event("error_rate", "shop")), _t(alert_event("cpu_usage", "shop"))
    router.add(a, T0)
    router.add(b, T0)
    _flush(router, T0 + 10)
    router.add(_t(resolved_of(b.event)), T0 + 100)
    out, _ = _flush(router, T0 + 100)
    assert [(x.rule, x.status) for x in out[0].alerts] == [("cpu_usage", "resolved")]
    assert router.flush(T0 + 3699) == ([], []), "repeat_interval counts from the group's last notification"
    out, _ = _flush(router, T0 + 3700)
    assert [(x.rule, x.status) for x in out[0].alerts] == [("error_rate", "firing")]
    assert out[0].repeat and out[0].covered == [] and out[0].resent == [a]


def test_resolve_reaches_every_receiver_told_it_fired_even_after_escalation_changed_the_route():
    cfg = _cfg(route={"receiver": "hook", "group_wait_s": 0, "group_interval_s": 60, "routes": [
        {"matchers": ["severity=critical"], "receiver": "pager"},
        {"matchers": ["severity=warning"], "receiver": "chat"}]})
    router = Router(cfg)
    warn = alert_event("error_rate", "shop", severity="warning")
    _ = router.add(_t(warn), T0)
    _flush(router, T0)
    crit = _t(alert_event("error_rate", "shop", severity="critical", previous_state="firing",
                          previous_severity="warning", alert_id=warn["alert_id"], fingerprint=warn["fingerprint"],
                          started_at=warn["started_at"]))
    router.add(crit, T0 + 1)
    assert crit.remaining == {"pager"}
    _flush(router, T0 + 1)
    res = _t(resolved_of(crit.event))
    router.add(res, T0 + 100)
    assert res.remaining == {"pager", "chat"}
    out, _ = _flush(router, T0 + 100)
    assert sorted(o.group.receiver for o in out) == ["chat", "pager"]
    assert all(o.alerts[0].status == "resolved" for o in out)
    assert router.stats()["alerts"] == 0, "resolved alerts leave the router's memory"


def test_inhibition_critical_mutes_warning_of_the_same_service_until_it_resolves():
    router = Router(_cfg(inhibit_rules=[{"source_matchers": ["severity=critical"],
                                         "target_matchers": ["severity=warning"], "equal": ["service"]}]))
    crit = _t(alert_event("error_rate", "shop", severity="critical"))
    warn = _t(alert_event("p95_latency", "shop", severity="warning"))
    other = _t(alert_event("p95_latency", "cart", severity="warning"))
    for t in (crit, warn, other):
        router.add(t, T0)
    out, settled = _flush(router, T0 + 10)
    assert sorted(a.rule + "/" + a.service for o in out for a in o.alerts) == ["error_rate/shop", "p95_latency/cart"]
    assert [(s.transition, s.status) for s in settled] == [(warn, "inhibited")]
    router.add(_t(resolved_of(crit.event)), T0 + 20)
    out, _ = _flush(router, T0 + 70)
    shown = sorted((a.rule, a.status) for o in out for a in o.alerts)
    assert shown == [("error_rate", "resolved"), ("p95_latency", "firing")], "the warning is owed once unmuted"


def test_silence_mutes_matching_alerts_and_its_expiry_lets_the_still_firing_ones_through():
    router = Router(_cfg())
    ev = create_event([MatcherSpec.parse("service=shop"), MatcherSpec.parse("rule=~error_.*")], 3600,
                      reason="deploy", actor="me", start_us=int(T0 * 1e6))
    assert router.silences.apply(ev) is None
    shop = _t(alert_event("error_rate", "shop"))
    cart = _t(alert_event("error_rate", "cart"))
    router.add(shop, T0 + 1)
    router.add(cart, T0 + 1)
    out, settled = _flush(router, T0 + 11)
    assert [o.alerts[0].service for o in out] == ["cart"]
    assert [(s.transition, s.status, s.reason) for s in settled] == [(shop, "silenced", f"silence {ev['silence_id']}")]
    exp = expire_event(router.silences.get(ev["silence_id"]), actor="me")
    exp["ts"] = int((T0 + 30) * 1e6)
    assert router.silences.apply(exp) is None
    out, _ = _flush(router, T0 + 31)  # muted groups look again every few seconds
    assert [(o.alerts[0].service, o.alerts[0].status) for o in out] == [("shop", "firing")]


def test_alert_that_fires_and_resolves_under_a_silence_is_never_announced():
    router = Router(_cfg())
    router.silences.apply(create_event([MatcherSpec.parse("service=shop")], 600, start_us=int(T0 * 1e6)))
    fire = _t(alert_event("error_rate", "shop"))
    router.add(fire, T0)
    _, settled = _flush(router, T0 + 10)
    res = _t(resolved_of(fire.event))
    router.add(res, T0 + 20)
    out, settled = _flush(router, T0 + 70)
    assert out == []
    assert [(s.transition, s.status) for s in settled] == [(res, "silenced")]


def test_one_notification_in_flight_per_group_keeps_order():
    router = Router(_cfg(route={"receiver": "hook", "group_wait_s": 0, "group_interval_s": 0}))
    fire = _t(alert_event("error_rate", "shop"))
    router.add(fire, T0)
    out, _ = router.flush(T0)
    router.add(_t(resolved_of(fire.event)), T0 + 1)
    assert router.flush(T0 + 2) == ([], []), "the resolve waits for the firing delivery"
    router.delivered(out[0], True, T0 + 3)
    out2, _ = router.flush(T0 + 3)
    assert out2[0].alerts[0].status == "resolved"


def test_finally_failed_firing_is_not_retried_forever_but_its_resolve_still_goes_out():
    router = Router(_cfg(route={"receiver": "hook", "group_wait_s": 0, "group_interval_s": 1}))
    fire = _t(alert_event("error_rate", "shop"))
    router.add(fire, T0)
    out, _ = router.flush(T0)
    router.delivered(out[0], False, T0)
    assert router.flush(T0 + 10) == ([], [])
    router.add(_t(resolved_of(fire.event)), T0 + 20)
    out, _ = router.flush(T0 + 20)
    assert out[0].alerts[0].status == "resolved"


def test_already_sent_transitions_are_settled_without_sending_and_remembered():
    router = Router(_cfg())
    fire = _t(alert_event("error_rate", "shop"))
    settled = router.add(fire, T0, already_sent={"hook"})
    assert [(s.receiver, s.status) for s in settled] == [("hook", "already_sent")]
    assert router.flush(T0 + 10) == ([], [])
    res = _t(resolved_of(fire.event))
    router.add(res, T0 + 20)
    assert res.remaining == {"hook"}, "the restarted sink knows the receiver was told it fired"


def test_restore_rebuilds_told_receivers_and_repeat_timing_from_the_log():
    cfg = _cfg(route={"receiver": "hook", "repeat_interval_s": 100, "group_wait_s": 0})
    router = Router(cfg)
    ev = alert_event("error_rate", "shop")
    router.restore(Transition(ev), {"hook": ('0:hook:{service="shop"}', T0)}, T0 + 10)
    assert router.flush(T0 + 50) == ([], [])
    out, _ = router.flush(T0 + 100)
    assert out[0].repeat and out[0].group.labels == {"service": "shop"}


def test_pending_and_unrouted_transitions_settle_at_once():
    router = Router(_cfg())
    pending = _t(alert_event("error_rate", "shop", state="pending", previous_state="inactive"))
    assert router.add(pending, T0) == [] and pending.remaining == set()
    never_fired = _t(alert_event("error_rate", "shop", state="resolved", previous_state="pending", severity="none"))
    router.add(never_fired, T0)
    assert never_fired.remaining == set()
    assert Router(NotifyConfig()).targets(_t(alert_event())) == []


@pytest.mark.parametrize(("text", "label", "op", "value"), [
    ("service=shop", "service", "=", "shop"), ('severity=~"warning|critical"', "severity", "=~", "warning|critical"),
    ("host != web-1", "host", "!=", "web-1"), ("rule!~disk_.*", "rule", "!~", "disk_.*"),
])
def test_matcher_parsing(text, label, op, value):
    m = MatcherSpec.parse(text)
    assert (m.label, m.op, m.value) == (label, op, value)


def test_silence_store_rejects_bad_events_without_raising():
    store = SilenceStore()
    assert "no matchers" in store.apply({"action": "silence_create", "silence_id": "s1", "matchers": [], "ts": 0,
                                         "ends_at": 10})
    assert "invalid matcher" in store.apply({"action": "silence_create", "silence_id": "s2", "ts": 0, "ends_at": 10,
                                             "matchers": [{"label": "a", "op": "=~", "value": "("}]})
    assert "unknown" in store.apply({"action": "silence_expire", "silence_id": "nope", "ts": 0})
    assert store.apply({"action": "resolve", "alert_id": "x", "ts": 0}) is None
    assert store.active(0) == []


def test_a_resolve_and_the_next_incident_in_one_flush_are_both_announced():
    """After a broker outage (or a processor's replay) an incident's resolve and the next incident of the same
    fingerprint can reach the sink within one group_interval: the receiver was told the first fires, so it
    must hear it resolved, not only that the alert fires (the resolve was recorded as sent but never shown)."""
    router = Router(_cfg())
    first = alert_event("error_rate", "shop", ts=int(T0 * 1e6))
    router.add(_t(first), T0)
    out, _ = _flush(router, T0 + 10)
    assert [(a.status, a.alert_id) for a in out[0].alerts] == [("firing", first["alert_id"])]
    end = _t(resolved_of(first, ts=int((T0 + 20) * 1e6)))
    again = alert_event("error_rate", "shop", ts=int((T0 + 25) * 1e6), fingerprint=first["fingerprint"])
    router.add(end, T0 + 20)
    router.add(_t(again), T0 + 25)
    out, _ = _flush(router, T0 + 70)
    shown = [(a.status, a.alert_id) for a in out[0].alerts]
    assert shown == [("resolved", first["alert_id"]), ("firing", again["alert_id"])], shown
    assert end in out[0].covered
    router.add(_t(resolved_of(again, ts=int((T0 + 90) * 1e6))), T0 + 90)
    out, _ = _flush(router, T0 + 130)
    assert [(a.status, a.alert_id) for a in out[0].alerts] == [("resolved", again["alert_id"])]
