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
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.sinks.notify.support import alert_event, produce_alerts, record, resolved_of, wait_until
from tests.sinks.notify.test_restart import _start, _stop, _write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SERVICES = [f"svc-{i:02d}" for i in range(40)]


@pytest.mark.xfail(reason="open: after the join and the SIGKILL some (alert, status) pairs were never delivered "
                          "within 180 s (no crash, no duplicate seen); cause not yet found", strict=False)
def test_members_join_and_die_each_transition_notified_once(kafka_bootstrap, httpserver, tmp_path):
    import yaml

    hook = record(httpserver, "/hook")
    config, cfg = _write_config(tmp_path, kafka_bootstrap, httpserver.url_for("/hook"))
    data = yaml.safe_load(config.read_text())
    data["notify"].pop("group_instance_id")
    data["notify"]["commit_interval_s"] = 0.2
    data["notify"]["receivers"][0].update(rate_limit_per_s=200, rate_limit_burst=50)
    procs = {}

    def start(name: str):
        d = {**data, "clickhouse": {**data["clickhouse"], "url": f"chdb://{tmp_path / ('chdb-' + name)}"}}
        path = tmp_path / f"tocsin-{name}.yaml"
        path.write_text(yaml.safe_dump(d))
        procs[name] = _start(path, tmp_path, name)

    def seen() -> Counter:
        return Counter((a["fingerprint"], a["status"]) for b in hook.bodies() for a in b["alerts"])

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
        produce_alerts(cfg, [resolved_of(ev) for ev in firing])
        wait_until(lambda: set(seen()) >= {(ev["fingerprint"], s) for ev in firing
                                                   for s in ("firing", "resolved")},
                   timeout_s=180, interval_s=0.2, what="every firing and resolve delivered")
        time.sleep(2.0)  # anything sent twice would arrive by now
        for name in ("a", "c"):
            assert procs[name].poll() is None, (tmp_path / f"sink-{name}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            _stop(p)
    for name in ("a", "c"):
        text = (tmp_path / f"sink-{name}.log").read_text()
        assert "Traceback" not in text and "service stopped with an error" not in text, text[-3000:]
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
