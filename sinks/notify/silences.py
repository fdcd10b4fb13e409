"""Silences: created and expired by ControlEvents on the control topic, applied by every notify sink.

A silence is matchers plus an end time (``silence_create``), ended early by
``silence_expire``. The control topic is the only store: each notify sink
reads it whole at start and follows it, and ``tocsin silence list`` reads it
the same way, so every reader agrees on the active silences. (Silences must
not outlive the topic's retention, ``kafka.topics.retention_hours``.)

ControlEvent fields used (schemas/avro/ControlEvent.v1.avsc): ``event_id``,
``ts`` (start), ``action``, ``silence_id``, ``matchers`` [{label, op, value}],
``ends_at``, ``reason``, ``actor``.
"""

from __future__ import annotations

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


@dataclass
class Silence:
    id: str
    matchers: list[MatcherSpec]
    starts_at_us: int
    ends_at_us: int
    reason: str = ""
    actor: str = ""

    def active(self, now: int) -> bool:
        return self.starts_at_us <= now < self.ends_at_us

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "starts_at_us": self.starts_at_us,
                "ends_at_us": self.ends_at_us, "reason": self.reason, "actor": self.actor}


class SilenceStore:
    """Silences from ControlEvents, applied in the order they were produced."""

    def __init__(self) -> None:
        self._silences: dict[str, Silence] = {}

    def apply(self, event: dict[str, Any]) -> str | None:
        """Applies one ControlEvent; returns why it could not (never raises). Other actions are ignored."""
        action = event.get("action")
        sid = event.get("silence_id") or ""
        if action == "silence_create":
            if not sid:
                return "silence_create without silence_id"
            if not event.get("matchers"):
                return f"silence {sid} has no matchers (it would mute everything)"
            try:
                matchers = [MatcherSpec(**m) for m in event["matchers"]]
            except (ValueError, TypeError) as exc:
                return f"silence {sid} has an invalid matcher: {exc}"
            ends = event.get("ends_at")
            if ends is None:
                return f"silence {sid} has no ends_at"
            self._silences[sid] = Silence(sid, matchers, int(event["ts"]), int(ends), event.get("reason") or "",
                                          event.get("actor") or "")
            return None
        if action == "silence_expire":
            silence = self._silences.get(sid)
            if silence is None:
                return f"silence {sid} is unknown (never created, or gone with the topic's retention)"
            silence.ends_at_us = min(silence.ends_at_us, int(event["ts"]))
            return None
        return None  # "resolve" is the processor's

    def muting(self, labels: dict[str, str], now: int) -> Silence | None:
        for s in self._silences.values():
            if s.active(now) and matches_all(s.matchers, labels):
                return s
        return None

    def active(self, now: int) -> list[Silence]:
        return sorted((s for s in self._silences.values() if s.ends_at_us > now), key=lambda s: s.ends_at_us)

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
    start = start_us if start_us is not None else now_us()
    return {"event_id": uuid.uuid4().hex, "ts": start, "action": "silence_create", "alert_id": None,
            "fingerprint": None, "silence_id": uuid.uuid4().hex[:12],
            "matchers": [{"label": m.label, "op": m.op, "value": m.value} for m in matchers],
            "ends_at": start + int(duration_s * 1e6), "reason": reason, "actor": actor or default_actor()}


def expire_event(silence_id: str, actor: str | None = None) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "ts": now_us(), "action": "silence_expire", "alert_id": None,
            "fingerprint": None, "silence_id": silence_id, "matchers": [], "ends_at": None, "reason": "",
            "actor": actor or default_actor()}


def publish(kafka_cfg: Any, topic: str, event: dict[str, Any]) -> None:
    """Produces one ControlEvent (keyed by silence id, so a silence's events stay in order)."""
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


def read_store(kafka_cfg: Any, topic: str, timeout_s: float = 30.0) -> SilenceStore:
    """Every silence on the control topic, read from the beginning to its current end.

    Raises ``ReadTimeout`` when the end is not reached in time, ``KafkaError`` when the topic is missing.
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

    kafka_api.read_topic(kafka_cfg, topic, handle, timeout_s=timeout_s)
    return store
