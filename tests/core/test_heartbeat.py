"""Self-monitoring: every service of a `tocsin start` process beats while its loop runs, and the
default absence rule alerts per component when the beats stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.kafkautil import consume_all
from tests.processors.helpers import T0, FakeWall, S, engine, metric, states
from tocsin.app.services import with_heartbeats
from tocsin.core.component import Component
from tocsin.processors.alerts import FIRING
from tocsin.processors.rules import load_rules
from tocsin.schemas.codec import default_codec

DEFAULT_RULES = Path(__file__).parents[2] / "processors" / "rules" / "default.yaml"


class _Idle(Component):
    """A service whose loop runs until stopped, with figures of its own."""

    def heartbeat_figures(self):
        return {"tocsin_sink_events_per_s": (12.5, "events_per_s")}


def test_each_running_service_beats_with_its_component_label(tocsin_config) -> None:
    inner = {"processor": _Idle(), "sink-notify": _Idle(), "agent": _Idle()}
    from tocsin.app.services import ServiceGroup

    group = with_heartbeats(tocsin_config, "all", ServiceGroup(inner))
    group.members["heartbeat"].interval_s = 0.5
    with group:
        t = threading.Thread(target=group.run)
        t.start()
        time.sleep(3)
        group.stop()
        t.join(30)
    events = [e for m in consume_all(tocsin_config.kafka, tocsin_config.kafka.topics.metrics, idle_s=2)
              for e in default_codec().decode_events(m.value)[1]]
    beats = {e["labels"]["component"] for e in events if e["name"] == "tocsin_heartbeat"}
    assert beats == {"sink-notify", "agent"}, "the processor beats from its own loop, the others from here"
    assert all(e["service"] == "tocsin" for e in events)
    assert any(e["name"] == "tocsin_sink_events_per_s" and e["value"] == 12.5 for e in events)


def test_default_absence_rule_fires_for_the_component_that_stopped() -> None:
    wall = FakeWall(T0)
    ruleset = load_rules(DEFAULT_RULES)
    eng = engine(ruleset, wall, grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    for t in range(0, 200, 15):
        wall.t = T0 + t * S
        for component in ("sink-notify", "agent"):
            if component == "agent" or t < 60:  # the notify sink dies after 60 s
                eng.ingest(ps, "metrics", metric(T0 + t * S, 1, "tocsin_heartbeat", service="tocsin",
                                                 component=component))
        eng.advance_idle(ps, wall.t)
    out = [x for x in eng.take_transitions() if x.rule == "tocsin_component_silent"]
    assert states(out) == [("inactive", FIRING, "critical")]
    assert out[0].labels["component"] == "sink-notify"


def test_heartbeats_show_as_health_entries_of_each_component() -> None:
    from tocsin.processors.rules import load_rules as _load

    eng = engine(_load(DEFAULT_RULES), FakeWall(T0), grace_s=1)
    ps = eng.add_partition("metrics", 0, "metrics")
    eng.ingest(ps, "metrics", metric(T0, 1, "tocsin_heartbeat", service="tocsin", host="web-1",
                                     component="sink-notify"))
    entry = eng.latest_health[("tocsin", "heartbeat:sink-notify")]
    assert (entry["status"], entry["host"], entry["details"]["component"]) == ("healthy", "web-1", "sink-notify")


class _Hangs(Component):
    """A loop that makes progress, hangs when told (alive, no progress), and goes on when released."""

    STALL_AFTER_S = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.hang, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.stopping:
            self.mark_progress()
            if self.hang.is_set() and not self.release.is_set():
                self.release.wait(30)
            self._stop.wait(0.1)


def test_a_hung_loop_stops_beating_while_its_thread_lives_and_beats_again_when_it_moves(tocsin_config) -> None:
    hung = _Hangs()
    group = with_heartbeats(tocsin_config, "sink-notify", hung)
    beats = group.members["heartbeat"]
    beats.interval_s = 0.3
    with group:
        t = threading.Thread(target=group.run)
        t.start()
        time.sleep(2.5)
        assert beats.stuck == set()
        hung_us = time.time_ns() // 1000
        hung.hang.set()
        time.sleep(3.5)
        assert group.alive("sink-notify") and beats.stuck == {"sink-notify"}
        released_us = time.time_ns() // 1000
        hung.release.set()
        time.sleep(3)
        assert beats.stuck == set()
        group.stop()
        t.join(30)
    events = [e for m in consume_all(tocsin_config.kafka, tocsin_config.kafka.topics.metrics, idle_s=2)
              for e in default_codec().decode_events(m.value)[1] if e["name"] == "tocsin_heartbeat"]
    ts = sorted(e["ts"] for e in events)
    assert any(x < hung_us for x in ts), "no beats while the loop ran"
    assert any(x > released_us for x in ts), "no beats after the loop moved again"
    # Stuck is noticed within STALL_AFTER_S plus a heartbeat-loop turn (1 s): no beat after that until release.
    assert not [x for x in ts if hung_us + 2_100_000 < x < released_us], "beats went on while the loop hung"


def test_the_agent_names_the_part_that_stopped() -> None:
    from tocsin.app.config import TocsinConfig
    from tocsin.producers.agent import AgentService

    agent = AgentService(TocsinConfig())
    quiet, moving, never = Component(), Component(), Component()
    quiet.name, moving.name, never.name = "metrics", "logship", "health"
    agent.components = [never, moving, quiet]
    now = time.monotonic()
    moving.mark_progress()
    quiet._progress_at = now - 500  # its loop ended (an error) or hangs
    assert never.stuck(now) is None, "a component that never reports progress is never stuck"
    assert agent.stuck(now) == "agent/metrics"
    quiet.mark_progress()
    assert agent.stuck() is None
