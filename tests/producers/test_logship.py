"""The log shipper against the real broker: delivery, event ids, state resume, hostile input, deletion."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from tests.kafkautil import wait_for
from tests.producers.shiputil import (
    FAST_SHIP,
    env_for,
    numbered,
    running,
    seq_counts,
    shipped,
    wait_acked,
    write_config,
)
from tocsin.producers.config import LogInputConfig, LogShipConfig
from tocsin.producers.logship import LogShipper


def _ship(cfg, inputs, state=False, **settings):
    shipper = LogShipper(cfg, inputs=inputs, state_file=state, exit_at_eof=True,
                         settings=LogShipConfig(**{**FAST_SHIP, **settings}))
    with shipper:
        shipper.run()
    assert shipper.finished
    return shipper


def test_every_line_arrives_keyed_by_service_with_offset_event_ids(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(numbered(i) for i in range(5000)))
    shipper = _ship(tocsin_config, [LogInputConfig(paths=[str(log)], service="shop")])
    assert shipper.stats.acked == 5000 and shipper.stats_dict()["unparsed"] == 0
    events = shipped(tocsin_config, expect=5000)
    assert len(events) == 5000 and set(seq_counts(events)) == set(range(5000))
    assert {key for key, _ in events} == {b"shop"}
    ev = next(e for _, e in events if e["attrs"]["seq"] == "1")
    _prefix, offset = ev["event_id"].rsplit("-", 1)
    assert int(offset, 16) == len(numbered(0))  # the id names the line's byte offset
    assert ev["service"] == "shop" and ev["message"] == "line 1" and ev["level"] == "INFO"
    assert len({e["event_id"] for _, e in events}) == 5000


def test_reshipping_without_state_repeats_the_same_event_ids(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(numbered(i) for i in range(300)))
    inputs = [LogInputConfig(paths=[str(log)], service="shop")]
    _ship(tocsin_config, inputs)
    _ship(tocsin_config, inputs)
    events = shipped(tocsin_config, expect=600)
    ids = [e["event_id"] for _, e in events]
    assert len(ids) == 600 and len(set(ids)) == 300  # downstream stores keep one of each


def test_state_file_resumes_after_the_last_acknowledged_line(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    state = tmp_path / "ship.state"
    log.write_text("".join(numbered(i) for i in range(100)))
    inputs = [LogInputConfig(paths=[str(log)], service="shop")]
    _ship(tocsin_config, inputs, state=state)
    again = _ship(tocsin_config, inputs, state=state)
    assert again.stats.records == 0
    with open(log, "a") as f:
        f.write("".join(numbered(i) for i in range(100, 110)))
    third = _ship(tocsin_config, inputs, state=state)
    assert third.stats.records == 10
    counts = seq_counts(shipped(tocsin_config, expect=110))
    assert set(counts) == set(range(110)) and max(counts.values()) == 1


def test_hostile_input_never_crashes_and_is_counted(tocsin_config, tmp_path):
    huge = tmp_path / "huge.log"
    huge.write_bytes(b'{"message": "' + b"x" * (10 * 1024 * 1024) + b'"}\n' + numbered(1).encode())
    crlf = tmp_path / "crlf.log"
    crlf.write_bytes(b"".join(numbered(i).rstrip("\n").encode() + b"\r\n" for i in range(10, 20)))
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.bin"
    rnd = random.Random(3)
    blob = bytes(rnd.getrandbits(8) for _ in range(200_000))
    garbage.write_bytes(blob)
    garbage_lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in blob.split(b"\n")]
    expected_garbage = sum(1 for ln in garbage_lines if ln)
    inputs = [
        LogInputConfig(paths=[str(tmp_path / "*.log")], service="shop"),
        LogInputConfig(paths=[str(garbage)], service="junk", multiline=False),
    ]
    shipper = _ship(tocsin_config, inputs)
    stats = shipper.stats_dict()
    total = 2 + 10 + expected_garbage
    assert stats["acked"] == total
    assert stats["truncated_lines"] == 1 and stats["oversize_events"] == 1
    assert stats["invalid_utf8"] > 0 and stats["unparsed"] >= expected_garbage
    events = shipped(tocsin_config, expect=total)
    assert len(events) == total
    big = [e for _, e in events if e["attrs"].get("truncated") == "true"]
    assert len(big) == 1 and big[0]["attrs"]["original_bytes"] == str(10 * 1024 * 1024 + 15)
    assert set(seq_counts(events)) == {1, *range(10, 20)}  # CRLF lines parse (no stray \r)
    junk = [e for k, e in events if k == b"junk"]
    assert len(junk) == expected_garbage and all("parse_error" in e["attrs"] for e in junk)


def test_file_deleted_while_open_is_finished_then_forgotten(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    writer = open(log, "w")  # noqa: SIM115 - kept open across the deletion on purpose
    writer.write("".join(numbered(i) for i in range(1000)))
    writer.flush()
    shipper = LogShipper(tocsin_config, inputs=[LogInputConfig(paths=[str(log)], service="shop")],
                         state_file=tmp_path / "state", settings=LogShipConfig(**FAST_SHIP))
    with running(shipper):
        wait_acked(shipper, 1000)
        os.unlink(log)
        writer.write("".join(numbered(i) for i in range(1000, 1500)))  # the writer still holds the file
        writer.close()
        wait_for(lambda: shipper.stats.deleted_files >= 1 and not shipper.tailers, 30,
                 "the deleted file finished and forgotten", every_s=0.05)
    assert shipper.stats.deleted_files == 1 and not shipper.tailers
    counts = seq_counts(shipped(tocsin_config, expect=1500))
    assert set(counts) == set(range(1500))


def test_nginx_input_also_produces_api_response_time_metrics(tocsin_config, tmp_path):
    from tests.producers.test_parsers import NGINX_COMBINED, NGINX_WITH_TIME

    log = tmp_path / "access.log"
    log.write_text(f"{NGINX_COMBINED}\n{NGINX_WITH_TIME}\n")
    _ship(tocsin_config, [LogInputConfig(paths=[str(log)], service="web", parser="nginx")])
    logs = shipped(tocsin_config, expect=2)
    assert [e["level"] for _, e in logs] == ["INFO", "ERROR"]
    metrics = shipped(tocsin_config, expect=1, topic=tocsin_config.kafka.topics.metrics)
    assert len(metrics) == 1
    key, m = metrics[0]
    assert key == b"web" and m["name"] == "api_response_time" and m["unit"] == "ms" and m["value"] == 1234.0
    assert m["labels"] == {"route": "/api/checkout", "method": "POST", "status": "502"}


def test_cli_ship_exit_at_eof(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(numbered(i) for i in range(2000)))
    config = write_config(tmp_path, tocsin_config)
    proc = subprocess.run(
        [sys.executable, "-m", "tocsin", "-c", str(config), "ship", str(log), "--service", "shop",
         "--exit-at-eof", "--stats", "--state", str(tmp_path / "state.json")],
        env=env_for(tocsin_config), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"acked": 2000' in proc.stdout
    assert set(seq_counts(shipped(tocsin_config, expect=2000))) == set(range(2000))


def test_cli_ship_rejects_a_bad_parser(tocsin_config, tmp_path):
    config = write_config(tmp_path, tocsin_config)
    proc = subprocess.run(
        [sys.executable, "-m", "tocsin", "-c", str(config), "ship", str(tmp_path), "--service", "s",
         "--parser", "regex:(unclosed"], env=env_for(tocsin_config), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "parser" in proc.stderr


@pytest.mark.parametrize("size", [0, 5])
def test_small_and_empty_files_finish(tocsin_config, tmp_path, size):
    log = tmp_path / "small.log"
    log.write_text("".join(numbered(i) for i in range(size)))
    shipper = _ship(tocsin_config, [LogInputConfig(paths=[str(log)], service="shop")])
    assert shipper.stats.acked == size


def test_new_files_matching_a_glob_are_picked_up(tocsin_config, tmp_path):
    (tmp_path / "a.log").write_text("".join(numbered(i) for i in range(10)))
    shipper = LogShipper(tocsin_config, inputs=[LogInputConfig(paths=[str(tmp_path / "*.log*")], service="shop")],
                         state_file=False, settings=LogShipConfig(**FAST_SHIP))
    with running(shipper):
        wait_acked(shipper, 10)
        (tmp_path / "b.log").write_text("".join(numbered(i) for i in range(10, 30)))
        (tmp_path / "ignored.log.gz").write_bytes(b"\x1f\x8b" + bytes(100))
        wait_acked(shipper, 30)
    assert shipper.stats.acked == 30 and len(shipper.tailers) == 2  # the compressed rotation is excluded
    assert set(seq_counts(shipped(tocsin_config, expect=30))) == set(range(30))


def test_copytruncate_while_the_shipper_was_down_recovers_from_the_copy(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    state = tmp_path / "state.json"
    inputs = [LogInputConfig(paths=[str(log)], service="shop")]
    log.write_text("".join(numbered(i) for i in range(100)))
    _ship(tocsin_config, inputs, state=state)
    with open(log, "a") as f:  # written after the shipper stopped...
        f.write("".join(numbered(i) for i in range(100, 150)))
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())  # ...then copytruncate
    with open(log, "r+") as f:
        f.truncate(0)
        f.write("".join(numbered(i) for i in range(150, 170)))
    shipper = _ship(tocsin_config, inputs, state=state)
    assert shipper.stats.copy_recoveries == 1 and shipper.stats.records == 70
    counts = seq_counts(shipped(tocsin_config, expect=170))
    assert set(counts) == set(range(170)) and max(counts.values()) == 1


def test_components_close_twice_and_validate_without_io(tocsin_config):
    from tocsin.producers.agent import build
    from tocsin.producers.health import HealthScheduler
    from tocsin.producers.metrics import MetricsAgent

    unreachable = tocsin_config.model_copy(update={"kafka": tocsin_config.kafka.model_copy(
        update={"bootstrap_servers": "127.0.0.1:1"})})
    for component in (LogShipper(unreachable, inputs=[], state_file=False), MetricsAgent(unreachable),
                      HealthScheduler(unreachable), build(unreachable)):
        component.close()
        component.close()
        assert component.stopping


def test_a_topic_kafka_refuses_pauses_and_retries_without_crashing(tocsin_config, tmp_path):
    topics = tocsin_config.kafka.topics.model_copy(update={"logs": "not a valid topic!"})
    cfg = tocsin_config.model_copy(update={"kafka": tocsin_config.kafka.model_copy(update={"topics": topics})})
    log = tmp_path / "app.log"
    log.write_text("".join(numbered(i) for i in range(10)))
    shipper = LogShipper(cfg, inputs=[LogInputConfig(paths=[str(log)], service="shop")], state_file=False,
                         settings=LogShipConfig(**FAST_SHIP))
    with running(shipper) as thread:
        time.sleep(2.0)
        alive = thread.is_alive()
    assert alive and shipper.stats.rewinds >= 2 and shipper.stats.acked == 0
    assert all(t.read_pos == 0 for t in shipper.tailers.values())  # nothing consumed without an ack


def test_truncated_file_is_read_again_from_the_start(tocsin_config, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(numbered(i) for i in range(100)))
    shipper = LogShipper(tocsin_config, inputs=[LogInputConfig(paths=[str(log)], service="shop")],
                         state_file=tmp_path / "state", settings=LogShipConfig(**FAST_SHIP))
    with running(shipper):
        wait_acked(shipper, 100)
        with open(log, "r+") as f:  # truncate in place, as copytruncate does (no copy kept here)
            f.truncate(0)
            f.write("".join(numbered(i) for i in range(100, 120)))
        wait_acked(shipper, 120)
    assert shipper.stats.truncations == 1
    counts = seq_counts(shipped(tocsin_config, expect=120))
    assert set(counts) == set(range(120)) and max(counts.values()) == 1
    ids = {e["event_id"] for _, e in shipped(tocsin_config, expect=120)}
    assert len(ids) == 120  # the new content's offsets restart at 0 under a new generation: no id reused


def test_rotated_files_are_finished_after_restarts_even_when_renamed_again(tocsin_config, tmp_path):
    import json

    log = tmp_path / "app.log"
    state = tmp_path / "state.json"
    inputs = [LogInputConfig(paths=[str(log)], service="shop")]
    log.write_text("".join(numbered(i) for i in range(50)))
    _ship(tocsin_config, inputs, state=state)
    with open(log, "a") as f:  # written while the shipper is down, then rotated twice
        f.write("".join(numbered(i) for i in range(50, 80)))
    os.rename(log, tmp_path / "app.log.1")
    doc = json.loads(state.read_text())  # as a previous run would have recorded it after the first rename
    doc["files"][0]["path"] = str(tmp_path / "app.log.1")
    state.write_text(json.dumps(doc))
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    log.write_text("".join(numbered(i) for i in range(80, 90)))
    shipper = _ship(tocsin_config, inputs, state=state)
    assert shipper.stats.records == 40
    counts = seq_counts(shipped(tocsin_config, expect=90))
    assert set(counts) == set(range(90)) and max(counts.values()) == 1
