"""Routing, grouping, silences and inhibition: the pure logic of the notify sink (no I/O, clock injected).

An ``AlertEvent`` is one transition of one alert. ``Router.add`` routes it
(route tree, Alertmanager semantics: first matching child, ``continue`` to
try siblings, the deepest match wins) to at most one aggregation group per
receiver. ``Router.flush(now)`` turns due groups into ``Outgoing``
notifications: the alerts with a transition not yet notified to that
receiver (plus, when ``repeat_interval`` is due, every still-firing one), the
transitions they cover, and the transitions muted by a silence or an
inhibition. A group has at most one notification in flight, so a retried
firing can never be overtaken by its resolve.

Guarantees kept here: a transition is notified once per receiver (a later
transition of the same alert inside the group window supersedes it, and the
notification covers both); a resolve goes to every receiver that was told the
alert fired, even when the route of the last severity differs; an alert muted
while it fired and resolved while muted is not announced as resolved; an
alert whose silence ended while it still fires is notified at the next flush.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from tocsin.sinks.notify.config import InhibitRuleConfig, MatcherSpec, NotifyConfig, RouteConfig, matches_all
from tocsin.sinks.notify.escalation import Escalations, acked, escalation_route, is_escalation
from tocsin.sinks.notify.receivers.base import AlertView
from tocsin.sinks.notify.silences import SilenceStore
from tocsin.sinks.notify.timeintervals import TimeIntervals

NO_SEVERITY = ("", "none")
ALL_LABELS = "..."  # group_by: ["..."] groups by every label, as in Alertmanager
MUTED_RECHECK_S = 5.0  # how often a group with muted alerts looks whether the mute ended
MuteStatus = Literal["silenced", "inhibited", "muted"]


# --------------------------------------------------------------------------- labels


def effective_severity(event: dict[str, Any]) -> str:
    """A resolve carries severity ``none``; it is routed with the severity it had."""
    sev = event.get("severity") or "none"
    if sev in NO_SEVERITY:
        sev = event.get("previous_severity") or "none"
    return sev


def alert_labels(event: dict[str, Any]) -> dict[str, str]:
    """What matchers see: the alert's labels plus alertname/rule, severity, state and fingerprint."""
    return {**(event.get("labels") or {}), "alertname": event["rule"], "rule": event["rule"],
            "severity": effective_severity(event), "state": event["state"], "fingerprint": event["fingerprint"]}


def alert_view(event: dict[str, Any]) -> AlertView:
    return AlertView(
        fingerprint=event["fingerprint"], alert_id=event["alert_id"], event_id=event["event_id"], rule=event["rule"],
        severity=effective_severity(event), state=event["state"], labels=dict(event.get("labels") or {}),
        annotations=dict(event.get("annotations") or {}), starts_at_us=int(event["started_at"]),
        ends_at_us=event.get("ended_at"), ts_us=int(event["ts"]), value=event.get("value"),
        threshold=event.get("threshold"), previous_severity=event.get("previous_severity") or "none",
        acked_by=event.get("acked_by"), acked_at_us=event.get("acked_at"), ack_note=event.get("ack_note"),
        ack_expires_at_us=event.get("ack_expires_at"),
    )


# --------------------------------------------------------------------------- the route tree


@dataclass
class Route:
    """A route with every inherited setting resolved; ``id`` is its path in the tree (``0.2.1``)."""

    id: str
    receiver: str
    matchers: list[MatcherSpec]
    continue_: bool
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    send_resolved: bool
    templates: dict[str, str]
    children: list[Route] = field(default_factory=list)
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()
    escalate_after_s: float | None = None
    escalate_to: str | None = None

    def match(self, labels: dict[str, str]) -> list[Route]:
        """The deepest matching routes (Alertmanager's algorithm), or [] when this one does not match."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.children:
            hit = child.match(labels)
            if hit:
                found.extend(hit)
                if not child.continue_:
                    break
        return found or [self]

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        if ALL_LABELS in self.group_by:
            return {k: v for k, v in labels.items() if k not in ("state", "fingerprint")}
        return {k: labels.get(k, "") for k in self.group_by}

    def walk(self) -> Iterable[Route]:
        yield self
        for child in self.children:
            yield from child.walk()


def build_routes(cfg: NotifyConfig) -> Route | None:
    """The resolved tree, or None when no receiver is configured (nothing to send)."""
    if not cfg.receivers:
        return None
    root = cfg.route

    def resolve(node: RouteConfig, parent: Route | None, rid: str) -> Route:
        def pick(value: Any, inherited: Any) -> Any:
            return inherited if value is None else value

        route = Route(
            id=rid,
            receiver=pick(node.receiver, parent.receiver if parent else None),
            matchers=list(node.matchers),
            continue_=node.continue_,
            group_by=tuple(pick(node.group_by, parent.group_by if parent else tuple(cfg.group_by))),
            group_wait_s=pick(node.group_wait_s, parent.group_wait_s if parent else cfg.group_wait_s),
            group_interval_s=pick(node.group_interval_s, parent.group_interval_s if parent else cfg.group_interval_s),
            repeat_interval_s=pick(node.repeat_interval_s,
                                   parent.repeat_interval_s if parent else cfg.repeat_interval_s),
            send_resolved=pick(node.send_resolved, parent.send_resolved if parent else cfg.send_resolved),
            templates={**(parent.templates if parent else {}), **node.templates},
            mute_time_intervals=tuple(node.mute_time_intervals),  # not inherited, as in Alertmanager
            active_time_intervals=tuple(node.active_time_intervals),
            escalate_after_s=node.escalate_after_s, escalate_to=node.escalate_to,  # not inherited either
        )
        route.children = [resolve(c, route, f"{rid}.{i}") for i, c in enumerate(node.routes)]
        return route

    return resolve(root, None, "0")


# --------------------------------------------------------------------------- inhibition


class Inhibitor:
    """Tracks firing alerts that match an inhibit rule's source; O(1) per check.

    ``update(fp, labels)`` with the alert's current labels while it fires, and
    ``update(fp, None)`` once it resolves.
    """

    def __init__(self, rules: list[InhibitRuleConfig]) -> None:
        self._rules = [(list(r.source_matchers), list(r.target_matchers), tuple(r.equal)) for r in rules]
        self._sources: list[dict[tuple[str, ...], set[str]]] = [{} for _ in rules]
        self._contrib: dict[str, list[tuple[int, tuple[str, ...]]]] = {}

    def update(self, fingerprint: str, labels: dict[str, str] | None) -> None:
        for i, key in self._contrib.pop(fingerprint, []):
            fps = self._sources[i].get(key)
            if fps is not None:
                fps.discard(fingerprint)
                if not fps:
                    del self._sources[i][key]
        if labels is None:
            return
        contrib = []
        for i, (src, _tgt, equal) in enumerate(self._rules):
            if matches_all(src, labels):
                key = tuple(labels.get(name, "") for name in equal)
                self._sources[i].setdefault(key, set()).add(fingerprint)
                contrib.append((i, key))
        if contrib:
            self._contrib[fingerprint] = contrib

    def inhibited(self, fingerprint: str, labels: dict[str, str]) -> bool:
        for i, (_src, tgt, equal) in enumerate(self._rules):
            if matches_all(tgt, labels):
                fps = self._sources[i].get(tuple(labels.get(name, "") for name in equal))
                if fps and (len(fps) > 1 or fingerprint not in fps):
                    return True
        return False


# --------------------------------------------------------------------------- transitions and groups


@dataclass(eq=False)
class Transition:
    """One consumed AlertEvent and the receivers that still owe it a decision."""

    event: dict[str, Any]
    partition: Any = None  # kafka TopicPartition; None for transitions not from Kafka
    offset: int = -1
    remaining: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    @property
    def fingerprint(self) -> str:
        return str(self.event["fingerprint"])

    @property
    def state(self) -> str:
        return str(self.event["state"])


@dataclass
class Entry:
    """One alert inside one group."""

    latest: Transition
    pending: list[Transition] = field(default_factory=list)  # not yet decided for this group's receiver
    told_firing: bool = False  # the receiver was told this incident fires
    owed_firing: bool = False  # fired while muted: tell the receiver once the mute ends
    ended: Transition | None = None
    """The previous incident's resolve, still to be shown: the next incident came before the group flushed."""

    @property
    def owed(self) -> bool:
        """There is something this receiver has not heard yet."""
        return bool(self.pending) or (self.latest.state == "firing" and self.owed_firing)


@dataclass
class Group:
    key: str
    route: Route
    receiver: str
    labels: dict[str, str]
    created_at: float
    entries: dict[str, Entry] = field(default_factory=dict)
    next_flush_at: float = 0.0
    last_flush_at: float | None = None
    last_sent_at: float | None = None
    next_repeat_at: float | None = None
    in_flight: bool = False


@dataclass
class Settlement:
    """A transition decided for a receiver without (or before) a delivery: muted, already sent, dropped, or
    not routed at all (``unrouted``, receiver "")."""

    transition: Transition
    receiver: str
    status: str  # silenced | inhibited | muted | already_sent | dropped | unrouted
    group_key: str = ""
    reason: str = ""


@dataclass
class Outgoing:
    """A notification to deliver: the alerts, the transitions it settles, the ones it re-sends."""

    id: str
    group: Group
    alerts: list[AlertView]
    covered: list[Transition]  # settled by this delivery
    resent: list[Transition]  # already settled earlier (repeat, or owed after a mute ended): log only
    repeat: bool
    included: dict[str, Transition]  # fingerprint -> the transition shown


def group_key(route: Route, receiver: str, labels: dict[str, str]) -> str:
    """``<route id>:<receiver>:{label="value",...}`` like Alertmanager's groupKey."""
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{route.id}:{receiver}:{{{inner}}}"


class Router:
    """Routing state of the notify sink; every method takes ``now`` (wall-clock seconds)."""

    def __init__(self, cfg: NotifyConfig) -> None:
        self.cfg = cfg
        self.root = build_routes(cfg)
        self.silences = SilenceStore()
        self.inhibitor = Inhibitor(cfg.inhibit_rules)
        self.intervals = TimeIntervals(cfg.time_intervals)
        self.escalations = Escalations()
        self.groups: dict[str, Group] = {}
        self._groups_of: dict[str, set[str]] = {}  # fingerprint -> group keys holding it

    # -- intake ----------------------------------------------------------------------------------

    def targets(self, t: Transition) -> list[tuple[Route, str]]:
        """(route, receiver) pairs for a transition: one per receiver."""
        if self.root is None or t.state not in ("firing", "resolved"):
            return []
        out: dict[str, Route] = {}
        if t.state == "firing" or t.event.get("previous_state") == "firing" or t.fingerprint in self._groups_of:
            for route in self.root.match(t.labels):
                out.setdefault(route.receiver, route)
        if t.state == "resolved":
            # Everyone told that it fired hears that it resolved, whichever route its last severity takes.
            for key in self._groups_of.get(t.fingerprint, ()):
                g = self.groups[key]
                out.setdefault(g.receiver, g.route)
        return [(route, receiver) for receiver, route in out.items()]

    def add(self, t: Transition, now: float, already_sent: set[str] | frozenset[str] = frozenset(),
            ) -> list[Settlement]:
        """Routes one transition; returns the decisions made at once (already sent, not routed)."""
        t.labels = alert_labels(t.event)
        self.inhibitor.update(t.fingerprint, t.labels if t.state == "firing" else None)
        settled: list[Settlement] = []
        targets = self.targets(t)
        if not targets and (t.state == "firing" or t.event.get("previous_state") == "firing"):
            why = "no receiver is configured" if self.root is None else "no route matched its labels"
            settled.append(Settlement(t, "", "unrouted", "", why))  # recorded, so `tocsin why` can say so
        self._watch_escalation(t, [route for route, _ in targets])
        for route, receiver in targets:
            glabels = route.group_labels(t.labels)
            key = group_key(route, receiver, glabels)
            if t.state == "resolved" and key not in self._groups_of.get(t.fingerprint, set()):
                # A resolve for a group that never held the alert goes where the alert was: find that group.
                key = next((k for k in self._groups_of.get(t.fingerprint, ())
                            if self.groups[k].receiver == receiver), key)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(key, route, receiver, glabels, now,
                                                 next_flush_at=now + route.group_wait_s)
            entry = group.entries.get(t.fingerprint)
            if entry is None:
                if t.state == "resolved" and t.event.get("previous_state") != "firing":
                    continue
                entry = group.entries[t.fingerprint] = Entry(t)
                self._groups_of.setdefault(t.fingerprint, set()).add(key)
            if t.event.get("alert_id") != entry.latest.event.get("alert_id"):  # a new incident, same fingerprint
                previous = entry.latest
                if previous.state == "resolved" and entry.told_firing and any(p is previous for p in entry.pending):
                    entry.ended = previous  # the receiver was told it fires: it hears it resolved, then the new one
                entry.told_firing = entry.owed_firing = False
            entry.latest = t
            if receiver in already_sent:
                # Sent before a restart (the notification log says so): remember it, do not send again.
                entry.told_firing = t.state == "firing"
                entry.owed_firing = False
                settled.append(Settlement(t, receiver, "already_sent", key))
                if t.state == "resolved" and not entry.pending:
                    self._remove_entry(group, t.fingerprint)
                continue
            t.remaining.add(receiver)
            entry.pending.append(t)
            if group.last_flush_at is not None and not group.in_flight:
                group.next_flush_at = max(now, min(group.next_flush_at,
                                                   group.last_flush_at + route.group_interval_s))
        return settled

    def restore(self, t: Transition, sent: dict[str, tuple[str, float]], now: float) -> None:
        """Rebuilds the state of an alert that fires (from the changelog) and the receivers told so.

        ``sent`` maps receiver -> (group key, last sent time) from the notification log.
        """
        t.labels = alert_labels(t.event)
        if t.state != "firing":
            return
        self.inhibitor.update(t.fingerprint, t.labels)
        if self.root is None:
            return
        known = {r.id: r for r in self.root.walk()}
        if not any(is_escalation(key.split(":", 1)[0]) for key, _ in sent.values()):
            self._watch_escalation(t, self.root.match(t.labels))
        for receiver, (key, sent_at) in sent.items():
            if is_escalation(key.split(":", 1)[0]):
                self.escalations.mark_escalated(str(t.event["alert_id"]))  # escalated before the restart
                continue
            route = known.get(key.split(":", 1)[0])
            if route is None or route.receiver != receiver:
                continue  # the route tree changed since: the next transition routes afresh
            group = self.groups.get(key)
            if group is None:
                glabels = _parse_group_labels(key)
                group = self.groups[key] = Group(key, route, receiver, glabels, now, next_flush_at=now)
                group.last_flush_at = sent_at
            group.last_sent_at = max(group.last_sent_at or 0.0, sent_at)
            group.next_repeat_at = group.last_sent_at + route.repeat_interval_s
            group.entries[t.fingerprint] = Entry(t, told_firing=True)
            self._groups_of.setdefault(t.fingerprint, set()).add(key)

    # -- flushing --------------------------------------------------------------------------------

    def flush(self, now: float) -> tuple[list[Outgoing], list[Settlement]]:
        """Due groups -> notifications to send, and the muted or dropped transitions to record."""
        out: list[Outgoing] = []
        settled: list[Settlement] = []
        now_us = int(now * 1e6)
        for route, t in self.escalations.due(now):
            self._escalate(route, t, now)
        for key in list(self.groups):
            group = self.groups[key]
            if group.in_flight:
                continue
            repeat_due = group.next_repeat_at is not None and now >= group.next_repeat_at
            if now < group.next_flush_at and not repeat_due:
                continue
            outgoing, muted = self._flush_group(group, now, now_us, repeat_due)
            settled.extend(muted)
            if outgoing is not None:
                out.append(outgoing)
                group.in_flight = True
            if not group.entries:
                del self.groups[key]
        return out, settled

    def _flush_group(self, group: Group, now: float, now_us: int,
                     repeat_due: bool) -> tuple[Outgoing | None, list[Settlement]]:
        route = group.route
        alerts: list[AlertView] = []
        covered: list[Transition] = []
        resent: list[Transition] = []
        included: dict[str, Transition] = {}
        settled: list[Settlement] = []
        muted_left = False
        ack_ends: list[float] = []  # lapse times of the acks that held a repeat back
        for fp in list(group.entries):
            entry = group.entries[fp]
            latest = entry.latest
            mute = self._mute(latest, now_us, route)
            if latest.state == "firing":
                if mute is not None:
                    settled += [Settlement(t, group.receiver, mute[0], group.key, mute[1]) for t in entry.pending]
                    entry.pending = []
                    entry.ended = None
                    entry.owed_firing = not entry.told_firing
                    muted_left = muted_left or entry.owed_firing
                    continue
                if not entry.owed and repeat_due and entry.told_firing and acked(latest.event, now_us):
                    # Acked: no repeat while the ack holds (an unack or an escalation is a new transition).
                    expires = latest.event.get("ack_expires_at")
                    if expires is not None:
                        ack_ends.append(int(expires) / 1e6)
                    continue
                if entry.owed or (repeat_due and entry.told_firing):
                    if entry.ended is not None and route.send_resolved:
                        alerts.append(alert_view(entry.ended.event))  # the previous incident's resolve first
                    entry.ended = None
                    alerts.append(alert_view(latest.event))
                    included[fp] = latest
                    covered.extend(entry.pending)
                    if not entry.pending:
                        resent.append(latest)
                    entry.pending = []
                continue
            # resolved
            if not entry.pending:
                self._remove_entry(group, fp)
                continue
            if mute is not None or (not entry.told_firing and entry.owed_firing):
                status, reason = mute or ("silenced", "muted while it fired; its resolve is not announced")
                settled += [Settlement(t, group.receiver, status, group.key, reason) for t in entry.pending]
                self._remove_entry(group, fp)
                continue
            if not route.send_resolved:
                settled += [Settlement(t, group.receiver, "dropped", group.key, "send_resolved is off")
                            for t in entry.pending]
                self._remove_entry(group, fp)
                continue
            alerts.append(alert_view(latest.event))
            included[fp] = latest
            covered.extend(entry.pending)
            entry.pending = []
        group.last_flush_at = now
        group.next_flush_at = now + route.group_interval_s
        if muted_left:
            group.next_flush_at = min(group.next_flush_at, now + MUTED_RECHECK_S)
        if repeat_due and not resent:
            # Nothing fired to repeat: look again later, or when a held-back ack lapses.
            group.next_repeat_at = min([now + route.repeat_interval_s, *ack_ends])
        if not alerts:
            return None, settled
        repeat = not covered and bool(resent)
        return Outgoing(uuid.uuid4().hex, group, alerts, covered, resent, repeat, included), settled

    def _mute(self, t: Transition, now_us: int, route: Route | None = None) -> tuple[MuteStatus, str] | None:
        silence = self.silences.muting(t.labels, now_us)
        if silence is not None:
            return "silenced", f"silence {silence.id}"
        if t.state == "firing" and self.inhibitor.inhibited(t.fingerprint, t.labels):
            return "inhibited", "a more severe alert fires"
        if route is not None and (route.mute_time_intervals or route.active_time_intervals):
            why = self.intervals.muted(route.mute_time_intervals, route.active_time_intervals, now_us / 1e6)
            if why is not None:
                return "muted", why
        return None

    def _watch_escalation(self, t: Transition, routes: Iterable[Route]) -> None:
        if t.state != "firing":
            self.escalations.forget(str(t.event.get("alert_id")))
            return
        for route in routes:
            if route.escalate_after_s is not None and route.escalate_to is not None:
                self.escalations.track(route, t)
                return

    def _escalate(self, route: Route, t: Transition, now: float) -> None:
        """Puts a due incident into its escalation group, as a transition of its own (no Kafka offset)."""
        er = escalation_route(route)
        glabels = route.group_labels(t.labels)
        key = group_key(er, er.receiver, glabels)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, er, er.receiver, glabels, now, next_flush_at=now)
        copy = Transition(t.event, labels=t.labels, remaining={er.receiver})
        group.entries[t.fingerprint] = Entry(copy, pending=[copy])
        self._groups_of.setdefault(t.fingerprint, set()).add(key)
        if not group.in_flight:
            group.next_flush_at = now

    def delivered(self, outgoing: Outgoing, sent: bool, now: float) -> None:
        """Updates the group after its notification finally succeeded or failed."""
        group = outgoing.group
        group.in_flight = False
        if sent:
            group.last_sent_at = now
            group.next_repeat_at = now + group.route.repeat_interval_s
        for fp, shown in outgoing.included.items():
            entry = group.entries.get(fp)
            if entry is None:
                continue
            same_incident = shown.event.get("alert_id") == entry.latest.event.get("alert_id")
            if shown.state == "firing":
                if same_incident:
                    # Told it fires; or, finally failed, given up until the alert changes (no endless loop).
                    entry.told_firing = entry.told_firing or sent
                    entry.owed_firing = False
            elif entry.latest is shown and not entry.pending:
                self._remove_entry(group, fp)
        if any(e.pending for e in group.entries.values()):
            group.next_flush_at = max(now, (group.last_flush_at or now) + group.route.group_interval_s)
        if not group.entries and self.groups.get(group.key) is group:
            del self.groups[group.key]

    def release(self, partitions: set[Any]) -> int:
        """Forgets the undecided transitions of partitions this instance no longer owns; returns how many.

        Their next owner reads them again and decides them (after its notification log check), so
        keeping them here would notify twice. Firing state stays in the inhibitor (inhibition needs it).
        """
        dropped = 0
        for key in list(self.groups):
            group = self.groups[key]
            for fp in list(group.entries):
                entry = group.entries[fp]
                keep = [t for t in entry.pending if t.partition not in partitions]
                dropped += len(entry.pending) - len(keep)
                entry.pending = keep
                if entry.latest.partition in partitions and not keep:
                    self._remove_entry(group, fp)
            if not group.entries and not group.in_flight:
                del self.groups[key]
        return dropped

    def _remove_entry(self, group: Group, fp: str) -> None:
        group.entries.pop(fp, None)
        keys = self._groups_of.get(fp)
        if keys is not None:
            keys.discard(group.key)
            if not keys:
                del self._groups_of[fp]

    # -- introspection ---------------------------------------------------------------------------

    def next_due(self) -> float | None:
        due = [g.next_flush_at for g in self.groups.values() if not g.in_flight]
        return min(due) if due else None

    def stats(self) -> dict[str, int]:
        return {"groups": len(self.groups), "alerts": len(self._groups_of),
                "in_flight": sum(1 for g in self.groups.values() if g.in_flight)}


def _parse_group_labels(key: str) -> dict[str, str]:
    """Inverse of ``group_key`` for the label part (values are JSON strings)."""
    inner = key.split(":", 2)[2]
    labels: dict[str, str] = {}
    for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*")', inner):
        labels[m.group(1)] = json.loads(m.group(2))
    return labels
