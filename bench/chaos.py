"""The chaos run: the whole pipeline under load while its parts are SIGKILLed at random, then the guarantees checked.

``python -m bench chaos --minutes N`` (``--quick``: about 3 minutes, for CI).
On a broker of its own (``tocsin.core.localkafka``) and an embedded ClickHouse
store it runs, each as its own process: two processors in one consumer group,
``sink-clickhouse`` (the store owner), ``sink-notify`` (its own store for its
notification log: chdb allows one process per store), the agent (shipping the
simulated shop's logs and a file of known lines that is rotated by rename and
by copytruncate) and two simulated shop services (``tocsin.app.demo.shop``)
whose modes switch between normal and errors so alerts fire and resolve. A
webhook receiver in this process records every notification.

During the chaos phase it SIGKILLs, at random, a processor, a sink, the agent
or the broker and starts it again after ``RESTART_S`` (as systemd's
``Restart=always`` would), and makes ClickHouse inserts fail for a while
(``sinks/clickhouse/ingest.py``'s ``FaultSwitch``). Then it lets the pipeline
settle and prints a table:

* lines written against rows in ClickHouse (exactly once by event_id), and the
  ``log_counts_1m`` rollup against the rows;
* alert transitions against a fault-free reference: the same recorded input
  (every record of the input topics, in partition order by append time)
  replayed through the processor's ``Engine``; same fire and resolve instants
  within one evaluation step;
* notifications per (transition, receiver) at the receiver: exactly once, but
  for the documented window between a receiver's 200 and the notification
  log's insert (a SIGKILL of ``sink-notify`` there repeats that one), counted;
* false absence alerts, events counted late, kills per component, peak RSS.

It prints numbers and never fails on a time; it exits non-zero only if the
harness crashes or, with ``--strict``, if a guarantee is broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESTART_S = 1.0  # systemd's default RestartSec is 100 ms; a second keeps a kill loop readable in the logs
TOKEN = "chaos-" + "t" * 26
SHOPS = ("checkout", "catalog")
KNOWN_SERVICE = "chaos-known"
LINE_RATE_PER_S = 40
FAULT_S = 12.0  # how long ClickHouse inserts fail per fault
KILLABLE = ("processor-1", "processor-2", "sink-clickhouse", "sink-notify", "agent", "broker")
EVAL_S = 1.0
RULES = """\
# Short windows so alerts fire and resolve within a chaos run (like processors/rules/demo.yaml).
rules:
  - name: error_rate
    source: logs
    filter: {level: [ERROR, CRITICAL]}
    aggregate: rate_per_min
    window: 30s
    group_by: [service]
    warning: 5
    for: 0s
    resolve_after: 10s
    labels: {category: errors}
  - name: tocsin_component_silent
    kind: absence
    source: metrics
    filter: {name: tocsin_heartbeat}
    group_by: [service, host, component]
    absent_for: 60s
    severity: critical
    labels: {category: availability}
  - name: shop_silent
    kind: absence
    source: metrics
    filter: {name: api_response_time}
    group_by: [service]
    absent_for: 60s
    severity: critical
    labels: {category: availability}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the processes


@dataclass
class Proc:
    """One supervised process: started again ``RESTART_S`` after it dies, killed or not."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    kills: int = 0
    crashes: int = 0  # ended without being killed by the harness
    starts: int = 0
    peak_rss: int = 0
    expected_down: bool = False
    down_since: float | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        self.expected_down, self.down_since = False, None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen and self.popen.poll() is None else None

    def kill(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.expected_down = True
            self.kills += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.expected_down = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


class Broker:
    """The local broker, killed with SIGKILL and started again on the same port and data."""

    name = "broker"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.state: Any = None
        self.kills = self.crashes = 0
        self.starts = 0
        self.peak_rss = 0
        self.expected_down = False
        self.down_since: float | None = None

    def start(self) -> None:
        from tocsin.core import localkafka

        port = self.state.port if self.state else None
        self.state = localkafka.up(port=port, data_dir=self.data_dir, owner_pid=os.getpid())
        self.starts += 1
        self.expected_down, self.down_since = False, None

    @property
    def pid(self) -> int | None:
        from tocsin.core.localkafka import _pid_alive

        return self.state.pid if self.state and _pid_alive(self.state.pid) else None

    def kill(self) -> None:
        if self.pid:
            self.expected_down = True
            self.kills += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.state.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.pid and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        from tocsin.core import localkafka

        self.expected_down = True
        localkafka.down(self.data_dir)


class Supervisor(threading.Thread):
    """systemd for the run: restarts whatever died, samples RSS, polls the processors' late counters."""

    def __init__(self, units: dict[str, Any], api_urls: dict[str, str]) -> None:
        super().__init__(name="chaos-supervisor", daemon=True)
        self.units, self.api_urls = units, api_urls
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.late: dict[tuple[str, int], float] = {}  # (processor, pid) -> its last late count
        self.downtime: dict[str, float] = {}  # longest time from death to started again, per unit

    def run(self) -> None:
        import psutil
        import requests

        while not self.stop_event.wait(0.5):
            due = []
            with self.lock:
                for unit in self.units.values():
                    pid = unit.pid
                    if pid is None:
                        if unit.down_since is None:
                            unit.down_since = time.monotonic()
                            if not unit.expected_down:
                                unit.crashes += 1
                        if time.monotonic() - unit.down_since >= RESTART_S:
                            due.append(unit)
                        continue
                    with contextlib.suppress(psutil.Error):
                        p = psutil.Process(pid)
                        rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                        unit.peak_rss = max(unit.peak_rss, rss)
            for unit in due:  # outside the lock: a broker start takes seconds, kills must not wait for it
                down_since = unit.down_since or time.monotonic()
                try:
                    unit.start()
                except Exception as exc:  # the broker may refuse a start; try again next turn
                    print(f"chaos: starting {unit.name} failed: {exc}", file=sys.stderr)
                    unit.down_since = down_since
                    continue
                self.downtime[unit.name] = max(self.downtime.get(unit.name, 0.0), time.monotonic() - down_since)
            for name, url in self.api_urls.items():
                unit = self.units[name]
                with contextlib.suppress(requests.RequestException, ValueError):
                    text = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                        timeout=2).text
                    m = re.search(r"^tocsin_processor_events_late_total (\S+)$", text, re.M)
                    if m and unit.pid:
                        self.late[(name, unit.pid)] = float(m.group(1))


# ----------------------------------------------------------------------------- load: the shop and known lines


class KnownLines(threading.Thread):
    """Writes numbered lines at a steady rate; rotates by rename at 1/3 of the run, by copytruncate at 2/3."""

    def __init__(self, path: Path, duration_s: float) -> None:
        super().__init__(name="known-lines", daemon=True)
        self.path, self.duration_s = path, duration_s
        self.written = 0
        self.rotations: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        out = open(self.path, "a", buffering=1)  # noqa: SIM115 - reopened by the rename rotation below
        try:
            while not self.stop_event.is_set() and time.monotonic() - began < self.duration_s:
                elapsed = time.monotonic() - began
                if not self.rotations and elapsed > self.duration_s / 3:
                    out.close()
                    self.path.rename(self.path.with_name(self.path.name + ".1"))
                    out = open(self.path, "a", buffering=1)  # noqa: SIM115 - reopened by the rename rotation below
                    self.rotations.append("rename")
                elif len(self.rotations) == 1 and elapsed > 2 * self.duration_s / 3:
                    shutil.copyfile(self.path, self.path.with_name(self.path.name + ".2"))
                    out.truncate(0)
                    out.seek(0)
                    self.rotations.append("copytruncate")
                # A second of lines at a time, as an application would flush them.
                for _ in range(LINE_RATE_PER_S // 10):
                    # A leading ISO timestamp, as real logs have: a line's event time is when it was written.
                    stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
                    out.write(f"{stamp} chaos line seq={self.written:07d} payload={'x' * 40}\n")
                    self.written += 1
                self.stop_event.wait(0.1)
        finally:
            out.close()


class Receiver:
    """The webhook receiver: every POST body, kept."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock, contextlib.suppress(ValueError):
                    receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    minutes: float
    workdir: Path
    seed: int
    cfg: Any = None
    notify_cfg: Any = None
    figures: dict[str, Any] = field(default_factory=dict)


def _configs(wd: Path, bootstrap: str, hook_url: str) -> tuple[Path, Path]:
    from tocsin.app.config import load_config

    (wd / "rules.yaml").write_text(RULES)
    base = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": {"partitions": 3}},
        "clickhouse": {"url": f"chdb://{wd / 'store'}", "database": "chaos"},
        "api": {"token": TOKEN, "http_addr": f"127.0.0.1:{_free_port()}"},  # each processor: TOCSIN_HTTP_ADDR
        "log_dir": str(wd / "shop-logs"),
        "processor": {"rules_file": str(wd / "rules.yaml"), "heartbeat_interval_s": 5.0,
                      "start_without_commit": "earliest", "eval_interval_s": EVAL_S},
        "agents": {
            "service": "chaos-host",
            "logship": {"inputs": [*({"paths": [str(wd / "shop-logs" / s / "application.log")], "service": s,
                                      "parser": "json"} for s in SHOPS),
                                   # The rotated names too: a rename's tail and the copy of a copytruncate
                                   # keep their identity (fingerprint), so nothing is shipped twice.
                                   {"paths": [str(wd / "known" / "app.log*")], "service": KNOWN_SERVICE,
                                    "parser": "text"}],
                        "state_file": str(wd / "logship.state"), "read_from": "beginning"},
            "metrics": {"interval_s": 5},
            "health": {"enabled": False},  # its ClickHouse probe would open the embedded store: one owner only
        },
        "notify": {"receivers": [{"type": "webhook", "name": "hook", "url": hook_url, "backoff_initial_s": 0.2}],
                   "route": {"receiver": "hook", "group_by": ["service"]},
                   "group_wait_s": 0.5, "group_interval_s": 1, "repeat_interval_s": 86_400, "inhibit_rules": []},
        "summary": {"enabled": False},
    }
    main = wd / "tocsin.yaml"
    main.write_text(yaml.safe_dump(base))
    notify = wd / "notify.yaml"  # the notify sink's notification log lives in a store of its own
    notify.write_text(yaml.safe_dump({**base, "clickhouse": {"url": f"chdb://{wd / 'notify-store'}",
                                                               "database": "chaos"}}))
    load_config(main, env={})
    load_config(notify, env={})
    return main, notify


def _env(wd: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL",
                                                            "TOCSIN_HTTP_ADDR", "TOCSIN_CONFIG")}
    return {**env, "TOCSIN_HOME": str(wd / "home"), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


def _read(cfg: Any, topic: str) -> list[tuple[Any, Any]]:
    from tocsin.core import kafka as kafka_api

    out: list[tuple[Any, Any]] = []
    kafka_api.read_topic(cfg.kafka, topic, lambda tp, rec: out.append((tp, rec)), timeout_s=120, missing_ok=True)
    return out


def reference_transitions(cfg: Any, rules_file: Path) -> tuple[list[dict[str, Any]], int, Counter[str]]:
    """The fault-free run: the recorded input replayed once, in partition order, through the processor's Engine.

    Records of all partitions are merged by append time (the broker's timestamp
    is when a fault-free processor would have seen them), the wall clock is
    that time, and quiet partitions get the processor's idle tick.
    """
    from tocsin.processors.engine import Engine
    from tocsin.processors.rules import load_rules
    from tocsin.schemas.codec import default_codec

    p = cfg.processor
    engine = Engine(load_rules(rules_file), eval_interval_us=int(p.eval_interval_s * 1e6),
                    grace_us=int(p.grace_s * 1e6), max_future_us=int(p.max_future_s * 1e6),
                    max_catchup_steps=p.max_catchup_steps, idle_evict_us=int(p.idle_series_evict_s * 1e6),
                    wall=lambda: wall[0])
    wall = [0]
    codec = default_codec()
    t = cfg.kafka.topics
    records: list[tuple[int, str, Any, Any]] = []
    for source, topic in (("logs", t.logs), ("metrics", t.metrics), ("health", t.health)):
        for tp, rec in _read(cfg, topic):
            records.append((rec.timestamp, source, tp, rec))
    records.sort(key=lambda r: (r[0], r[2].topic, r[2].partition, r[3].offset))
    late_by: Counter[str] = Counter()  # late in the recorded order, per source:service
    parts: dict[tuple[str, int], Any] = {}
    out: list[dict[str, Any]] = []
    next_tick = 0
    tick_us = int(p.tick_interval_s * 1e6)
    for ts_ms, source, tp, rec in records:
        wall[0] = ts_ms * 1000
        while next_tick and next_tick <= wall[0]:
            for ps in parts.values():
                engine.advance_idle(ps, next_tick)
            next_tick += tick_us
        if not next_tick:
            next_tick = wall[0] + tick_us
        key = (tp.topic, tp.partition)
        ps = parts.get(key) or parts.setdefault(key, engine.add_partition(tp.topic, tp.partition, source))
        with contextlib.suppress(Exception):
            _name, events = codec.decode_events(rec.value)
            for ev in events:
                if engine.check(source, ev, p.future_policy, wall[0]) is None:
                    before = engine.counters.late
                    engine.ingest(ps, source, ev)
                    if engine.counters.late != before:
                        late_by[f"{source}:{ev['service']}"] += 1
        out += [x.as_record() for x in engine.take_transitions()]
    # Then the settle phase's quiet: ticks up to the end of the input, so resolves are seen.
    end = wall[0] + 60_000_000
    while next_tick and next_tick <= end:
        for ps in parts.values():
            engine.advance_idle(ps, next_tick)
        next_tick += tick_us
    out += [x.as_record() for x in engine.take_transitions()]
    return out, engine.counters.late, late_by


def compare_transitions(real: list[dict[str, Any]], ref: list[dict[str, Any]], step_us: int,
                        until_us: int) -> dict[str, Any]:
    """Per fingerprint, the (state, severity) sequence of the run against the reference, instants within a step.

    Only transitions up to ``until_us`` (the end of the input) count on both sides.
    """
    def by_fp(xs: list[dict[str, Any]]) -> dict[str, list[tuple[str, str, int]]]:
        d: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for x in sorted(xs, key=lambda x: x["ts"]):
            if x["ts"] <= until_us:
                d[x["fingerprint"]].append((x["state"], x["severity"], x["ts"]))
        return d

    a, b = by_fp(real), by_fp(ref)
    matched = off_time = missing = extra = 0
    examples: list[str] = []
    rule_of = {x["fingerprint"]: x["rule"] for x in real + ref}
    for fp in set(a) | set(b):
        ra = [x for x in a.get(fp, []) if x[0] != "pending"]
        rb = [x for x in b.get(fp, []) if x[0] != "pending"]
        for (sa, va, ta), (sb, vb, tb) in zip(ra, rb, strict=False):
            if (sa, va) != (sb, vb):
                missing += 1
                extra += 1
                examples.append(f"{rule_of[fp]}: {sa}/{va} instead of {sb}/{vb}")
            elif abs(ta - tb) <= step_us:
                matched += 1
            else:
                off_time += 1
                examples.append(f"{rule_of[fp]} {sa}: {(ta - tb) / 1e6:+.1f} s off")
        if len(ra) > len(rb):
            extra += len(ra) - len(rb)
            examples += [f"{rule_of[fp]} {s} extra" for s, _, _ in ra[len(rb):]]
        elif len(rb) > len(ra):
            missing += len(rb) - len(ra)
            examples += [f"{rule_of[fp]} {s} missing" for s, _, _ in rb[len(ra):]]
    return {"matched": matched, "off_by_more_than_a_step": off_time, "missing": missing, "extra": extra,
            "examples": examples[:8]}


def count_notifications(bodies: list[dict[str, Any]], transitions: list[dict[str, Any]]) -> dict[str, Any]:
    """Notifications per transition at the receiver: (fingerprint, start, status, severity) counted."""
    from tocsin.core.events import iso

    def key_of_alert(a: dict[str, Any]) -> tuple[str, str, str, str]:
        sev = a["labels"].get("severity", "") if a["status"] == "firing" else ""
        return (a["fingerprint"], a["startsAt"][:19], a["status"], sev)

    got = Counter(key_of_alert(a) for b in bodies for a in b.get("alerts", []))
    expected = set()
    for x in transitions:
        if x["state"] in ("firing", "resolved"):
            sev = x["severity"] if x["state"] == "firing" else ""
            expected.add((x["fingerprint"], iso(x["started_at"])[:19], x["state"], sev))
    dup = {k: n for k, n in got.items() if n > 1}
    return {"expected": len(expected), "delivered": sum(1 for k in expected if k in got),
            "missing": len(expected - set(got)), "duplicates": sum(n - 1 for n in dup.values()),
            "unexpected": len(set(got) - expected), "requests": len(bodies),
            "missing_which": sorted(expected - set(got)), "duplicated_which": sorted(dup)}


def store_figures(cfg: Any) -> dict[str, Any]:
    """Rows in ClickHouse for the known lines, exactly once by event_id, and the rollup against the rows."""
    from tocsin.core.clickhouse import connect

    c = connect(cfg.clickhouse)
    db = cfg.clickhouse.database
    q = f"service = '{KNOWN_SERVICE}'"
    raw, ids, lines = c.query(
        f"SELECT count(), uniqExact(event_id), uniqExact(extract(message, 'seq=([0-9]+)')) "
        f"FROM `{db}`.logs WHERE {q}").result_rows[0]
    final = c.query(f"SELECT count() FROM `{db}`.logs FINAL WHERE {q}").result_rows[0][0]
    rollup = c.query(f"SELECT uniqExactMerge(events) FROM `{db}`.log_counts_1m WHERE {q}").result_rows[0][0]
    all_final = c.query(f"SELECT count() FROM `{db}`.logs FINAL").result_rows[0][0]
    all_rollup = c.query(f"SELECT uniqExactMerge(events) FROM `{db}`.log_counts_1m").result_rows[0][0]
    alerts = c.query(f"SELECT count(), uniqExact(event_id) FROM `{db}`.alerts").result_rows[0]
    return {"rows_raw": int(raw), "event_ids": int(ids), "lines": int(lines), "rows_final": int(final),
            "rollup": int(rollup or 0), "all_rows_final": int(all_final), "all_rollup": int(all_rollup or 0),
            "alert_rows": int(alerts[0]), "alert_event_ids": int(alerts[1])}


def chaos(run: Run, strict: bool) -> int:
    from tocsin.app.config import load_config
    from tocsin.app.status import consumer_lag
    from tocsin.core.kafka import create_topics

    rnd = random.Random(run.seed)
    wd = run.workdir
    for d in ("known", "shop-logs", "home", "logs"):
        (wd / d).mkdir(parents=True, exist_ok=True)
    total_s = run.minutes * 60
    chaos_s = max(45.0, total_s * 0.55)
    settle_cap_s = max(120.0, total_s * 0.35)  # a broker SIGKILLed late in the run takes about a minute to return
    broker = Broker(wd / "kafka")
    broker.start()
    receiver = Receiver()
    main_cfg, notify_cfg = _configs(wd, broker.state.bootstrap, receiver.url)
    cfg = load_config(main_cfg, env={})
    create_topics(cfg.kafka)
    py = sys.executable
    api = {f"processor-{i}": f"127.0.0.1:{_free_port()}" for i in (1, 2)}
    fault_flag = wd / "clickhouse-fault"
    units: dict[str, Any] = {"broker": broker}

    def tocsin(name: str, service: str, config: Path, **env: str) -> Proc:
        return Proc(name, [py, "-m", "tocsin", "-c", str(config), "start", service], _env(wd, **env),
                    wd / "logs" / f"{name}.log")

    for name, addr in api.items():
        units[name] = tocsin(name, "processor", main_cfg, TOCSIN_HTTP_ADDR=addr)
    units["sink-clickhouse"] = tocsin("sink-clickhouse", "sink-clickhouse", main_cfg,
                                      TOCSIN_FAULT_CLICKHOUSE_FILE=str(fault_flag))
    units["sink-notify"] = tocsin("sink-notify", "sink-notify", notify_cfg)
    units["agent"] = tocsin("agent", "agent", main_cfg)
    control = wd / "modes.json"
    control.write_text("{}")
    for s in SHOPS:
        units[f"shop-{s}"] = Proc(f"shop-{s}", [py, "-m", "tocsin.app.demo.shop", "--service", s, "--log-dir",
                                                str(wd / "shop-logs" / s), "--control", str(control), "--config",
                                                str(main_cfg)], _env(wd), wd / "logs" / f"shop-{s}.log")
    for name, unit in units.items():
        if name != "broker":
            unit.start()
    sup = Supervisor(units, {n: f"http://{a}" for n, a in api.items()})
    sup.start()
    began = time.monotonic()
    events: list[str] = []

    def say(text: str) -> None:
        line = f"[{time.monotonic() - began:6.1f}s] {text}"
        events.append(line)
        print(line, flush=True)

    try:
        import requests

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if all(requests.get(f"http://{a}/health", timeout=2).status_code == 200 for a in api.values()):
                    break
            time.sleep(1)
        say("pipeline up; chaos begins")
        writer = KnownLines(wd / "known" / "app.log", chaos_s)
        writer.start()
        chaos_end = time.monotonic() + chaos_s
        faults: Counter[str] = Counter()
        schedule: list[str] = []
        next_mode = 0.0
        while time.monotonic() < chaos_end:
            now = time.monotonic()
            if now >= next_mode:  # each shop toggles between errors and normal, out of step
                phase = int((now - began) // 25)
                modes = {s: "errors" if (phase + i) % 3 == 0 else "normal" for i, s in enumerate(SHOPS)}
                control.write_text(json.dumps(modes))
                next_mode = now + 25
            time.sleep(rnd.uniform(5, 11))
            if not schedule:  # every fault once per round, in a random order: a short run still hits each
                schedule = rnd.sample([*KILLABLE, "clickhouse-fault"], len(KILLABLE) + 1)
            what = schedule.pop()
            if what == "clickhouse-fault":
                fault_flag.touch()
                say(f"ClickHouse inserts fail for {FAULT_S:g} s")
                faults["clickhouse-fault"] += 1
                threading.Timer(FAULT_S, lambda: fault_flag.unlink(missing_ok=True)).start()
            else:
                with sup.lock:
                    units[what].kill()
                say(f"SIGKILL {what}")
        writer.stop_event.set()
        writer.join(10)
        control.write_text(json.dumps({s: "normal" for s in SHOPS}))
        fault_flag.unlink(missing_ok=True)
        say(f"chaos over: {writer.written} lines written, rotations {writer.rotations}; settling")
        # Settle: every group caught up and the shops' alerts resolved (window + resolve_after), or the cap.
        settle_end = time.monotonic() + settle_cap_s
        quiet_from = time.monotonic() + 50  # 30 s window + 10 s resolve_after + grace
        lags: dict[str, int | None] = {}
        settled = False
        while time.monotonic() < settle_end:
            with contextlib.suppress(Exception):  # the broker may still be coming back
                lags = consumer_lag(cfg)
            if time.monotonic() >= quiet_from and all(v is not None and v < 50 for v in lags.values()):
                break
            time.sleep(3)
        settled = all(v is not None and v < 50 for v in lags.values())
        time.sleep(5)  # the last notifications' group_wait and the last inserts' flush
        say(f"settled: lag per group {lags}")
        input_end_us = time.time_ns() // 1000
    finally:
        sup.stop_event.set()
        sup.join(10)
        # The processors first: stopping, they publish their last transitions; the notify sink then gets the
        # time to route them (its lag 0, then group_wait) before it stops, or they would count as missing.
        for name in ("processor-1", "processor-2"):
            units[name].stop()
        drain_end = time.monotonic() + 60
        while time.monotonic() < drain_end:
            with contextlib.suppress(Exception):
                if consumer_lag(cfg).get("tocsin-sink-notify") == 0:
                    break
            time.sleep(1)
        time.sleep(3)
        for name, unit in units.items():
            if name != "broker":
                unit.stop()
    try:
        real = [ev for _tp, rec in _read(cfg, cfg.kafka.topics.alerts) if rec.value
                for ev in [_decode_alert(rec.value)] if ev]
        ref, ref_late, ref_late_by = reference_transitions(cfg, wd / "rules.yaml")
    finally:
        broker.stop()
        receiver.close()
    store = store_figures(cfg)
    step_us = int(EVAL_S * 1e6)
    cmp = compare_transitions(real, ref, step_us, input_end_us)
    dup_transitions = len(real) - len({(x["alert_id"], x["state"], x["severity"]) for x in real})
    notes = count_notifications(receiver.bodies, real)
    absence = {"tocsin_component_silent", "shop_silent"}
    false_absence = (sum(1 for x in real if x["rule"] in absence and x["state"] == "firing")
                     - sum(1 for x in ref if x["rule"] in absence and x["state"] == "firing"))
    late_real = sum(sup.late.values())
    g = {
        "settled_before_the_cap": settled, "lag_at_end": lags,
        "lines_written": writer.written, "lines_in_clickhouse": store["lines"], "rows_raw": store["rows_raw"],
        "event_ids": store["event_ids"], "rows_final": store["rows_final"], "rollup_known": store["rollup"],
        "all_rows_final": store["all_rows_final"], "all_rollup": store["all_rollup"],
        "transitions_run": len(real), "transitions_reference": len(ref), "transitions_duplicated": dup_transitions,
        **{f"transitions_{k}": v for k, v in cmp.items() if k != "examples"},
        **{f"notifications_{k}": v for k, v in notes.items() if not k.endswith("_which")},
        "false_absence_alerts": max(0, false_absence), "late_events_run": late_real,
        "late_events_reference": ref_late, "late_because_of_faults": max(0.0, late_real - ref_late),
        **{f"late_events.{n}[{pid}]": v for (n, pid), v in sorted(sup.late.items()) if v},
        "clickhouse_faults": faults["clickhouse-fault"],
        **{f"kills.{n}": u.kills for n, u in units.items() if n in KILLABLE},
        **{f"crashes.{n}": u.crashes for n, u in units.items()},
        **{f"peak_rss_mib.{n}": round(u.peak_rss / 2**20, 1) for n, u in units.items()},
        **{f"longest_down_s.{n}": round(v, 1) for n, v in sup.downtime.items()},
    }
    broken = {
        "every line once in ClickHouse": store["lines"] == writer.written and store["rows_final"] == writer.written,
        "one row per event_id": store["event_ids"] == store["lines"],
        "rollup equals rows": store["rollup"] == store["rows_final"] and store["all_rollup"] == store["all_rows_final"],
        "transitions as fault-free": not (cmp["missing"] or cmp["extra"] or cmp["off_by_more_than_a_step"]),
        "no transition twice": dup_transitions == 0,
        "notifications once": not (notes["missing"] or notes["duplicates"]),
        "no false absence alert": false_absence <= 0,
        "no event late because of a fault": late_real <= ref_late,
    }
    run.figures = {"figures": g, "guarantees": broken, "examples": cmp["examples"], "events": events,
                   "notifications_missing": [list(k) for k in notes["missing_which"]],
                   "notifications_duplicated": [list(k) for k in notes["duplicated_which"]],
                   "late_in_reference_by_service": dict(ref_late_by), "workdir": str(wd)}
    print_table(g, broken, cmp["examples"])
    return 1 if strict and not all(broken.values()) else 0


def _decode_alert(value: bytes) -> dict[str, Any] | None:
    from tocsin.core.events import ALERT_EVENT
    from tocsin.schemas.codec import default_codec

    try:
        name, ev = default_codec().decode(value)
    except Exception:
        return None
    return ev if name == ALERT_EVENT else None


def print_table(g: dict[str, Any], guarantees: dict[str, bool], examples: list[str]) -> None:
    width = max(len(k) for k in g)
    print("\n== chaos: figures")
    for k, v in g.items():
        print(f"  {k:<{width}}  {v}")
    print("\n== chaos: guarantees")
    for k, ok in guarantees.items():
        print(f"  {'held  ' if ok else 'BROKEN'}  {k}")
    if examples:
        print("  transition differences (first few): " + "; ".join(examples))


def main(minutes: float | None, quick: bool, strict: bool = False, json_path: Path | None = None,
         seed: int | None = None, keep: bool = False) -> int:
    minutes = minutes or (3.0 if quick else 10.0)
    seed = seed if seed is not None else random.randrange(1 << 30)
    wd = Path(tempfile.mkdtemp(prefix="tocsin-chaos-"))
    print(f"chaos: {minutes:g} minutes, seed {seed}, workdir {wd}", flush=True)
    run = Run(minutes, wd, seed)
    try:
        rc = chaos(run, strict)
    finally:
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"minutes": minutes, "seed": seed, **run.figures}, indent=2))
        if not keep:
            shutil.rmtree(wd, ignore_errors=True)
    return rc
