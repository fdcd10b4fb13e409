"""Copytruncate while Kafka is down: the copy (``app.log.1``, matched by the glob) keeps the old event ids.

Found by the chaos run: with the broker SIGKILLed, acks and checkpoints
stall, so when logrotate copies app.log to app.log.1 and truncates app.log the
checkpoint is behind what was read; the glob then found app.log.1 as a new
file and shipped all of it again under new event ids. Here a private broker is
SIGKILLed, app.log is copytruncated while it is down, and afterwards every line
must be in the logs topic under the one event id it has without the fault:
file fingerprint prefix plus byte offset, generation 0 before the truncation
and generation 1 after it. The second test also SIGKILLs the shipper during
the outage and restarts it once the broker is back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config
from tests.kafkautil import wait_for
from tests.producers.shiputil import FAST_SHIP, env_for, numbered, shipped, wait_acked, write_config
from tests.producers.test_broker_outage import own_broker  # noqa: F401 - the private broker fixture
from tests.producers.test_rotation_crash import _start
from tocsin.core import localkafka
from tocsin.core.kafka import create_topics
from tocsin.producers.config import LogInputConfig, LogShipConfig
from tocsin.producers.logship import LogShipper
from tocsin.producers.logship.checkpoints import FileState
from tocsin.producers.logship.identity import copy_identity, fingerprint, id_prefix, new_state

FP_BYTES = LogShipConfig().fingerprint_bytes
BEFORE = 500  # shipped and acknowledged before the outage
DURING = 500  # written while the broker is down, before the rotation (read, never acknowledged)
AFTER = 300  # written to the truncated app.log while the broker is down
LATE = 200  # written once the broker is back
TOTAL = BEFORE + DURING + AFTER + LATE


class Expected:
    """Every line's event id without any fault: its file generation's prefix plus its start offset."""

    def __init__(self, log: Path, copy_name: str = "app.log.1") -> None:
        self.log = log
        self.copy_name = copy_name
        st = log.stat()
        self.key = (st.st_dev, st.st_ino)
        self.ids: dict[int, str] = {}
        self.gen = 0
        self.size = 0
        self.prefix = ""

    def write(self, lines: range) -> None:
        """Appends the lines in one write (under 4 KiB at a generation's start, so it is seen whole)."""
        data = "".join(numbered(i, pad=40) for i in lines).encode()
        with open(self.log, "ab") as f:
            f.write(data)
        offset = self.size
        self.size += len(data)
        if not self.prefix:
            fd = os.open(self.log, os.O_RDONLY)
            try:
                fp, got = fingerprint(fd, FP_BYTES)
            finally:
                os.close(fd)
            assert got == FP_BYTES, "a generation's first write must cover the fingerprint"
            self.prefix = id_prefix(self.key[0], self.key[1], fp, self.gen)
        for i in lines:
            self.ids[i] = f"{self.prefix}{offset:x}"
            offset += len(numbered(i, pad=40).encode())

    def copytruncate(self) -> None:
        shutil.copyfile(self.log, self.log.with_name(self.copy_name))
        os.truncate(self.log, 0)
        self.gen += 1
        self.size = 0
        self.prefix = ""


def kill_broker(broker: localkafka.BrokerState, data_dir: Path) -> None:
    os.kill(broker.pid, signal.SIGKILL)
    localkafka.down(data_dir)  # reaps it and drops its state file


def check_topic(cfg, expected: Expected) -> None:
    """Every line is in the topic under exactly one event id, the fault-free one (repeats share it)."""
    events: list = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events = shipped(cfg, timeout_s=30)
        if len({int(e["attrs"]["seq"]) for _, e in events}) >= TOTAL:
            break
        time.sleep(1)
    ids: dict[int, set[str]] = {}
    for _, e in events:
        ids.setdefault(int(e["attrs"]["seq"]), set()).add(e["event_id"])
    missing = sorted(set(range(TOTAL)) - set(ids))
    twice = sorted(seq for seq, s in ids.items() if len(s) > 1)
    wrong = sorted(seq for seq, s in ids.items() if s != {expected.ids[seq]})
    repeats = len(events) - len(ids)
    print(f"\ncopytruncate during outage: {len(events)} records for {TOTAL} lines, {repeats} repeats "
          f"(same id), {len(twice)} lines under two ids, {len(wrong)} under a new id, {len(missing)} missing")
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}"
    assert not twice, f"{len(twice)} lines stored under two event ids, first {twice[:10]}"
    assert not wrong, f"{len(wrong)} lines under another event id than without the fault, first {wrong[:10]}"


def _settings() -> dict:
    return {**FAST_SHIP, "fingerprint_bytes": FP_BYTES}


@pytest.mark.slow
def test_copytruncate_while_broker_down_keeps_event_ids(own_broker, clickhouse_url, tmp_path):  # noqa: F811
    broker, data_dir = own_broker
    cfg = make_config(broker.bootstrap, clickhouse_url)
    create_topics(cfg.kafka)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    expected = Expected(log)
    expected.write(range(0, BEFORE))
    shipper = LogShipper(cfg, inputs=[LogInputConfig(paths=[str(logs / "app.log*")], service="shop")],
                         state_file=tmp_path / "state.json", settings=LogShipConfig(**_settings()))
    shipper.start()
    thread = threading.Thread(target=shipper.run, daemon=True)
    thread.start()
    try:
        wait_acked(shipper, BEFORE)
        kill_broker(broker, data_dir)
        expected.write(range(BEFORE, BEFORE + DURING))
        wait_for(lambda: any(t.read_pos >= expected.size for t in shipper.tailers.values()), 30,
                 "the lines written during the outage read")
        assert shipper.stats.acked < BEFORE + DURING, "the broker should be down"
        expected.copytruncate()
        expected.write(range(BEFORE + DURING, BEFORE + DURING + 30))
        expected.write(range(BEFORE + DURING + 30, BEFORE + DURING + AFTER))
        rotated_at = time.monotonic()
        scan = FAST_SHIP["scan_interval_s"]
        wait_for(lambda: shipper._next_scan > rotated_at + 2 * scan, 30, "two scans after the rotation",
                 every_s=0.05)
        localkafka.up(port=broker.port, data_dir=data_dir)
        expected.write(range(TOTAL - LATE, TOTAL))
        check_topic(cfg, expected)
    finally:
        shipper.close()
        thread.join(15)


@pytest.mark.slow
@pytest.mark.parametrize(("glob", "copy_name"), [("app.log*", "app.log.1"), ("app*", "app-1.log")],
                         ids=["copy-scanned-after", "copy-scanned-first"])
def test_copytruncate_while_broker_down_and_shipper_killed_keeps_event_ids(
        own_broker, clickhouse_url, tmp_path, glob, copy_name):  # noqa: F811
    """After the restart the glob finds the copy after app.log (``app.log.1``) or before it (``app-1.log``)."""
    broker, data_dir = own_broker
    cfg = make_config(broker.bootstrap, clickhouse_url)
    create_topics(cfg.kafka)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    expected = Expected(log, copy_name)
    expected.write(range(0, BEFORE))
    config = write_config(tmp_path, cfg, **_settings())
    state = tmp_path / "ship.state.json"
    env = env_for(cfg)
    stderr = tmp_path / "shipper.stderr"
    pattern = logs / glob  # it matches the copy too
    proc = _start(config, pattern, state, env, stderr)
    try:
        wait_for(lambda: len(shipped(cfg, timeout_s=2)) >= BEFORE, 60, "the first lines shipped")
        kill_broker(broker, data_dir)
        expected.write(range(BEFORE, BEFORE + DURING))
        expected.copytruncate()
        expected.write(range(BEFORE + DURING, BEFORE + DURING + 30))
        expected.write(range(BEFORE + DURING + 30, BEFORE + DURING + AFTER))
        # The fault's timing, not a wait for a result: ten scans see the copy (and the buggy shipper
        # checkpointed it as a new file) before the kill.
        time.sleep(10 * FAST_SHIP["scan_interval_s"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        localkafka.up(port=broker.port, data_dir=data_dir)
        proc = _start(config, pattern, state, env, stderr)
        expected.write(range(TOTAL - LATE, TOTAL))
        check_topic(cfg, expected)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()


def _known(path: Path, offset: int) -> FileState:
    """The state a shipper would have for ``path`` with ``offset`` acknowledged."""
    st = path.stat()
    fd = os.open(path, os.O_RDONLY)
    try:
        fp, got = fingerprint(fd, FP_BYTES)
    finally:
        os.close(fd)
    state = new_state((st.st_dev, st.st_ino), fp, got, 0, str(path), "shop", time.time())
    state.offset = offset
    return state


def _as_copy(path: Path, states: list[FileState], live: set[str] = frozenset()) -> tuple[bool, FileState | None]:
    st = path.stat()
    return copy_identity(str(path), (st.st_dev, st.st_ino), st.st_size, "shop", states, set(live), FP_BYTES)


HEADER = "# service=shop format=json v1\n"  # a short header every file of this service starts with


def test_a_copy_of_a_truncated_file_continues_its_identity(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(HEADER + "".join(numbered(i, pad=40) for i in range(50)))
    state = _known(log, 1000)
    shutil.copyfile(log, tmp_path / "app.log.1")
    assert _as_copy(tmp_path / "app.log.1", [state]) == (True, None)  # not truncated yet: a duplicate
    assert _as_copy(tmp_path / "app.log.1", [state], live={state.id}) == (True, None)
    os.truncate(log, 0)
    skip, cont = _as_copy(tmp_path / "app.log.1", [state])
    assert not skip and cont is not None
    assert (cont.id, cont.gen, cont.offset, cont.done) == (state.id, 0, 1000, False)
    assert cont.key == ((tmp_path / "app.log.1").stat().st_dev, (tmp_path / "app.log.1").stat().st_ino)
    os.truncate(tmp_path / "app.log.1", 900)  # a copy no longer than what was acknowledged: nothing to ship
    skip, cont = _as_copy(tmp_path / "app.log.1", [state])
    assert cont is not None and cont.done and cont.id == state.id


def test_a_new_file_sharing_only_a_short_header_is_not_merged(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(HEADER + "".join(numbered(i, pad=40) for i in range(50)))
    state = _known(log, 1000)
    os.truncate(log, 0)  # the known file no longer holds its bytes, so only the fingerprint could merge
    other = tmp_path / "app.log.2"
    other.write_text(HEADER + "".join(numbered(i, pad=41) for i in range(50)))
    assert _as_copy(other, [state]) == (False, None)  # first fingerprint_bytes differ after the header
    # A file fingerprinted while it held only the header (fp_len < fingerprint_bytes) vouches for nothing.
    short = tmp_path / "other.log"
    short.write_text(HEADER)
    header_only = _known(short, len(HEADER))
    assert header_only.fp_len == len(HEADER) < FP_BYTES
    os.truncate(short, 0)
    assert _as_copy(other, [header_only]) == (False, None)
