"""Broker outage: the test's own broker is stopped for 20 s while lines keep coming; none is lost.

The shared session broker is not touched: this test starts its own with
``tocsin.core.localkafka.up(data_dir=tmp)``, stops it with ``down()`` and starts it
again on the same data directory and port.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import make_config
from tests.producers.shiputil import FAST_SHIP, numbered, seq_counts, shipped, wait_acked
from tocsin.core import localkafka
from tocsin.core.kafka import create_topics
from tocsin.producers.config import LogInputConfig, LogShipConfig
from tocsin.producers.logship import LogShipper

OUTAGE_S = 20.0
RATE_LINES = 200  # per 50 ms tick: 4,000 lines/s
INFLIGHT_LIMIT = 1 << 20  # 1 MiB: the outage must hit it, so reading has to pause


@pytest.fixture
def own_broker(tmp_path):
    data_dir = tmp_path / "kafka"
    state = localkafka.up(data_dir=data_dir)
    yield state, data_dir
    localkafka.down(data_dir)


@pytest.mark.slow
def test_broker_down_for_20_s_loses_no_line_and_pauses_reading(own_broker, clickhouse_url, tmp_path):
    broker, data_dir = own_broker
    cfg = make_config(broker.bootstrap, clickhouse_url)
    create_topics(cfg.kafka)
    log = tmp_path / "app.log"
    written = [0]
    stop_writing = threading.Event()

    def writer() -> None:
        with open(log, "a") as f:
            while not stop_writing.is_set():
                f.write("".join(numbered(i, pad=150) for i in range(written[0], written[0] + RATE_LINES)))
                f.flush()
                written[0] += RATE_LINES
                time.sleep(0.05)

    log.touch()
    shipper = LogShipper(cfg, inputs=[LogInputConfig(paths=[str(log)], service="shop")],
                         state_file=tmp_path / "state.json",
                         settings=LogShipConfig(**{**FAST_SHIP, "max_inflight_bytes": INFLIGHT_LIMIT,
                                                   "read_chunk_bytes": 64 * 1024}))
    shipper.start()
    ship_thread = threading.Thread(target=shipper.run, daemon=True)
    write_thread = threading.Thread(target=writer, daemon=True)
    ship_thread.start()
    write_thread.start()
    max_inflight = 0
    try:
        wait_acked(shipper, 5000)  # the shipper started shipping
        localkafka.down(data_dir)
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:
            max_inflight = max(max_inflight, shipper._inflight)
            time.sleep(0.1)
        behind = log.stat().st_size - max(t.read_pos for t in shipper.tailers.values())
        acked_during_outage = shipper.stats.acked
        localkafka.up(port=broker.port, data_dir=data_dir)
        time.sleep(3)  # lines keep coming after the broker is back
        stop_writing.set()
        write_thread.join(10)
        total = written[0]
        deadline = time.monotonic() + 120
        while shipper.stats.acked < total and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop_writing.set()
        shipper.close()
        ship_thread.join(15)
    print(f"\nbroker outage: {total} lines, {acked_during_outage} acked before/while down, reading paused "
          f"{behind} bytes behind the writer, max unacknowledged {max_inflight} bytes, "
          f"delivery failures {shipper.stats.delivery_failures}, rewinds {shipper.stats.rewinds}")
    assert behind > 1 << 20, "reading should pause while Kafka is down (the file is the buffer)"
    # Memory stays bounded: what is unacknowledged never exceeds the limit by more than one read.
    assert max_inflight <= INFLIGHT_LIMIT + 64 * 1024
    counts = seq_counts(shipped(cfg, timeout_s=90))
    missing = sorted(set(range(total)) - set(counts))
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}"
