"""Every transition of the alert state machine: for, hysteresis, escalation, cooldown reopen, manual resolve."""

from __future__ import annotations

from tocsin.processors.alerts import (
    FIRING,
    INACTIVE,
    PENDING,
    RESOLVED,
    AlertTracker,
    alert_id_of,
    event_id,
    fingerprint_of,
)
from tocsin.processors.rules import CRITICAL, NONE, WARNING

S = 1_000_000
N, W, C = NONE, WARNING, CRITICAL


def run(levels: list[int], for_s: int = 0, resolve_s: int = 0, cooldown_s: int = 0,
        tracker: AlertTracker | None = None, start: int = 0) -> tuple[AlertTracker, list[tuple]]:
    """Steps a tracker once a second through ``levels``; returns (tracker, [(t_s, state, severity, alert_id)])."""
    tr = tracker or AlertTracker("fp")
    out = []
    for i, level in enumerate(levels):
        t = (start + i) * S
        if tr.step(t, level, for_s * S, resolve_s * S, cooldown_s * S) is not None:
            out.append((start + i, tr.state, ("none", "warning", "critical")[tr.severity], tr.alert_id))
    return tr, out


def test_pending_then_firing_after_for():
    _, out = run([N, W, W, W, W, N], for_s=3)
    assert [(t, s, sev) for t, s, sev, _ in out] == [(1, PENDING, "warning"), (4, FIRING, "warning"),
                                                     (5, RESOLVED, "none")]
    assert {a for *_, a in out} == {alert_id_of("fp", 1 * S)}


def test_pending_that_clears_goes_back_to_inactive_without_firing():
    tr, out = run([W, W, N, N], for_s=5)
    assert [(t, s) for t, s, *_ in out] == [(0, PENDING), (2, INACTIVE)]
    assert tr.state == INACTIVE


def test_for_zero_fires_at_once():
    _, out = run([N, C], for_s=0)
    assert [(t, s, sev) for t, s, sev, _ in out] == [(1, FIRING, "critical")]


def test_escalation_is_immediate_and_de_escalation_waits_resolve_after():
    _, out = run([W, W, C, C, W, C, W, W, W, N, N, N], for_s=1, resolve_s=2)
    assert [(t, s, sev) for t, s, sev, _ in out] == [
        (0, PENDING, "warning"), (1, FIRING, "warning"), (2, FIRING, "critical"),
        # below critical at 4, critical again at 5 (timer restarts), below from 6: de-escalate at 8
        (8, FIRING, "warning"),
        # clear from 9: resolved at 11
        (11, RESOLVED, "none"),
    ]


def test_hysteresis_a_flapping_value_does_not_resolve():
    _, out = run([W, N, W, N, W, N, W, N, N, N], resolve_s=2)
    assert [(t, s) for t, s, *_ in out] == [(0, FIRING), (9, RESOLVED)]


def test_without_hysteresis_the_same_input_flaps():
    _, out = run([W, N, W, N, W, N], resolve_s=0)
    assert [s for _, s, *_ in out] == [FIRING, RESOLVED] * 3
    assert len({a for *_, a in out}) == 3, "three incidents"


def test_refire_within_cooldown_reopens_the_same_incident():
    _, out = run([W, N, N, W, N], cooldown_s=5)
    assert [(t, s) for t, s, *_ in out] == [(0, FIRING), (1, RESOLVED), (3, FIRING), (4, RESOLVED)]
    assert len({a for *_, a in out}) == 1


def test_refire_after_cooldown_is_a_new_incident():
    tr, out = run([W, N] + [N] * 6 + [W], cooldown_s=5)
    assert [(t, s) for t, s, *_ in out] == [(0, FIRING), (1, RESOLVED), (8, FIRING)]
    assert out[0][3] != out[2][3] == alert_id_of("fp", 8 * S)
    assert tr.started_at == 8 * S


def test_reopened_pending_that_clears_returns_to_resolved():
    _, out = run([W, W, N, W, N], for_s=1, cooldown_s=10)
    assert [(t, s) for t, s, *_ in out] == [(0, PENDING), (1, FIRING), (2, RESOLVED), (3, PENDING), (4, RESOLVED)]


def test_manual_resolve_latches_until_the_condition_clears():
    tr, _ = run([C, C], for_s=0)
    assert tr.state == FIRING
    assert tr.resolve_manually(int(1.5 * S), "alice") == (FIRING, CRITICAL)
    assert (tr.state, tr.resolved_by, tr.ended_at) == (RESOLVED, "alice", int(1.5 * S))
    # Still critical: no new incident while the operator works on it...
    _, more = run([C, C], tracker=tr, start=2)
    assert more == []
    # ...until it clears and comes back.
    _, more = run([N, C], tracker=tr, start=4)
    assert [(t, s, sev) for t, s, sev, _ in more] == [(5, FIRING, "critical")]
    assert tr.resolve_manually(6 * S, "bob") is not None
    assert tr.resolve_manually(7 * S, "bob") is None, "resolving a resolved alert is a no-op"


def test_restored_tracker_emits_nothing_at_or_before_its_last_transition():
    _, clean = run([N, W, W, W, W, N, N], for_s=2, resolve_s=1)
    # The alerts topic said: firing since t=3 (pending at 1). Restore and replay from t=0.
    tr = AlertTracker("fp")
    tr.restore({"state": FIRING, "severity": "warning", "alert_id": alert_id_of("fp", 1 * S), "started_at": 1 * S,
                "ended_at": None, "resolved_by": None, "ts": 3 * S})
    _, replayed = run([N, W, W, W, W, N, N], for_s=2, resolve_s=1, tracker=tr)
    assert replayed == [x for x in clean if x[0] > 3]
    assert [s for _, s, *_ in replayed] == [RESOLVED]


def test_restored_pending_fires_on_its_original_schedule():
    tr = AlertTracker("fp")
    tr.restore({"state": PENDING, "severity": "warning", "alert_id": alert_id_of("fp", 10 * S),
                "started_at": 10 * S, "ended_at": None, "resolved_by": None, "ts": 10 * S})
    _, out = run([W] * 6, for_s=4, tracker=tr, start=11)  # replay begins after the pending transition
    assert [(t, s) for t, s, *_ in out] == [(14, FIRING)]
    assert out[0][3] == alert_id_of("fp", 10 * S)


def test_event_ids_are_deterministic_and_distinct_per_transition():
    a = event_id("fp-1", FIRING, "warning", 5)
    assert a == event_id("fp-1", FIRING, "warning", 5)
    assert len({a, event_id("fp-1", FIRING, "critical", 5), event_id("fp-1", RESOLVED, "none", 5),
                event_id("fp-2", FIRING, "warning", 5), event_id("fp-1", FIRING, "warning", 6)}) == 5
    assert fingerprint_of(alert_id_of("abc123", 42)) == "abc123"
