"""Acknowledgements: an operator says "I am on it" for one incident, with a note and an optional expiry.

Wire format: an ``ack`` or ``unack`` ControlEvent (v2) on the control topic
(``alert_id``, ``actor``, ``reason`` = the note, ``ends_at`` = when the ack
lapses, null: never). The processor that owns the incident applies it and
emits an AlertEvent (v2) of the same state and severity carrying the ack
fields (``acked_by``, ``acked_at``, ``ack_note``, ``ack_expires_at``), so the
ack is part of the alert's state on the compacted alerts topic: restored after
a restart like the rest, and seen by every consumer (the notify sink stops
repeats while it holds; PagerDuty gets ``acknowledge``).

Rules:

* only an open (pending or firing) incident can be acked, by its ``alert_id``;
* a command is applied once: its ``ts`` must be later than the incident's
  ``ack_changed_at`` (the control topic is re-read after a restart or a
  rebalance, and an ack replayed after an unack must not come back);
* an escalation of severity, and any new incident, clears the ack (the ack was
  given for a lesser condition); a de-escalation or a resolve keeps it;
* an ack whose ``ack_expires_at`` has passed is not live (``is_live``): nothing
  is emitted when it lapses, every reader judges it by the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

ACK, UNACK = "ack", "unack"
ACTIONS = (ACK, UNACK)
MAX_NOTE_CHARS = 1000
"""A note is a sentence or two; longer ones are cut (it travels in every notification)."""
MAX_ACTOR_CHARS = 200

AckOutcome = Literal["accepted", "not_open", "not_acked", "unknown"]
ACK_FIELDS = ("acked_by", "acked_at", "ack_note", "ack_expires_at", "ack_changed_at")


@dataclass(frozen=True)
class Ack:
    """A live or lapsed acknowledgement of one incident."""

    by: str
    at: int
    note: str = ""
    expires_at: int | None = None

    def is_live(self, now_us: int) -> bool:
        return self.expires_at is None or now_us < self.expires_at


def ack_fields(ack: Ack | None, changed_at: int | None) -> dict[str, Any]:
    """The AlertEvent v2 fields for ``ack`` (all null when there is none)."""
    if ack is None:
        return {"acked_by": None, "acked_at": None, "ack_note": None, "ack_expires_at": None,
                "ack_changed_at": changed_at}
    return {"acked_by": ack.by, "acked_at": ack.at, "ack_note": ack.note or None, "ack_expires_at": ack.expires_at,
            "ack_changed_at": changed_at}


def ack_of(record: Mapping[str, Any]) -> Ack | None:
    """The ack an AlertEvent carries (v1 records carry none)."""
    by = record.get("acked_by")
    if not by:
        return None
    return Ack(str(by), int(record.get("acked_at") or record.get("ts") or 0), str(record.get("ack_note") or ""),
               record.get("ack_expires_at"))


def is_acked(record: Mapping[str, Any], now_us: int) -> bool:
    """Whether an AlertEvent carries a live ack at ``now_us``."""
    ack = ack_of(record)
    return ack is not None and ack.is_live(now_us)


def ack_from_control(rec: Mapping[str, Any]) -> Ack | None:
    """The ack an ``ack`` ControlEvent gives; None for ``unack``."""
    if rec.get("action") != ACK:
        return None
    actor = str(rec.get("actor") or "unknown")[:MAX_ACTOR_CHARS]
    return Ack(actor, int(rec["ts"]), str(rec.get("reason") or "")[:MAX_NOTE_CHARS], rec.get("ends_at"))


def control_record(action: str, alert_id: str, fingerprint: str, *, event_id: str, ts: int, actor: str,
                   note: str = "", expires_at: int | None = None) -> dict[str, Any]:
    """An ``ack``/``unack`` ControlEvent (v2)."""
    if action not in ACTIONS:
        raise ValueError(f"not an ack action: {action!r}")
    return {"event_id": event_id, "ts": ts, "action": action, "alert_id": alert_id, "fingerprint": fingerprint,
            "silence_id": None, "matchers": [], "ends_at": expires_at if action == ACK else None,
            "reason": note[:MAX_NOTE_CHARS] if action == ACK else "", "actor": actor[:MAX_ACTOR_CHARS],
            "starts_at": None, "created_by": None}


@runtime_checkable
class AckActions(Protocol):
    """What the HTTP API needs to ack: implemented by ``ProcessorService`` and ``ProcessorView``."""

    def ack(self, alert_id: str, note: str, expires_at: int | None, actor: str) -> AckOutcome: ...

    def unack(self, alert_id: str, actor: str) -> AckOutcome: ...
