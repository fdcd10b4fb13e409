"""Rebalances of the notify group: two ``tocsin start sink-notify`` members, a third joins, one is SIGKILLed.

kafka-python 3 runs rebalance listeners on its IO thread; the listener used to
commit there, which raises, and the sink (and with it ``tocsin start all``)
stopped. Now the revocation listener awaits the deliveries in flight on the
revoked partitions and commits with ``commit_async``; the loop releases what it
had not decided for them. Each member has its own embedded store (so its own
notification log): a graceful hand-over must send nothing twice by itself.
A SIGKILL can repeat what the killed member delivered after its last commit
(``commit_interval_s``) since its successor cannot see its log: that window
is the bound the test asserts.

An alert that fires and resolves inside one group wait is announced once, as
resolved (the notification covers both transitions, like Alertmanager's
grouping): so the test lets every firing arrive before it resolves them, or
it would wait for a firing notification that by design never comes.

Inhibition across members: the alerts topic is keyed by fingerprint, so one
service's critical and warning alerts may sit on partitions of different
members; every member reads the whole changelog for inhibition sources.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka.partitioner.default import murmur2

from tests.sinks.notify.support import alert_event, produce_alerts, record, resolved_of, wait_until
from tests.sinks.notify.test_restart import _start, _stop, _write_config
from tocsin.core import kafka as kafka_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SERVICES = [f"svc-{i:02d}" for i in range(40)]


class Members:
    """``tocsin start sink-notify`` processes of one group, each with its own embedded store."""

    def __init__(self, tmp_path: Path, data: dict[str, Any]) -> None:
        self.tmp_path, self.data = tmp_path, data
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        d = {**self.data, "clickhouse": {**self.data["clickhouse"],
                                         "url": f"chdb://{self.tmp_path / ('chdb-' + name)}"}}
        path = self.tmp_path / f"tocsin-{name}.yaml"
        path.write_text(yaml.safe_dump(d))
        self.procs[name] = _start(path, self.tmp_path, name)

    def stop(self) -> None:
        for p in self.procs.values():
            _stop(p)

    def check_clean(self, names: tuple[str, ...]) -> None:
        for name in names:
            text = (self.tmp_path / f"sink-{name}.log").read_text()
            assert "Traceback" not in text and "service stopped with an error" not in text, text[-3000:]


def _group_config(tmp_path: Path, kafka_bootstrap: str, url: str) -> tuple[dict[str, Any], Any]:
    config, cfg = _write_config(tmp_path, kafka_bootstrap, url)
    data = yaml.safe_load(config.read_text())
    data["notify"].pop("group_instance_id")
    data["notify"]["commit_interval_s"] = 0.2
    data["notify"]["receivers"][0].update(rate_limit_per_s=200, rate_limit_burst=50)
    return data, cfg


def _seen(hook) -> Counter:
    return Counter((a["fingerprint"], a["status"]) for b in hook.bodies() for a in b["alerts"])


def test_members_join_and_die_each_transition_notified_once(kafka_bootstrap, httpserver, tmp_path):
    hook = record(httpserver, "/hook")
    data, cfg = _group_config(tmp_path, kafka_bootstrap, httpserver.url_for("/hook"))
    members = Members(tmp_path, data)
    procs, start = members.procs, members.start

    def seen() -> Counter:
        return _seen(hook)

    firing = [alert_event("error_rate", s, severity="warning") for s in SERVICES]
    try:
        start("a")
        start("b")
        for i in range(0, 20):
            produce_alerts(cfg, [firing[i]])
            time.sleep(0.2)
        start("c")  # a graceful rebalance while alerts arrive
        for i in range(20, 30):
            produce_alerts(cfg, [firing[i]])
            time.sleep(0.2)
        wait_until(lambda: sum(1 for k in seen() if k[1] == "firing") >= 30, timeout_s=120, interval_s=0.2,
                   what="the first 30 firing alerts delivered")
        killed_at = time.monotonic()
        procs["b"].send_signal(signal.SIGKILL)
        procs["b"].wait(10)
        produce_alerts(cfg, firing[30:])
        # Into the survivors, now owners of the killed member's partitions (see the module docstring).
        wait_until(lambda: {(ev["fingerprint"], "firing") for ev in firing} <= set(seen()), timeout_s=120,
                   interval_s=0.2, what="every firing alert delivered after the SIGKILL")
        produce_alerts(cfg, [resolved_of(ev) for ev in firing])
        wait_until(lambda: set(seen()) >= {(ev["fingerprint"], s) for ev in firing
                                                   for s in ("firing", "resolved")},
                   timeout_s=180, interval_s=0.2, what="every firing and resolve delivered")
        time.sleep(2.0)  # anything sent twice would arrive by now
        for name in ("a", "c"):
            assert procs[name].poll() is None, (tmp_path / f"sink-{name}.log").read_text()[-3000:]
    finally:
        members.stop()
    members.check_clean(("a", "c"))
    dup = {k: n for k, n in seen().items() if n > 1}
    # Only the killed member's deliveries after its last commit may come again (its log died with it):
    # firing alerts it announced within commit_interval_s (+ the kill's latency) before the kill.
    with hook.lock:
        arrivals = {}
        for r in hook.requests:
            for a in r.json()["alerts"]:
                arrivals.setdefault((a["fingerprint"], a["status"]), []).append(r.at)
    late = {k for k in dup if arrivals[k][0] < killed_at - 2.0}
    print(f"\nnotify rebalance: {len(seen())} (alert, status) pairs, {len(dup)} repeated after the SIGKILL")
    assert not late, f"sent twice outside the kill's window: {late}"


def _partition(fingerprint: str, partitions: int) -> int:
    """kafka-python's default partitioner (the producer keys alerts by fingerprint)."""
    return (murmur2(fingerprint.encode()) & 0x7FFFFFFF) % partitions


def _one_partition_each(cfg: Any, group: str, members: int) -> bool:
    admin = kafka_api.admin(cfg.kafka)
    try:
        g = admin.describe_groups([group])[group]
    finally:
        admin.close()
    assigned = [m["member_assignment"] for m in g.get("members", []) if m.get("member_assignment")]
    return g.get("group_state") == "Stable" and len(assigned) == members


def test_critical_on_one_member_inhibits_warning_on_another(kafka_bootstrap, httpserver, tmp_path):
    """The critical is consumed by one member, the warning of the same service by another: muted there
    while the critical fires, announced once it resolved (so the mute came from the other's partition)."""
    hook = record(httpserver, "/hook")
    data, cfg = _group_config(tmp_path, kafka_bootstrap, httpserver.url_for("/hook"))
    data["notify"]["inhibit_rules"] = [{"source_matchers": ["severity=critical"],
                                        "target_matchers": ["severity=warning"], "equal": ["service"]}]
    n = cfg.kafka.topics.partitions
    critical = alert_event("error_rate", "shop", severity="critical")
    rules = (f"rule_{i}" for i in range(1000))
    warning = next(w for w in (alert_event(r, "shop", severity="warning") for r in rules)
                   if _partition(w["fingerprint"], n) != _partition(critical["fingerprint"], n))
    # Not inhibited (another service), on the warning's partition: once it arrives, the warning's
    # group (earlier on that partition, the same group wait) has been decided.
    marker = next(m for m in (alert_event("latency", f"other-{i}", severity="warning") for i in range(1000))
                  if _partition(m["fingerprint"], n) == _partition(warning["fingerprint"], n))
    members = Members(tmp_path, data)
    try:
        for name in ("a", "b", "c")[:n]:
            members.start(name)
        # One partition per member: the critical's and the warning's owners differ.
        wait_until(lambda: _one_partition_each(cfg, data["notify"]["group_id"], n), timeout_s=120, interval_s=0.5,
                   what=f"{n} members with one partition each")
        produce_alerts(cfg, [critical])
        wait_until(lambda: (critical["fingerprint"], "firing") in _seen(hook), timeout_s=60,
                   what="the critical delivered")
        produce_alerts(cfg, [warning, marker])
        wait_until(lambda: (marker["fingerprint"], "firing") in _seen(hook), timeout_s=60, what="the marker delivered")
        assert (warning["fingerprint"], "firing") not in _seen(hook), "the warning was not inhibited"
        produce_alerts(cfg, [resolved_of(critical)])
        wait_until(lambda: (warning["fingerprint"], "firing") in _seen(hook), timeout_s=60,
                   what="the warning announced once the critical resolved")
        assert _seen(hook)[(critical["fingerprint"], "resolved")] == 1
        for name, p in members.procs.items():
            assert p.poll() is None, (tmp_path / f"sink-{name}.log").read_text()[-3000:]
    finally:
        members.stop()
    members.check_clean(tuple(members.procs))
