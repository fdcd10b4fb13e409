"""The alert state machine of one fingerprint (rule + group labels), and the AlertEvent it emits.

States: ``inactive`` -> ``pending`` -> ``firing`` (severity warning or
critical) -> ``resolved``. Every change of state or severity is a
``Transition``; nothing else leaves the processor, which is the whole
deduplication. Rules of motion, evaluated at event-time instants ``t``:

* inactive/resolved + level >= warning: a new incident (``alert_id`` =
  fingerprint + start), or the same incident reopened when the condition
  came back within ``cooldown`` of the resolve. It is ``pending`` until the
  condition has held for ``for`` (Prometheus' ``for``), then ``firing``
  with the severity of the level at that instant.
* pending + level none: back to inactive (or resolved, for a reopened one).
* firing + higher level: escalation, at once. Critical + level below
  critical for ``resolve_after``: de-escalation to warning. Level none for
  ``resolve_after`` (Prometheus' ``keep_firing_for``): resolved (``auto``).
* a manual resolve (ControlEvent) resolves a pending or firing incident; a
  new incident then needs the condition to clear first (no instant re-fire
  while an operator is working on it).

The timers (``active_since``, ``clear_since``, ``below_crit_since``) are
functions of the level history alone, not of the state, so a processor
that rebuilds a window by replay derives the same timers as one that never
stopped. ``restored_ts`` is the time of the last transition already on the
alerts topic: nothing at or before it is emitted again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from tocsin.processors.ack import Ack, ack_fields, ack_of
from tocsin.processors.rules import CRITICAL, NONE, SEVERITY_NAMES, WARNING

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
SEVERITY_OF_NAME = {name: i for i, name in enumerate(SEVERITY_NAMES)}
RESOLVED_AUTO = "auto"


def event_id(alert_id: str, state: str, severity: str, ts: int) -> str:
    """Names one transition; the same inputs give the same id after any replay."""
    return hashlib.sha256(f"{alert_id}|{state}|{severity}|{ts}".encode()).hexdigest()[:32]


def alert_id_of(fingerprint: str, started_at: int) -> str:
    """Names one incident: fingerprint plus start time (microseconds)."""
    return f"{fingerprint}-{started_at}"


def fingerprint_of(alert_id: str) -> str:
    return alert_id.rpartition("-")[0]


@dataclass
class Transition:
    """One state change; ``as_record()`` is the AlertEvent."""

    ts: int
    alert_id: str
    fingerprint: str
    rule: str
    state: str
    previous_state: str
    severity: str
    previous_severity: str
    started_at: int
    ended_at: int | None
    resolved_by: str | None
    value: float | None
    threshold: float | None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ack: Ack | None = None
    ack_changed_at: int | None = None

    @property
    def event_id(self) -> str:
        return event_id(self.alert_id, self.state, self.severity, self.ts)

    @property
    def identity(self) -> tuple[str, str, str]:
        """(alert_id, state, severity): what a crash must neither lose nor repeat."""
        return self.alert_id, self.state, self.severity

    def as_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "ts": self.ts, "alert_id": self.alert_id, "fingerprint": self.fingerprint,
            "rule": self.rule, "severity": self.severity, "previous_severity": self.previous_severity,
            "state": self.state, "previous_state": self.previous_state, "value": self.value,
            "threshold": self.threshold, "labels": self.labels, "annotations": self.annotations,
            "started_at": self.started_at, "ended_at": self.ended_at, "resolved_by": self.resolved_by,
            **ack_fields(self.ack, self.ack_changed_at),
        }


class AlertTracker:
    """State and timers of one fingerprint; ``step()`` returns the transition an evaluation causes, if any."""

    __slots__ = (
        "ack", "ack_changed_at", "active_since", "alert_id", "below_crit_since", "clear_since", "ended_at",
        "fingerprint", "latched_at",
        "level", "record", "resolved_by", "restored_ts", "severity", "started_at", "state", "threshold", "ts",
        "value",
    )

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.state = INACTIVE
        self.severity = NONE
        self.alert_id = ""
        self.started_at = 0
        self.ended_at: int | None = None
        self.resolved_by: str | None = None
        self.ts = -1
        """Event time of the last transition."""
        self.restored_ts = -1
        self.level = NONE
        self.active_since: int | None = None
        self.clear_since: int | None = None
        self.below_crit_since: int | None = None
        self.latched_at: int | None = None
        self.value: float | None = None
        self.threshold: float | None = None
        self.ack: Ack | None = None
        self.ack_changed_at: int | None = None
        """See tocsin.processors.ack: the ack of the current incident, and the time of its last command."""
        self.record: dict[str, Any] | None = None
        """The last AlertEvent of this fingerprint (emitted or restored), for the HTTP API."""

    # -- level history -------------------------------------------------------------------------

    def observe(self, t: int, level: int) -> None:
        """Updates the timers from the level at ``t`` (they depend on the level history only)."""
        if level == NONE:
            self.active_since = None
            if self.clear_since is None:
                self.clear_since = t
            self.latched_at = None  # a clear releases the manual-resolve latch
        else:
            self.clear_since = None
            if self.active_since is None:
                self.active_since = t
        if level < CRITICAL:
            if self.below_crit_since is None:
                self.below_crit_since = t
        else:
            self.below_crit_since = None
        self.level = level

    # -- transitions ---------------------------------------------------------------------------

    def step(self, t: int, level: int, for_us: int, resolve_us: int, cooldown_us: int) -> tuple | None:
        """Observe ``level`` at ``t`` and move; returns ``(state, severity)`` before the move if it moved."""
        if self.state == PENDING and t > self.restored_ts >= 0 and level != NONE and (
                self.active_since is None or self.active_since > self.restored_ts):
            # Restored pending: it has been active since its pending transition at the latest.
            self.observe(t, level)
            self.active_since = min(self.active_since or t, self.restored_ts)
        else:
            self.observe(t, level)
        if t <= self.restored_ts:
            return None  # already on the alerts topic
        before = (self.state, self.severity)
        st = self.state
        if st in (INACTIVE, RESOLVED):
            if level == NONE or self.latched_at is not None:
                return None
            since = self.active_since if self.active_since is not None else t
            reopen = st == RESOLVED and self.ended_at is not None and since - self.ended_at < cooldown_us
            if not reopen:
                self.started_at = since
                self.alert_id = alert_id_of(self.fingerprint, since)
                self.ended_at = None
            self.resolved_by = None
            self.ack = None  # a new or reopened incident: an old ack does not cover it
            if t - since >= for_us:
                self._move(t, FIRING, level)
            else:
                self._move(t, PENDING, level)
        elif st == PENDING:
            if level == NONE:
                self._move(t, RESOLVED if self.ended_at is not None else INACTIVE, NONE)
            elif self.active_since is not None and t - self.active_since >= for_us:
                self.ended_at = None
                self._move(t, FIRING, level)
            else:
                self.severity = level  # severity of a pending alert follows the level, not a transition
                return None
        elif st == FIRING:
            if level > self.severity:
                self.ack = None  # escalated: the ack was given for the lesser condition
                self._move(t, FIRING, level)
            elif self.clear_since is not None and t - self.clear_since >= resolve_us:
                self.ended_at = t
                self.resolved_by = RESOLVED_AUTO
                self._move(t, RESOLVED, NONE)
            elif (self.severity == CRITICAL and self.below_crit_since is not None
                  and t - self.below_crit_since >= resolve_us):
                self._move(t, FIRING, WARNING)
            else:
                return None
        return before if (self.state, self.severity) != before else None

    def resolve_manually(self, t: int, actor: str) -> tuple | None:
        """An operator's resolve: pending or firing -> resolved, latched until the condition clears."""
        if self.state not in (PENDING, FIRING):
            return None
        before = (self.state, self.severity)
        t = max(t, self.ts + 1)
        self.ended_at = t
        self.resolved_by = actor or "manual"
        self.latched_at = t
        self._move(t, RESOLVED, NONE)
        return before

    def apply_ack(self, t: int, ack: Ack | None, command_ts: int) -> tuple | None:
        """An ack (or unack, ``ack`` None) command at ``command_ts``: the transition it causes, if any.

        Same state and severity, a new ``ts`` (after the last transition); see tocsin.processors.ack.
        """
        if not self.open or (self.ack_changed_at is not None and command_ts <= self.ack_changed_at):
            return None
        if ack is None and self.ack is None:
            return None
        before = (self.state, self.severity)
        self.ack, self.ack_changed_at = ack, command_ts
        self.ts = max(t, self.ts + 1)
        return before

    def _move(self, t: int, state: str, severity: int) -> None:
        self.state, self.severity, self.ts = state, severity, t

    def restore(self, record: dict[str, Any]) -> None:
        """Adopts the latest AlertEvent of this fingerprint from the alerts topic."""
        self.state = record["state"]
        self.severity = SEVERITY_OF_NAME.get(record["severity"], NONE)
        self.alert_id = record["alert_id"]
        self.started_at = record["started_at"]
        self.ended_at = record.get("ended_at")
        self.resolved_by = record.get("resolved_by")
        self.ts = self.restored_ts = record["ts"]
        self.value = record.get("value")
        self.threshold = record.get("threshold")
        self.record = dict(record)
        self.ack = ack_of(record)
        self.ack_changed_at = record.get("ack_changed_at")
        if self.state == RESOLVED and self.resolved_by not in (None, RESOLVED_AUTO):
            self.latched_at = self.ts
        if self.state == PENDING:
            self.active_since = self.ts

    @property
    def idle(self) -> bool:
        """Nothing to remember: inactive with no timer, or resolved past any cooldown (checked by the caller)."""
        return self.state == INACTIVE and self.level == NONE

    @property
    def open(self) -> bool:
        return self.state in (PENDING, FIRING)

    def deadline(self, for_us: int, resolve_us: int) -> int | None:
        """When a running timer would move this tracker if the level stayed as it is; None if none runs.

        The level changes only with new data or a sliding window, both of which evaluate the series, so
        between them this instant is the only one at which evaluating can change anything.
        """
        if self.state == PENDING:
            return self.active_since + for_us if self.active_since is not None else None
        if self.state != FIRING:
            return None
        due = [since + resolve_us for since in (self.clear_since,
               self.below_crit_since if self.severity == CRITICAL else None) if since is not None]
        return min(due) if due else None

    @property
    def waiting(self) -> bool:
        """A timer runs: ``for`` while pending, ``resolve_after`` while firing above the current level.

        Anything else changes only with new data or a sliding window, which evaluate the series anyway.
        """
        return self.state == PENDING or (self.state == FIRING and self.level < self.severity)

    def transition(self, before: tuple, rule: str, labels: dict[str, str]) -> Transition:
        prev_state, prev_sev = before
        return Transition(
            ts=self.ts, alert_id=self.alert_id, fingerprint=self.fingerprint, rule=rule, state=self.state,
            previous_state=prev_state, severity=SEVERITY_NAMES[self.severity],
            previous_severity=SEVERITY_NAMES[prev_sev], started_at=self.started_at,
            ended_at=self.ended_at if self.state == RESOLVED else None,
            resolved_by=self.resolved_by if self.state == RESOLVED else None,
            value=self.value, threshold=self.threshold, labels=labels, ack=self.ack,
            ack_changed_at=self.ack_changed_at,
        )
