"""Matchers cannot hang anything: silence, route and inhibition regexes run on RE2 (linear time, Alertmanager's
syntax); a pattern RE2 cannot run in linear time is rejected where it is written."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.processors.test_http_e2e import TOKEN, free_port, running_processor
from tests.sinks.notify import support as notify_support
from tests.sinks.notify.support import alert_event, produce_alerts, produce_control, record, running_sink, wait_until
from tocsin.sinks.notify.config import MatcherSpec
from tocsin.sinks.notify.silences import SilenceStore, create_event

notify_env = notify_support.notify_env  # the fixture

EVIL = "(a+)+$"
VICTIM = "a" * 27 + "!"  # Python's re takes ~2**27 steps on this: the process froze


def test_the_pathological_pattern_matches_in_linear_time():
    m = MatcherSpec.parse(f'service=~"{EVIL}"')
    t0 = time.perf_counter()
    for value in (VICTIM, "a" * 100_000 + "!", "aaaa"):
        m.matches({"service": value})
    assert time.perf_counter() - t0 < 0.5
    assert not m.matches({"service": VICTIM}) and m.matches({"service": "aaaa"})


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?<!b)a", "a{1000}{1000}", "x" * 2000, "(unclosed"])
def test_patterns_re2_cannot_run_in_linear_time_are_rejected(pattern):
    with pytest.raises(ValueError, match="regex"):
        MatcherSpec(label="service", op="=~", value=pattern)


def test_alertmanager_semantics_full_match_and_missing_label_is_empty():
    assert MatcherSpec.parse('severity=~"warning|critical"').matches({"severity": "critical"})
    assert not MatcherSpec.parse('service=~"sho"').matches({"service": "shop"})  # anchored at both ends
    assert MatcherSpec.parse('team=~".*"').matches({})
    assert MatcherSpec.parse('team!~"ops|dev"').matches({"team": "ops2"})


@settings(max_examples=300, deadline=200)
@given(pattern=st.text(alphabet="a()+*?|.$^\\[]{}1,!", max_size=12), value=st.text(alphabet="a!b", max_size=40))
def test_any_pattern_is_rejected_or_matches_quickly(pattern, value):
    """Hypothesis over the matchers: whatever the pattern, compile fails cleanly or matching is fast."""
    try:
        m = MatcherSpec(label="service", op="=~", value=pattern)
    except ValueError:
        return
    m.matches({"service": value})


def test_an_invalid_silence_on_the_topic_is_refused_not_applied():
    store = SilenceStore()
    event = create_event([MatcherSpec.parse("service=shop")], 60)
    event["matchers"] = [{"label": "service", "op": "=~", "value": r"(a)\1"}]
    assert "invalid matcher" in store.apply(event)


def test_a_silence_flood_with_the_pathological_pattern_keeps_health_under_a_second(notify_env, httpserver):
    """The processor's HTTP API and the notify sink in one process (as ``tocsin start all``); 300 silences with
    the pattern, a route and an inhibition rule with it, alerts for the service it would backtrack on."""
    hook = record(httpserver, "/hook")
    cfg = notify_env(
        {"receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook")}],
         "route": {"receiver": "hook", "group_wait_s": 0.1, "group_interval_s": 0.2,
                   "routes": [{"matchers": [f'service=~"{EVIL}"'], "receiver": "hook"}]},
         "inhibit_rules": [{"source_matchers": [f'service=~"{EVIL}"'], "target_matchers": [f'host=~"{EVIL}"']}]},
        api={"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}", "service_name": "re2"},
        processor={"group_id": "re2-" + str(time.time_ns())})
    produce_control(cfg, [create_event([MatcherSpec.parse(f'service=~"{EVIL}"'),
                                        MatcherSpec.parse(f'host=~"{EVIL}"')], 3600, reason=f"flood {i}")
                          for i in range(300)])
    worst = [0.0]
    stop = threading.Event()
    with running_processor(cfg) as proc:
        wait_until(lambda: requests.get(f"{proc.url}/health", timeout=5).status_code == 200, 90,
                   what="the processor healthy")

        def poll() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                requests.get(f"{proc.url}/health", timeout=10)
                worst[0] = max(worst[0], time.monotonic() - t0)
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            with running_sink(cfg) as sink:
                produce_alerts(cfg, [alert_event("error_rate", VICTIM, labels={"host": VICTIM + str(i)})
                                     for i in range(20)])
                wait_until(lambda: sum(len(b["alerts"]) for b in hook.bodies()) >= 20, 60,
                           what="the 20 unsilenced alerts delivered")
                assert sink.stats().get("silenced", 0) == 0
        finally:
            stop.set()
            poller.join(15)
    assert worst[0] < 1.0, f"/health took {worst[0]:.2f} s during the flood"
