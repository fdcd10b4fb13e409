"""Silences: matchers, a start and an end, kept on the compacted silences topic and applied by every notify sink.

Store: ``kafka.topics.silences`` (``tocsin.silences``), compacted and keyed by
silence id, so the latest record of each silence is kept however long it
lasts (up to 90 days), whatever the time retention of the control topic
(72 hours by default). Every record is the silence's whole state: a
``silence_create`` and, once ended early, a ``silence_expire`` that repeats the
matchers, start, creator and reason with ``ends_at`` set to the expiry time.
Each notify sink reads the topic whole at start and follows it; ``tocsin
silence list`` and the HTTP API read it the same way, so every reader agrees
on the silences and a restart restores them all. Silences that releases before
this one put on the control topic are still read from there (while it keeps
them).

ControlEvent fields used (schemas/avro/ControlEvent.v2.avsc): ``event_id``,
``ts`` (when the command was issued), ``action``, ``silence_id``, ``matchers``
[{label, op (=, !=, =~, !~), value}], ``starts_at`` (planned start; null: ``ts``),
``ends_at``, ``reason``, ``actor`` (who issued it), ``created_by``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import uuid
from dataclasses import dataclass
from typing import Any

from tocsin.core.errors import ConfigError
from tocsin.core.events import HOSTNAME, now_us
from tocsin.sinks.notify.config import MatcherSpec, matches_all

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_SILENCE_S = 90 * 86400  # a silence longer than a quarter is a forgotten silence
MAX_START_AHEAD_S = 365 * 86400  # maintenance planned further ahead than a year is a typo


@dataclass
class Silence:
    id: str
    matchers: list[MatcherSpec]
    starts_at_us: int
    ends_at_us: int
    reason: str = ""
    actor: str = ""  # who created it
    expired_by: str = ""

    def active(self, now: int) -> bool:
        return self.starts_at_us <= now < self.ends_at_us

    def state(self, now: int) -> str:
        """pending (planned ahead), active or expired."""
        return "pending" if now < self.starts_at_us else ("active" if now < self.ends_at_us else "expired")

    def describe(self, now: int | None = None) -> dict[str, Any]:
        out = {"id": self.id, "matchers": [str(m) for m in self.matchers], "starts_at_us": self.starts_at_us,
               "ends_at_us": self.ends_at_us, "reason": self.reason, "actor": self.actor,
               "created_by": self.actor, "expired_by": self.expired_by}
        if now is not None:
            out["state"] = self.state(now)
        return out


class SilenceStore:
    """Silences from ControlEvents, applied in the order they were produced."""

    def __init__(self) -> None:
        self._silences: dict[str, Silence] = {}

    def apply(self, event: dict[str, Any]) -> str | None:
        """Applies one ControlEvent; returns why it could not (never raises). Other actions are ignored."""
        # Order-independent: a silence never gets longer, so a create read after its own expire (the
        # expire on the silences topic, the create on the control topic of an older release) stays expired.
        action = event.get("action")
        sid = event.get("silence_id") or ""
        if action == "silence_expire" and sid in self._silences:
            silence = self._silences[sid]
            silence.ends_at_us = min(silence.ends_at_us, int(event["ts"]))
            silence.expired_by = event.get("actor") or ""
            return None
        if action not in ("silence_create", "silence_expire"):
            return None  # "resolve", "ack", "unack" are the processor's
        if not sid:
            return f"{action} without silence_id"
        if not event.get("matchers"):
            if action == "silence_expire":
                return f"silence {sid} is unknown (never created, or gone with the control topic's retention)"
            return f"silence {sid} has no matchers (it would mute everything)"
        try:
            matchers = [MatcherSpec(**m) for m in event["matchers"]]
        except (ValueError, TypeError) as exc:
            return f"silence {sid} has an invalid matcher: {exc}"
        ends = event.get("ends_at")
        if ends is None:
            return f"silence {sid} has no ends_at"
        ends = int(ends) if action == "silence_create" else min(int(ends), int(event["ts"]))
        starts = event.get("starts_at")
        silence = Silence(sid, matchers, int(event["ts"] if starts is None else starts), ends,
                          event.get("reason") or "", event.get("created_by") or event.get("actor") or "",
                          (event.get("actor") or "") if action == "silence_expire" else "")
        known = self._silences.get(sid)
        if known is not None and known.ends_at_us < silence.ends_at_us:
            silence.ends_at_us, silence.expired_by = known.ends_at_us, known.expired_by
        self._silences[sid] = silence
        return None

    def muting(self, labels: dict[str, str], now: int) -> Silence | None:
        for s in self._silences.values():
            if s.active(now) and matches_all(s.matchers, labels):
                return s
        return None

    def active(self, now: int) -> list[Silence]:
        """Active and pending (planned) silences, soonest ending first."""
        return sorted((s for s in self._silences.values() if s.ends_at_us > now), key=lambda s: s.ends_at_us)

    def all(self) -> list[Silence]:
        return sorted(self._silences.values(), key=lambda s: s.starts_at_us)

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def prune(self, now: int) -> None:
        for sid in [sid for sid, s in self._silences.items() if s.ends_at_us <= now]:
            del self._silences[sid]


def parse_duration(text: str) -> float:
    """``2h``, ``30m``, ``1h30m``, ``90s``, ``1d`` -> seconds; raises ``ConfigError``."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION_RE.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"duration {text!r}: expected e.g. 2h, 30m, 1h30m, 90s or 1d")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not 0 < seconds <= MAX_SILENCE_S:
        raise ConfigError(f"duration {text!r}: must be above 0 and at most {MAX_SILENCE_S // 86400} days")
    return seconds


def parse_start(text: str, now_s: float | None = None) -> int:
    """``--start``: ISO 8601 (``2026-05-01T22:00+02:00``; no offset means UTC) or ``+2h`` from now -> micros."""
    import time

    now = time.time() if now_s is None else now_s
    raw = text.strip()
    if raw.startswith("+"):
        return int((now + parse_duration(raw[1:])) * 1e6)
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"start {text!r}: expected ISO 8601 (2026-05-01T22:00+02:00) or +DURATION (+2h)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    start = when.timestamp()
    if start > now + MAX_START_AHEAD_S:
        raise ConfigError(f"start {text!r} is more than {MAX_START_AHEAD_S // 86400} days ahead")
    return int(start * 1e6)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{HOSTNAME}"


def create_event(matchers: list[MatcherSpec], duration_s: float, reason: str = "", actor: str | None = None,
                 start_us: int | None = None) -> dict[str, Any]:
    """A ``silence_create`` ControlEvent with a fresh silence id."""
    if not matchers:
        raise ConfigError("a silence needs at least one matcher (it would mute everything)")
    issued = now_us()
    start = start_us if start_us is not None else issued
    creator = actor or default_actor()
    return {"event_id": uuid.uuid4().hex, "ts": issued, "action": "silence_create", "alert_id": None,
            "fingerprint": None, "silence_id": uuid.uuid4().hex[:12],
            "matchers": [{"label": m.label, "op": m.op, "value": m.value} for m in matchers],
            "starts_at": start, "ends_at": start + int(duration_s * 1e6), "reason": reason, "actor": creator,
            "created_by": creator}


def expire_event(silence: Silence, actor: str | None = None) -> dict[str, Any]:
    """A ``silence_expire`` carrying the silence's whole state (it replaces the create under compaction)."""
    issued = now_us()
    return {"event_id": uuid.uuid4().hex, "ts": issued, "action": "silence_expire", "alert_id": None,
            "fingerprint": None, "silence_id": silence.id,
            "matchers": [{"label": m.label, "op": m.op, "value": m.value} for m in silence.matchers],
            "starts_at": silence.starts_at_us, "ends_at": min(silence.ends_at_us, issued), "reason": silence.reason,
            "actor": actor or default_actor(), "created_by": silence.actor}


def publish(kafka_cfg: Any, topic: str, event: dict[str, Any]) -> None:
    """Produces one ControlEvent to ``topic`` (the silences topic), keyed by silence id for compaction."""
    from tocsin.core import kafka as kafka_api
    from tocsin.core.errors import KafkaError
    from tocsin.core.events import CONTROL_EVENT
    from tocsin.schemas.codec import default_codec

    producer = kafka_api.producer(kafka_cfg)
    try:
        future = producer.send(topic, key=str(event["silence_id"]).encode(),
                               value=default_codec().encode(CONTROL_EVENT, event))
        future.get(timeout=30)
    except Exception as exc:
        raise KafkaError(f"cannot publish to {topic}: {type(exc).__name__}: {exc}") from exc
    finally:
        producer.close(timeout=5)


def read_store(kafka_cfg: Any, timeout_s: float = 30.0) -> SilenceStore:
    """Every silence on the silences topic (and the control topic, older releases), read to their current ends.

    Raises ``ReadTimeout`` when an end is not reached in time, ``KafkaError`` when a topic is missing.
    """
    from tocsin.core import kafka as kafka_api
    from tocsin.core.errors import DecodeError
    from tocsin.core.events import CONTROL_EVENT
    from tocsin.schemas.codec import default_codec

    store = SilenceStore()
    codec = default_codec()

    def handle(_tp: Any, rec: Any) -> None:
        if rec.value is None:
            return
        try:
            name, event = codec.decode(rec.value)
        except DecodeError:
            return
        if name == CONTROL_EVENT:
            store.apply(event)

    for topic in (kafka_cfg.topics.silences, kafka_cfg.topics.control):
        kafka_api.read_topic(kafka_cfg, topic, handle, timeout_s=timeout_s)
    return store
