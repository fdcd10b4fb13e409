"""``tocsin demo``: the whole pipeline on the local Kafka and the embedded ClickHouse, with an incident.

What it does, in order:

1. starts the local broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``) and creates the topics;
2. writes a demo config (``$TOCSIN_HOME/demo/tocsin.yaml``: short-window rules from
   ``processors/rules/demo.yaml``, a log shipper over the shop's log files, a webhook
   receiver inside this process) and runs ``tocsin start all --detach`` with it: processor
   with its HTTP API and dashboard, ClickHouse sink, notify sink and agent in one process,
   the owner of the embedded store;
3. starts a simulated shop of three services (``tocsin.app.demo.shop``) that log JSON through
   ``tocsin.producers.logging`` and time requests through the WSGI middleware, plus a disk probe
   of the shop's database host;
4. injects an incident: an error burst in ``checkout``, a latency spike in ``payments``
   and a disk-usage breach on ``shop-db-1``, prints alerts as they fire and resolve, and
   the notifications the webhook receives;
5. writes the report (Markdown and HTML) through the store owner's API, prints SQL to
   explore the data, stops everything it started, and exits 0 only if the three expected
   alerts fired and resolved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

from tocsin.app import alertlog, supervisor
from tocsin.app.config import load_config
from tocsin.core import kafka as kafka_api
from tocsin.core import localkafka, paths
from tocsin.core.events import HEALTH_EVENT, METRIC_EVENT, iso, new_event_id, now_us
from tocsin.processors.rules import DEFAULT_RULES

SHOP = ("storefront", "checkout", "payments")
DB_HOST, DB_SERVICE, DB_MOUNT = "shop-db-1", "shop-db", "/var/lib/postgresql"
EXPECTED = {  # (rule, the label that names the culprit, its value) -> what was injected
    ("error_rate", "service", "checkout"): "error burst in checkout",
    ("api_response_time", "service", "payments"): "latency spike in payments",
    ("disk_usage", "host", DB_HOST): f"disk usage breach on {DB_HOST}",
}
RULES_FILE = DEFAULT_RULES.with_name("demo.yaml")  # shipped beside the default rules


def _free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Outcome:
    """What happened, for the exit code and ``--json-summary``."""

    started_at: int = field(default_factory=now_us)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    incident: dict[str, int] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expected_state(self) -> dict[str, dict[str, Any]]:
        out = {}
        for (rule, label, value), what in EXPECTED.items():
            mine = [t for t in self.transitions if t["rule"] == rule and t["labels"].get(label) == value]
            fired = next((t for t in mine if t["state"] == "firing"), None)
            resolved = next((t for t in mine if t["state"] == "resolved" and fired and t["ts"] >= fired["ts"]), None)
            out[what] = {"rule": rule, label: value, "fired_at": iso(fired["ts"]) if fired else None,
                         "resolved_at": iso(resolved["ts"]) if resolved else None,
                         "severity": max((t["severity"] for t in mine if t["state"] == "firing"),
                                         key=("warning", "critical").index, default=None),
                         "alert_id": fired["alert_id"] if fired else None}
        return out

    def ok(self) -> bool:
        return all(v["fired_at"] and v["resolved_at"] for v in self.expected_state().values())


class _Receiver(BaseHTTPRequestHandler):
    """A webhook receiver (Alertmanager v4 JSON) standing in for the on-call's chat."""

    outcome: Outcome

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.send_response(200)
        self.end_headers()
        with self.outcome.lock:
            self.outcome.notifications.append(body)
        names = ", ".join(f"{a['labels'].get('alertname', '?')}/{a['labels'].get('service', '?')}"
                          for a in body.get("alerts", []))
        say(f"  notification ({body.get('status')}): {names}")

    def log_message(self, *args: Any) -> None:
        return


def write_config(home: Path, bootstrap: str, api_port: int, token: str, webhook_port: int) -> Path:
    demo = home / "demo"
    config = {
        "kafka": {"bootstrap_servers": bootstrap},
        "api": {"http_addr": f"127.0.0.1:{api_port}", "token": token},
        "log_dir": str(demo / "logs"),
        "processor": {"rules_file": str(RULES_FILE)},
        "agents": {
            "service": "shop-host",
            "logship": {
                "inputs": [{"paths": [str(demo / "logs" / s / "application.log")], "service": s, "parser": "json"}
                           for s in SHOP],
                "state_file": str(demo / "logship.state"), "read_from": "end",
            },
            "metrics": {"interval_s": 5},
            "health": {"interval_s": 15, "http": [{"name": "processor", "url": f"http://127.0.0.1:{api_port}/health"}]},
        },
        "notify": {
            "receivers": [{"type": "webhook", "name": "on-call", "url": f"http://127.0.0.1:{webhook_port}/hook"}],
            "route": {"receiver": "on-call"},
            "group_wait_s": 1, "group_interval_s": 5, "repeat_interval_s": 3600,
        },
    }
    demo.mkdir(parents=True, exist_ok=True)
    path = demo / "tocsin.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load_config(path, env={})  # fail here, with the field, if the demo's own config is wrong
    return path


def follow_alerts(cfg_kafka: Any, outcome: Outcome, stop: threading.Event) -> None:
    for ev in alertlog.follow(cfg_kafka, poll_ms=300):
        if ev["ts"] >= outcome.started_at:
            with outcome.lock:
                outcome.transitions.append(ev)
            say(f"ALERT {ev['previous_state']} -> {ev['state']} [{ev['severity']}] {ev['rule']} "
                f"{ev['labels']} value={ev['value'] if ev['value'] is None else round(ev['value'], 1)}")
        if stop.is_set():
            return


def disk_probe(cfg_kafka: Any, outcome: Outcome, stop: threading.Event) -> None:
    """The shop database host's disk probe: a disk_usage metric every 2 s and a health check."""
    from tocsin.producers.emitter import EventQueue

    metrics = EventQueue(cfg_kafka, cfg_kafka.topics.metrics, METRIC_EVENT)
    health = EventQueue(cfg_kafka, cfg_kafka.topics.health, HEALTH_EVENT)
    tick = 0
    while not stop.wait(2.0):
        now = now_us()
        breach = outcome.incident.get("start", 1 << 62) <= now < outcome.incident.get("end", 1 << 62)
        used = 97.3 if breach else 61.8
        metrics.emit({"event_id": new_event_id(), "ts": now, "service": DB_SERVICE, "host": DB_HOST,
                      "name": "disk_usage", "value": used, "unit": "percent", "labels": {"mount": DB_MOUNT}})
        if tick % 5 == 0:
            status = "unhealthy" if used >= 95 else "degraded" if used >= 85 else "healthy"
            health.emit({"event_id": new_event_id(), "ts": now, "service": DB_SERVICE, "host": DB_HOST,
                         "check": "disk", "status": status, "response_time_ms": 0.4,
                         "details": {"path": DB_MOUNT, "used_percent": str(used)},
                         "error": f"{DB_MOUNT} {used} % full" if status != "healthy" else None})
        tick += 1
    metrics.close()
    health.close()


def set_modes(control: Path, modes: dict[str, str]) -> None:
    tmp = control.with_suffix(".tmp")
    tmp.write_text(json.dumps(modes))
    os.replace(tmp, control)


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the processor did not report healthy at {url} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tocsin demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=150.0,
                        help="seconds from the first request to giving up on resolution (default 150)")
    parser.add_argument("--json-summary", type=Path, help="write what happened to this JSON file")
    parser.add_argument("--out-dir", type=Path, help="where the report goes (default $TOCSIN_HOME/demo)")
    parser.add_argument("--keep-broker", action="store_true",
                        help="leave the local Kafka broker running if the demo started it (default: stop it)")
    args = parser.parse_args(argv)
    return run(args.duration, args.json_summary, args.out_dir, keep_broker=args.keep_broker)


def run(duration: float, json_summary: Path | None, out_dir: Path | None, keep_broker: bool = False) -> int:
    home = paths.home()
    out_dir = out_dir or home / "demo"
    outcome = Outcome()
    stop = threading.Event()
    shop: list[subprocess.Popen[bytes]] = []
    started_services = False
    broker = "external"  # "external" (KAFKA_BOOTSTRAP_SERVERS), "reused" (running before) or "started"
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = "reused" if localkafka.running(localkafka.default_data_dir()) else "started"
            if broker == "started":
                say("starting the local Kafka broker (Apache Kafka from Maven Central jars)...")
            bootstrap = localkafka.up().bootstrap
        say(f"kafka bootstrap={bootstrap}")
        receiver = ThreadingHTTPServer(("127.0.0.1", _free_port()), type("R", (_Receiver,), {"outcome": outcome}))
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        api_port = _free_port(8080)
        token = os.environ.get("TOCSIN_API_TOKEN") or secrets.token_urlsafe(16)
        config_path = write_config(home, bootstrap, api_port, token, receiver.server_address[1])
        env_free = {k: v for k, v in os.environ.items() if k not in ("TOCSIN_HTTP_ADDR", "TOCSIN_CONFIG")}
        cfg = load_config(config_path, env=env_free)
        kafka_api.create_topics(cfg.kafka)
        say(f"config {config_path}")

        say("starting processor, ClickHouse sink, notify sink and agent (tocsin start all --detach)...")
        supervisor.stop(["all"])  # a previous demo's services, if any
        record = supervisor.start_detached("all", str(config_path), env=env_free)
        started_services = True
        base = f"http://127.0.0.1:{api_port}"
        wait_healthy(f"{base}/health", 120)
        say(f"services up (pid {record.pid}, log {record.log_file})")
        say(f"dashboard: {base}/dashboard  (token: {token})")

        threading.Thread(target=follow_alerts, args=(cfg.kafka, outcome, stop), daemon=True).start()
        threading.Thread(target=disk_probe, args=(cfg.kafka, outcome, stop), daemon=True).start()
        control = home / "demo" / "incident.json"
        set_modes(control, {})
        for service in SHOP:
            shop.append(subprocess.Popen(
                [sys.executable, "-m", "tocsin.app.demo.shop", "--service", service, "--log-dir",
                 str(cfg.log_dir / service), "--control", str(control), "--config", str(config_path)],
                env=env_free, stdin=subprocess.DEVNULL))
        say(f"shop running: {', '.join(SHOP)} (JSON logs in {cfg.log_dir}, request timings to Kafka)")

        t0 = time.monotonic()
        warmup, incident = max(10.0, duration * 0.12), max(20.0, duration * 0.25)
        time.sleep(warmup)
        say("INCIDENT: error burst in checkout, latency spike in payments, disk filling on shop-db-1")
        outcome.incident["start"] = now_us()
        set_modes(control, {"checkout": "errors", "payments": "slow"})
        time.sleep(incident)
        outcome.incident["end"] = now_us()
        set_modes(control, {})
        say("incident over: waiting for the alerts to resolve by themselves")
        while time.monotonic() - t0 < duration and not outcome.ok():
            time.sleep(1.0)
        # The resolved notifications follow within a group interval (5 s here).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(n.get("status") == "resolved" for n in outcome.notifications) < 3:
            time.sleep(0.5)

        from tocsin.sinks.clickhouse import HttpStore, render_report

        # Reports count whole minutes: end at the next minute boundary so the resolutions are inside.
        end = dt.datetime.fromtimestamp((time.time() // 60 + 1) * 60, dt.UTC)
        minutes = math.ceil((end.timestamp() - outcome.started_at / 1e6) / 60)
        store = HttpStore(base, token, cfg.clickhouse.database)
        resolved_sql = (f"SELECT count() FROM `{cfg.clickhouse.database}`.alerts WHERE state = 'resolved' "
                        f"AND ts >= fromUnixTimestamp64Micro({outcome.started_at})")
        deadline = time.monotonic() + 30  # the ClickHouse sink stores the last transitions within a batch age
        while time.monotonic() < deadline and store.query(resolved_sql).rows[0][0] < len(EXPECTED):
            time.sleep(0.5)
        doc = store.report(minutes / 60, end=end)
        out_dir.mkdir(parents=True, exist_ok=True)
        for fmt, suffix in (("md", "md"), ("html", "html")):
            path = out_dir / f"report.{suffix}"
            path.write_text(render_report(doc, fmt))
            outcome.reports[fmt] = str(path)
        counts = store.query(f"SELECT service, count() AS log_events, countIf(level = 'ERROR') AS errors "
                             f"FROM `{cfg.clickhouse.database}`.logs WHERE ts >= now64() - INTERVAL 10 MINUTE "
                             f"GROUP BY service ORDER BY service")
        store.close()
        say(f"report written: {outcome.reports['md']} and {outcome.reports['html']}")
        for row in counts.rows:
            say(f"  {row[0]:<12} {row[1]:>7} log events {row[2]:>5} errors (last 10 minutes)")
        db = cfg.clickhouse.database
        print("\nExplore the data (the store is embedded, so ask while `tocsin start all` runs, or after it stops):")
        print(f"  tocsin --config {config_path} query \"SELECT rule, labels['service'] AS service, state, severity, "
              f"ts FROM {db}.alerts ORDER BY ts\"")
        print(f"  tocsin --config {config_path} query \"SELECT service, level, count() FROM {db}.logs "
              f"GROUP BY service, level ORDER BY service, level\"")
        print(f"  tocsin --config {config_path} report --hours 1 --format md\n")
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as exc:
        say(f"demo failed: {type(exc).__name__}: {exc}")
    finally:
        stop.set()
        for p in shop:
            p.terminate()
        for p in shop:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if started_services:
            for rec, how in supervisor.stop(["all"]):
                say(f"stopped {rec.name} (pid {rec.pid}: {how})")
        if broker == "started" and not keep_broker:
            localkafka.down()
            say("stopped the local Kafka broker the demo started")
        elif broker != "external":
            say("the local Kafka broker keeps running (about 700 MB): `tocsin kafka down` stops it")
    state = outcome.expected_state()
    for what, s in state.items():
        mark = "ok " if s["fired_at"] and s["resolved_at"] else "MISSING"
        say(f"{mark} {what}: {s['severity'] or '-'} fired {s['fired_at'] or '-'}, resolved {s['resolved_at'] or '-'}")
    say(f"{len(outcome.notifications)} webhook notifications received")
    if json_summary:
        json_summary.parent.mkdir(parents=True, exist_ok=True)
        json_summary.write_text(json.dumps({
            "ok": outcome.ok(), "incidents": state, "incident_window": {k: iso(v) for k, v in outcome.incident.items()},
            "transitions": outcome.transitions, "notifications": len(outcome.notifications),
            "reports": outcome.reports,
        }, indent=2, default=str))
    return 0 if outcome.ok() else 1
