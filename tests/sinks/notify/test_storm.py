"""Storm: 1,000 alert transitions across 50 services within 10 s, through real Kafka, to two HTTP receivers.

Checks: grouped (far fewer notifications than transitions, counts printed),
none lost (every transition has exactly one ``sent`` row per receiver it
routes to, and each receiver's last word on every alert is its final state),
and no receiver ever above its rate limit (token bucket: at most ``burst +
rate * t`` requests in any window of length t).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, query, record, running_sink, wait_until
from tocsin.core.events import now_us

notify_env = notify_support.notify_env  # the fixture

SERVICES = [f"svc-{i:02d}" for i in range(50)]
RULES = ["error_rate", "p95_latency", "cpu_usage", "memory_usage", "disk_usage"]
WAVES = 10  # one wave a second: 1,000 transitions in 10 s
LIMITS = {"hook": (10.0, 10), "chat": (8.0, 5)}  # receiver -> (rate per s, burst)


def storm_transitions() -> list[list[dict]]:
    """250 alerts x 4 transitions: fire warning, escalate to critical, resolve, fire again (a new incident)."""
    base = now_us()
    per_alert = []
    for s in SERVICES:
        for r in RULES:
            t0 = base
            warn = alert_event(r, s, severity="warning", ts=t0)
            crit = alert_event(r, s, severity="critical", previous_state="firing", previous_severity="warning",
                               ts=t0 + 1, started_at=warn["started_at"], alert_id=warn["alert_id"],
                               fingerprint=warn["fingerprint"])
            res = notify_support.resolved_of(crit, ts=t0 + 2)
            again = alert_event(r, s, severity="warning", previous_state="resolved", ts=t0 + 3,
                                fingerprint=warn["fingerprint"])
            per_alert.append([warn, crit, res, again])
    # Spread each alert's four steps over the waves so every wave mixes services and states.
    waves: list[list[dict]] = [[] for _ in range(WAVES)]
    for i, steps in enumerate(per_alert):
        start = i % (WAVES - 3)
        for k, ev in enumerate(steps):
            waves[start + k].append(ev)
    return waves


def expected_receivers(ev: dict) -> set[str]:
    sev = ev["severity"] if ev["severity"] != "none" else ev["previous_severity"]
    return {"hook", "chat"} if sev == "critical" else {"hook"}


def max_over_limit(times: list[float], rate: float, burst: int) -> float:
    """The largest excess of requests over ``burst + rate * window`` across all windows (<= 0 is within)."""
    worst = float("-inf")
    for i in range(len(times)):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (burst + rate * (times[j] - times[i])))
    return worst


@pytest.mark.slow
def test_storm_of_1000_transitions_is_grouped_lossless_and_rate_limited(notify_env, httpserver):
    hook = record(httpserver, "/hook")
    chat = record(httpserver, "/chat")
    receivers = [
        {"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook"),
         "rate_limit_per_s": LIMITS["hook"][0], "rate_limit_burst": LIMITS["hook"][1]},
        {"name": "chat", "type": "slack", "url": httpserver.url_for("/chat"),
         "rate_limit_per_s": LIMITS["chat"][0], "rate_limit_burst": LIMITS["chat"][1]},
    ]
    cfg = notify_env({
        "receivers": receivers,
        "route": {"receiver": "hook", "group_by": ["service"], "group_wait_s": 1.0, "group_interval_s": 2.0,
                  "routes": [{"matchers": ["severity=critical"], "receiver": "chat", "continue": True},
                             {"receiver": "hook"}]},
        "inhibit_rules": [],
    })
    waves = storm_transitions()
    events = [ev for wave in waves for ev in wave]
    assert len(events) == 1000
    started = time.monotonic()
    with running_sink(cfg) as sink:
        for i, wave in enumerate(waves):
            time.sleep(max(0.0, started + i - time.monotonic()))  # wave i at second i
            produce_alerts(cfg, wave)
        produced_in = time.monotonic() - started
        wait_until(sink.idle, timeout_s=120, interval_s=0.2, what="every transition settled")
        stats = sink.stats()
    assert produced_in <= 10.0, "the storm must fit in 10 s"
    counts = {"hook": hook.count(), "chat": chat.count()}
    print(f"\nstorm: 1000 transitions, 50 services, produced in {produced_in:.1f} s, settled after "
          f"{time.monotonic() - started:.1f} s; notifications per receiver {counts}; "
          f"attempts {({n: r['attempts'] for n, r in stats['receivers'].items()})}")

    # Grouped: one notification carries many transitions.
    assert 50 <= counts["hook"] < 400
    assert 20 <= counts["chat"] < 250

    # None lost: exactly one sent row per (transition, receiver) it routes to, and nothing else.
    rows = query(cfg, "SELECT alert_event_id, receiver, status, count() FROM {log} GROUP BY 1, 2, 3")
    sent = {(r[0], r[1]): r[3] for r in rows if r[2] == "sent"}
    assert {r[2] for r in rows} == {"sent"}, "no failures, retries or mutes expected"
    expected = {(ev["event_id"], rc) for ev in events for rc in expected_receivers(ev)}
    assert set(sent) == expected
    assert set(sent.values()) == {1}

    # Each receiver's last word on every alert is the alert's final state (the re-fired warning).
    last_seen: dict[str, dict] = {}
    for body in hook.bodies():
        for a in body["alerts"]:
            last_seen[a["fingerprint"]] = a
    finals = {ev["fingerprint"]: ev for ev in events}  # the last event of each alert wins
    assert set(last_seen) == set(finals)
    for fp, a in last_seen.items():
        assert a["status"] == "firing" and a["labels"]["severity"] == "warning"
        assert a["generatorURL"] == "" and a["startsAt"].startswith(notify_support.iso_seconds(finals[fp]["ts"]))
    chat_alerts = Counter()
    for body in chat.bodies():
        chat_alerts[body["attachments"][0]["color"]] += 1
    assert chat_alerts, "critical notifications reached Slack"

    # Never above the rate limit.
    by_receiver: dict[str, list[float]] = defaultdict(list)
    for name, rec in (("hook", hook), ("chat", chat)):
        by_receiver[name] = [r.at for r in rec.requests]
    for name, times in by_receiver.items():
        rate, burst = LIMITS[name]
        assert max_over_limit(times, rate, burst) <= 1.0, f"{name} exceeded {rate}/s burst {burst}"
