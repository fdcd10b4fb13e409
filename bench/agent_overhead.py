"""CPU cost of the metrics agent: ``tocsin agent metrics`` at its default 10 s interval, measured from outside.

The agent runs as a subprocess publishing to the benchmark's broker; its CPU
time (user + system, from /proc via psutil) is read after a warm-up (imports
and the Kafka connection are a one-off) and again at the end. The per-sample
cost is also measured in-process, with and without watched processes, so the
figure can be projected to other intervals. Target: under 1 % of a core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import psutil

from bench.harness import BenchContext
from tocsin.app.config import KafkaConfig
from tocsin.core import kafka as kafka_api
from tocsin.producers.config import MetricsAgentConfig
from tocsin.producers.metrics import MetricsSampler

DESCRIPTION = "metrics agent CPU at the default 10 s interval (target < 1 % of a core)"
RATIOS: dict[str, tuple[str, str]] = {}
INTERVAL_S = 10.0
WARMUP_S = 4.0


def _sample_cost_ms(cfg: MetricsAgentConfig, n: int) -> float:
    sampler = MetricsSampler(cfg, "bench")
    sampler.sample()
    started = time.process_time()
    for _ in range(n):
        sampler.sample()
    return (time.process_time() - started) / n * 1000


def run(ctx: BenchContext) -> dict[str, float]:
    measure_s = 21.0 if ctx.quick else 61.0
    topic = f"bench.agent.{uuid.uuid4().hex[:8]}.metrics"
    kafka_api.create_topics(KafkaConfig(bootstrap_servers=ctx.bootstrap), [kafka_api.TopicSpec(topic, 1, 1, {})])
    config = ctx.workdir / "agent.yaml"
    config.write_text(json.dumps({"kafka": {"bootstrap_servers": ctx.bootstrap, "topics": {"metrics": topic}},
                                  "agents": {"metrics": {"interval_s": INTERVAL_S}}}))
    env = {**os.environ, "TOCSIN_CONFIG": str(config)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen([sys.executable, "-c", "from tocsin.app.cli import main; main()", "agent", "metrics"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(WARMUP_S)
        t0, c0 = time.monotonic(), ps.cpu_times()
        time.sleep(measure_s)
        t1, c1 = time.monotonic(), ps.cpu_times()
        if proc.poll() is not None:
            raise RuntimeError(f"tocsin agent metrics exited with {proc.returncode}")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    used = (c1.user - c0.user) + (c1.system - c0.system)
    plain = _sample_cost_ms(MetricsAgentConfig(), ctx.n(50, 10))
    watched = _sample_cost_ms(MetricsAgentConfig(processes=["java", "python3"]), ctx.n(50, 10))
    return {
        "tocsin.agent_cpu_percent_of_core": used / (t1 - t0) * 100,
        "tocsin.agent_cpu_s_in_window": used,
        "window_s": t1 - t0,
        "tocsin.sample_cpu_ms": plain,
        "tocsin.sample_cpu_ms_with_2_watched_processes": watched,
        "projected_cpu_percent_at_10s_with_processes": watched / (INTERVAL_S * 1000) * 100,
    }
