"""What ``tocsin status`` reports: services on this host, Kafka and ClickHouse reachability,
consumer lag per Tocsin consumer group, and active alerts by severity."""

from __future__ import annotations

import time
from typing import Any

from kafka.errors import KafkaError as _KafkaError

from tocsin.app import alertlog, supervisor
from tocsin.app.config import TocsinConfig
from tocsin.core import kafka as kafka_api
from tocsin.core.errors import TocsinError

GROUPS = ("tocsin-processor", "tocsin-sink-clickhouse", "tocsin-sink-notify")


def consumer_lag(cfg: TocsinConfig) -> dict[str, int | None]:
    """Total lag of each Tocsin consumer group (None when the group has committed nothing)."""
    admin = kafka_api.admin(cfg.kafka)
    consumer = kafka_api.consumer(cfg.kafka, group_id=None)
    try:
        out: dict[str, int | None] = {}
        try:
            all_offsets = admin.list_group_offsets(list(GROUPS))
        except _KafkaError:
            all_offsets = {}
        for group in GROUPS:
            offsets = all_offsets.get(group) or {}
            committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
            if not committed:
                out[group] = None
                continue
            for topic in {tp.topic for tp in committed}:
                consumer.partitions_for_topic(topic)  # load metadata first: end_offsets needs the leaders
            try:
                ends = consumer.end_offsets(list(committed))
            except (_KafkaError, KeyError):  # a leader moving right now: report "unknown", not a crash
                out[group] = None
                continue
            out[group] = sum(max(0, ends[tp] - off) for tp, off in committed.items())
        return out
    finally:
        consumer.close()
        admin.close()


def clickhouse_reachable(cfg: TocsinConfig) -> tuple[bool, str]:
    """Whether the configured ClickHouse answers; with chdb, whether a tocsin process owns it."""
    from tocsin.core.clickhouse import connect, is_embedded

    if is_embedded(cfg.clickhouse):
        owners = [r for r in supervisor.records() if r.running and r.name in ("all", "sink-clickhouse")]
        if owners:
            return True, f"embedded, owned by {owners[0].name} (pid {owners[0].pid})"
    try:
        started = time.perf_counter()
        connect(cfg.clickhouse).command("SELECT 1")
        return True, f"answered SELECT 1 in {(time.perf_counter() - started) * 1000:.1f} ms"
    except TocsinError as exc:
        return False, str(exc)


def collect(cfg: TocsinConfig) -> dict[str, Any]:
    from tocsin.app.services import ALL

    services = [
        {"name": r.name, "pid": r.pid, "running": r.running, "uptime_s": round(time.time() - r.started_at, 1),
         "log_file": r.log_file, "members": list(ALL) if r.name == "all" else [r.name]}
        for r in supervisor.records()
    ]
    info: dict[str, Any] = {"services": services}
    try:
        info["kafka"] = {"reachable": True, "lag": consumer_lag(cfg)}
        active = alertlog.active_alerts(cfg.kafka)
        by_sev: dict[str, int] = {}
        for a in active:
            key = a["severity"] if a["state"] == "firing" else "pending"
            by_sev[key] = by_sev.get(key, 0) + 1
        info["alerts"] = {"active": len(active), "by_severity": by_sev}
    except TocsinError as exc:
        info["kafka"] = {"reachable": False, "error": str(exc)}
        info["alerts"] = None
    ok, detail = clickhouse_reachable(cfg)
    info["clickhouse"] = {"reachable": ok, "detail": detail}
    return info
