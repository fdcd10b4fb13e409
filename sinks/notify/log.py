"""The notification log: one ClickHouse row per delivery attempt and transition, and the questions a restart asks.

Rows go to ``{db}.notifications`` (schema in ``sinks/clickhouse/schema.py``):
``status`` is ``sent``, ``retrying`` (this attempt failed, another follows),
``failed`` (final), ``silenced``, ``inhibited``, ``muted`` (a time interval; the reason names it),
``already_sent`` (a restart's check found it sent: skipped), ``dropped`` (send_resolved off, or cut from a
webhook's payload by max_alerts) or ``unrouted`` (no route matched; receiver ""); ``error`` carries the reason.
Rows are written synchronously right after each attempt, so the window in which a crash can
forget a delivery is the few milliseconds between the receiver's answer and
the insert. The client is shared by the receiver threads, hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tocsin.core.errors import StoreError

log = logging.getLogger(__name__)

COLUMNS = ("event_id", "ts", "alert_event_id", "alert_id", "fingerprint", "rule", "service", "severity", "state",
           "receiver", "receiver_type", "attempt", "status", "http_status", "error", "duration_ms", "group_key")
INSERT_RETRIES = 5  # a brief ClickHouse hiccup must not lose the record of a delivery
QUERY_CHUNK = 2000  # ids per IN (...) list
CLOCK_SKEW_US = 3600 * 1_000_000  # a notification is logged after its transition; allow an hour of skew
_NS = uuid.UUID("5b0e5d8e-6f5f-4b8a-9a57-3c8b2f8f1e01")


@dataclass(frozen=True)
class LogRow:
    alert_event: dict[str, Any]
    receiver: str
    receiver_type: str
    attempt: int
    status: str
    http_status: int = 0
    error: str = ""
    duration_ms: float = 0.0
    group_key: str = ""
    notification_id: str = ""

    def values(self, ts_us: int) -> list[Any]:
        ev = self.alert_event
        event_id = uuid.uuid5(_NS, f"{self.notification_id}:{self.attempt}:{ev['event_id']}:{self.receiver}:"
                                   f"{self.status}").hex
        severity = ev.get("severity") or "none"
        if severity == "none":
            severity = ev.get("previous_severity") or "none"
        return [event_id, ts_us, ev["event_id"], ev.get("alert_id", ""), ev.get("fingerprint", ""), ev.get("rule", ""),
                (ev.get("labels") or {}).get("service", ""), severity, ev.get("state", ""), self.receiver,
                self.receiver_type, min(self.attempt, 65535), self.status, self.http_status, self.error,
                float(self.duration_ms), self.group_key]


class NotificationLog:
    """Writes and queries ``{db}.<table>`` through a clickhouse-connect client."""

    def __init__(self, client: Any, database: str, table: str = "notifications") -> None:
        self.client = client
        self.table = f"`{database}`.`{table}`"
        self._lock = threading.Lock()
        self.rows_written = 0

    def write(self, rows: Sequence[LogRow]) -> None:
        """Inserts rows now; retries briefly, then raises ``StoreError``."""
        if not rows:
            return
        ts = time.time_ns() // 1000
        data = [r.values(ts) for r in rows]
        delay = 0.1
        for attempt in range(1, INSERT_RETRIES + 1):
            try:
                with self._lock:
                    self.client.insert(self.table, data, column_names=list(COLUMNS))
                self.rows_written += len(data)
                return
            except Exception as exc:
                if attempt == INSERT_RETRIES:
                    raise StoreError(f"cannot write the notification log {self.table}: {exc}") from exc
                log.warning("Notification log insert failed; retrying.", extra={"error": str(exc)})
                time.sleep(delay)
                delay *= 2

    def _query(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return list(self.client.query(sql, parameters=parameters).result_rows)
        except Exception as exc:
            raise StoreError(f"cannot read the notification log {self.table}: {exc}") from exc

    def already_sent(self, events: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
        """alert_event_id -> receivers that were sent that transition, or dropped it (the restart check)."""
        evs = list(events)
        out: dict[str, set[str]] = {}
        for i in range(0, len(evs), QUERY_CHUNK):
            chunk = evs[i:i + QUERY_CHUNK]
            since = min(int(e["ts"]) for e in chunk) - CLOCK_SKEW_US
            rows = self._query(
                f"SELECT DISTINCT alert_event_id, receiver FROM {self.table} "
                "WHERE ts >= fromUnixTimestamp64Micro({since:Int64}) AND status IN ('sent', 'dropped') "
                "AND alert_event_id IN {ids:Array(String)}",
                {"since": since, "ids": [str(e["event_id"]) for e in chunk]},
            )
            for event_id, receiver in rows:
                out.setdefault(event_id, set()).add(receiver)
        return out

    def told_firing(self, alerts: Iterable[dict[str, Any]]) -> dict[str, dict[str, tuple[str, float]]]:
        """fingerprint -> {receiver: (group key, last sent s)} for incidents told they fire (restore)."""
        evs = list(alerts)
        out: dict[str, dict[str, tuple[str, float]]] = {}
        for i in range(0, len(evs), QUERY_CHUNK):
            chunk = evs[i:i + QUERY_CHUNK]
            since = min(int(e["started_at"]) for e in chunk) - CLOCK_SKEW_US
            rows = self._query(
                f"SELECT fingerprint, receiver, argMax(group_key, ts), toUnixTimestamp64Micro(max(ts)) "
                f"FROM {self.table} WHERE ts >= fromUnixTimestamp64Micro({{since:Int64}}) AND status = 'sent' "
                "AND state = 'firing' AND alert_id IN {ids:Array(String)} GROUP BY fingerprint, receiver",
                {"since": since, "ids": [str(e["alert_id"]) for e in chunk]},
            )
            for fp, receiver, key, last_us in rows:
                out.setdefault(fp, {})[receiver] = (key, int(last_us) / 1e6)
        return out

    def summary_sent(self, key: str) -> bool:
        """Whether the daily summary named ``key`` went out (so a restart does not send it twice)."""
        rows = self._query(f"SELECT count() FROM {self.table} WHERE alert_event_id = {{k:String}} "
                           "AND status = 'sent'", {"k": key})
        return bool(rows and rows[0][0])
