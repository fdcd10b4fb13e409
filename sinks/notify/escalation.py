"""Escalation: an alert still firing, and not acknowledged, ``escalate_after`` its start also goes to another receiver.

A route says::

    routes:
      - {matchers: [severity=critical], receiver: team-chat, escalate_after: 15m, escalate_to: oncall-pager}

The router tracks each incident (``alert_id``) that a route with an escalation
took; once ``started_at + escalate_after`` has passed and the incident still
fires and carries no live acknowledgement (``acked_by`` with no lapsed
``ack_expires_at``, AlertEvent fields from the ack work; absent, it counts as not
acked), the router puts it in an escalation group of its own (route id
``<id>.escalation``, receiver ``escalate_to``). From there it is delivered, retried,
logged, silenced or muted like any notification, once per incident; the
escalation receiver also hears the resolve. After a restart the notification
log's ``sent`` row of the escalation group marks the incident as escalated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

ESCALATION_SUFFIX = ".escalation"
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def duration_s(value: Any) -> Any:
    """``15m``, ``1h30m``, ``90s`` or a number of seconds -> seconds (pydantic validates the rest)."""
    if value is None or isinstance(value, int | float):
        return value
    compact = str(value).replace(" ", "").lower()
    parts = _DURATION_RE.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"duration {value!r}: expected e.g. 15m, 1h30m, 90s or a number of seconds")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def is_escalation(route_id: str) -> bool:
    return route_id.endswith(ESCALATION_SUFFIX)


def acked(event: dict[str, Any], now_us: int) -> bool:
    """A live acknowledgement: acked_by set, and its ack_expires_at (if any) still ahead."""
    if not event.get("acked_by"):
        return False
    expires = event.get("ack_expires_at")
    return expires is None or now_us < int(expires)


@dataclass
class _Watch:
    route: Any  # routing.Route with escalate_after_s and escalate_to
    transition: Any  # the latest firing transition of the incident
    due_at: float


@dataclass
class Escalations:
    """Incidents waiting for their escalation time, and those already escalated (once per incident)."""

    watching: dict[str, _Watch] = field(default_factory=dict)  # alert_id -> watch
    escalated: set[str] = field(default_factory=set)  # alert_ids

    def track(self, route: Any, t: Any) -> None:
        alert_id = str(t.event["alert_id"])
        if alert_id in self.escalated:
            return
        due = int(t.event["started_at"]) / 1e6 + route.escalate_after_s
        known = self.watching.get(alert_id)
        self.watching[alert_id] = _Watch(route, t, min(due, known.due_at) if known else due)

    def forget(self, alert_id: str) -> None:
        self.watching.pop(alert_id, None)

    def mark_escalated(self, alert_id: str) -> None:
        self.escalated.add(alert_id)
        self.watching.pop(alert_id, None)

    def due(self, now: float) -> list[tuple[Any, Any]]:
        """(route, transition) of incidents to escalate now; each is handed out once."""
        now_us = int(now * 1e6)
        out = []
        for alert_id, w in list(self.watching.items()):
            if now < w.due_at:
                continue
            if acked(w.transition.event, now_us):
                continue  # looked at again at the next flush: an ack that lapses escalates then
            out.append((w.route, w.transition))
            self.mark_escalated(alert_id)
        return out


def escalation_route(route: Any) -> Any:
    """The route an escalation group uses: the original's timing, the escalation receiver, no child routes."""
    return replace(route, id=route.id + ESCALATION_SUFFIX, receiver=route.escalate_to, children=[],
                   continue_=False, escalate_after_s=None, escalate_to=None)
