"""The control topic: manual resolves, acks and unacks, read by every processor and applied by the owner.

A mixin of ``ProcessorService``; ``ack``/``unack`` are what ``tocsin.processors.ack.AckActions`` calls
through the view.
"""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError as _KafkaError

from tocsin.core import kafka as kafka_api
from tocsin.core.errors import DecodeError, KafkaError
from tocsin.core.events import CONTROL_EVENT, new_event_id, now_us
from tocsin.processors import ack as acks
from tocsin.processors.alerts import fingerprint_of
from tocsin.processors.service.changelog import read_alert_changelog

RECENT_CONTROL = 10_000
"""Manual resolves and acks kept to re-apply after a rebalance."""


class Control:
    """Control-topic handling of ``ProcessorService`` (its state lives there)."""

    cfg: Any
    pcfg: Any
    engine: Any
    producer: Any
    codec: Any
    lock: Any

    def _start_control(self) -> None:
        kcfg = self.cfg.kafka
        topic = kcfg.topics.control
        self._control = kafka_api.consumer(kcfg, group_id=None)
        parts = [TopicPartition(topic, q) for q in sorted(self._control.partitions_for_topic(topic) or [])]
        self._control.assign(parts)
        if not parts:
            return
        since_ms = (now_us() - int(self.pcfg.control_lookback_s * 1e6)) // 1000
        found = self._control.offsets_for_times({tp: since_ms for tp in parts})
        ends = self._control.end_offsets(parts)
        for tp in parts:
            hit = found.get(tp)
            self._control.seek(tp, hit.offset if hit is not None else ends[tp])

    def _poll_control(self) -> None:
        if self._control is None:
            return
        batch = self._control.poll(timeout_ms=0)
        for records in batch.values():
            for m in records:
                try:
                    name, rec = self.codec.decode(m.value)
                except DecodeError as exc:
                    self.engine.counters.decode_errors += 1  # type: ignore[union-attr]
                    self._deadletter(m, exc.reason, "control")
                    continue
                if name != CONTROL_EVENT:
                    self._deadletter(m, f"a {name} on the control topic", "control")
                    continue
                if rec["action"] in ("resolve", *acks.ACTIONS) and rec.get("alert_id"):
                    self._resolves.append(rec)
                    self._apply_resolve(rec)

    def _apply_resolve(self, rec: dict[str, Any]) -> None:
        """A resolve, ack or unack command (re-applied after a rebalance: each is applied once)."""
        if rec["action"] in acks.ACTIONS:
            self.engine.acknowledge(rec)  # type: ignore[union-attr]
            return
        actor = rec.get("actor") or "manual"
        self.engine.resolve(rec["alert_id"], rec["ts"], actor)  # type: ignore[union-attr]

    def ack(self, alert_id: str, note: str, expires_at: int | None, actor: str) -> acks.AckOutcome:
        """Publishes an ``ack`` ControlEvent for an open incident (tocsin.processors.ack); the owner applies it."""
        latest = self._current(alert_id)
        if latest is None:
            return "unknown"
        if latest["state"] not in ("pending", "firing"):
            return "not_open"
        self._send_control(acks.control_record(
            acks.ACK, alert_id, latest["fingerprint"], event_id=new_event_id(), ts=now_us(), actor=actor,
            note=note, expires_at=expires_at))
        return "accepted"

    def unack(self, alert_id: str, actor: str) -> acks.AckOutcome:
        """Publishes an ``unack`` ControlEvent when the open incident carries an ack."""
        latest = self._current(alert_id)
        if latest is None:
            return "unknown"
        if latest["state"] not in ("pending", "firing"):
            return "not_open"
        if not latest.get("acked_by"):
            return "not_acked"
        self._send_control(acks.control_record(
            acks.UNACK, alert_id, latest["fingerprint"], event_id=new_event_id(), ts=now_us(), actor=actor))
        return "accepted"

    def _current(self, alert_id: str) -> dict[str, Any] | None:
        """The latest AlertEvent of incident ``alert_id``: from memory if ours, else from the changelog."""
        fp = fingerprint_of(alert_id)
        if not fp:
            return None
        with self.lock:
            found = self.engine.by_fingerprint.get(fp) if self.engine else None
            tr = found[1].tracker if found is not None else None
            if tr is not None and tr.alert_id == alert_id and tr.record is not None:
                return dict(tr.record)
        latest = read_alert_changelog(self.cfg).get(fp)
        return latest if latest is not None and latest["alert_id"] == alert_id else None

    def _send_control(self, record: dict[str, Any]) -> None:
        producer = self.producer or kafka_api.producer(self.cfg.kafka)
        try:
            producer.send(self.cfg.kafka.topics.control, key=record["fingerprint"].encode(),
                          value=self.codec.encode(CONTROL_EVENT, record)).get(timeout=30)
        except _KafkaError as exc:
            raise KafkaError(f"sending the {record['action']} of {record['alert_id']} failed: {exc}") from exc
        finally:
            if producer is not self.producer:
                producer.close(timeout=10)
