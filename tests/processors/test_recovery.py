"""Fault tests with real processes: SIGKILL and restart, and scale-out with a member killed mid-run.

Both replay a scripted incident stream in real time. What must come out is
known in advance: the pure engine run over the same script
(``expected_transitions``), each (alert_id, state, severity) exactly once.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from tests.kafkautil import wait_for
from tocsin.core import kafka as kafka_api
from tocsin.core.events import now_us
from tocsin.processors.service import partition_for

from .kafkaproc import (
    ProcessorProcess,
    alert_events,
    expected_transitions,
    identities,
    incident_script,
    processor_config,
    stamp,
    start_paced_producer,
    write_config,
)


def _logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp.glob("*.log")))


def _settled(cfgs, expected_n: int) -> bool:
    return all(len(alert_events(c, idle_s=0.5)) >= expected_n for c in cfgs)


def _settle(cfgs, expected_n: int, timeout_s: float = 90) -> None:
    """Waits for the expected count (the assertions after it say what is missing if it never comes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not _settled(cfgs, expected_n):
        time.sleep(0.5)


def _diff(expected: list, got: list) -> str:
    want, have = collections.Counter(expected), collections.Counter(got)
    return f"missing {sorted((want - have).elements())}; unexpected {sorted((have - want).elements())}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_before_during_and_after_firing_changes_no_transition(kafka_bootstrap, clickhouse_url, tmp_path):
    services = [f"svc{i}" for i in range(4)]
    clean = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, grace_s=3.0)
    crash = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, grace_s=3.0)
    a = ProcessorProcess(write_config(clean, tmp_path / "clean.yaml"), tmp_path / "clean.log").start()
    b = ProcessorProcess(write_config(crash, tmp_path / "crash.yaml"), tmp_path / "crash-0.log").start()
    procs = [a, b]
    try:
        time.sleep(8)  # both started and joined their groups
        script = stamp(incident_script(services, duration_s=45), now_us())
        expected = expected_transitions(clean, script)
        start = time.monotonic() + 2  # the producer process starts on time
        producer = start_paced_producer([clean, crash], script, start)
        kills = []
        for i, at in enumerate((2.0, 14.0, 30.0), start=1):  # before, during and after the first firings
            time.sleep(max(0.0, start + at - time.monotonic()))
            b.kill()
            fired = len(alert_events(crash, idle_s=0.3))
            kills.append((at, fired))
            b = ProcessorProcess(tmp_path / "crash.yaml", tmp_path / f"crash-{i}.log").start()
            procs.append(b)
        producer.join(timeout=120)
        assert producer.exitcode == 0
        _settle([clean, crash], len(expected))
        time.sleep(3)  # room for a stray duplicate to show up
        got_clean, got_crash = alert_events(clean), alert_events(crash)
    finally:
        for p in procs:
            p.kill()
    print(f"\nkills at (s, transitions already out): {kills}; expected {len(expected)} transitions")
    assert kills[0][1] == 0 and 0 < kills[1][1] < kills[2][1] < len(expected), kills
    assert identities(got_clean) == expected, _diff(expected, identities(got_clean))
    assert identities(got_crash) == identities(got_clean), _diff(identities(got_clean), identities(got_crash))
    ids = [e["event_id"] for e in got_crash]
    assert len(ids) == len(set(ids)), "a transition was emitted twice"
    assert {e["event_id"] for e in got_crash} == {e["event_id"] for e in got_clean}


def _spread(n: int, partitions: int) -> list[str]:
    """``n`` service names whose keys fill every partition equally (the default partitioner is murmur2)."""
    per, names, k = n // partitions, [], 0
    filled: collections.Counter[int] = collections.Counter()
    while len(names) < n:
        name, k = f"shop-{k:03d}", k + 1
        p = partition_for(name, partitions)
        if filled[p] < per:
            filled[p] += 1
            names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_processes_share_six_partitions_and_survive_losing_one(kafka_bootstrap, clickhouse_url, tmp_path):
    services = _spread(12, 6)
    cfg = processor_config(kafka_bootstrap, clickhouse_url, tmp_path, partitions=6, grace_s=3.0)
    config_file = write_config(cfg, tmp_path / "scale.yaml")
    procs = [ProcessorProcess(config_file, tmp_path / f"p{i}.log").start() for i in range(3)]
    try:
        time.sleep(10)  # all three joined: the group has rebalanced to 2 + 2 + 2 partitions per topic
        script = stamp(incident_script(services, duration_s=36), now_us())
        expected = expected_transitions(cfg, script)
        start = time.monotonic() + 2
        producer = start_paced_producer([cfg], script, start)
        parts = [TopicPartition(t, p) for t in (cfg.kafka.topics.metrics, cfg.kafka.topics.logs) for p in range(6)]
        offsets = kafka_api.consumer(cfg.kafka, group_id=cfg.processor.group_id)  # reads commits, never joins
        try:
            time.sleep(max(0.0, start + 14 - time.monotonic()))
            before = {tp: offsets.committed(tp) or 0 for tp in parts}
            procs[1].kill()
            killed_at = time.monotonic()
            # Taken over = every partition commits progress again (the dead member's ones stall until then).
            wait_for(lambda: all((offsets.committed(tp) or 0) > before[tp] for tp in parts),
                     60, "the survivors to take over", every_s=0.25)
            takeover_s = time.monotonic() - killed_at
        finally:
            offsets.close()
        producer.join(timeout=120)
        assert producer.exitcode == 0
        _settle([cfg], len(expected))
        time.sleep(3)
        got = alert_events(cfg)
    finally:
        for p in procs:
            p.kill()
    print(f"\ntakeover after SIGKILL of 1 of 3 processors: {takeover_s:.1f} s "
          f"(session timeout {cfg.processor.session_timeout_ms / 1000:g} s); {len(expected)} transitions expected")
    assert identities(got) == expected, _diff(expected, identities(got))
    assert {e["labels"]["service"] for e in got} == set(services)
    ids = [e["event_id"] for e in got]
    assert len(ids) == len(set(ids)), "a transition was emitted twice"
