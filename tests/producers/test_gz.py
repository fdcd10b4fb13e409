"""Rotated .gz files (logrotate `compress`) are read once: resuming the file they were compressed from, under
its event ids, so nothing is shipped twice or lost; old or unreadable ones are not shipped."""

from __future__ import annotations

import gzip
import logging
import os

from tests.producers.shiputil import FAST_SHIP, numbered, seq_counts, shipped
from tocsin.producers.config import LogInputConfig, LogShipConfig
from tocsin.producers.logship import LogShipper


def _ship(cfg, inputs, state):
    shipper = LogShipper(cfg, inputs=inputs, state_file=state, exit_at_eof=True, settings=LogShipConfig(**FAST_SHIP))
    with shipper:
        shipper.run()
    assert shipper.finished
    return shipper


def _compress(path) -> None:
    """What logrotate's `compress` does to a rotated file: gzip it beside itself, then remove it."""
    with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb") as dst:
        dst.write(src.read())
    os.unlink(path)


def test_a_compressed_rotation_resumes_where_the_plain_file_was_acknowledged(tocsin_config, tmp_path) -> None:
    log, state = tmp_path / "app.log", tmp_path / "ship.state"
    inputs = [LogInputConfig(paths=[str(log)], service="shop", read_gz=True)]
    log.write_text("".join(numbered(i) for i in range(1000)))
    _ship(tocsin_config, inputs, state)
    # While the shipper is down: 200 more lines, then rotation with compression, then a new file.
    with open(log, "a") as f:
        f.write("".join(numbered(i) for i in range(1000, 1200)))
    os.rename(log, tmp_path / "app.log.1")
    _compress(tmp_path / "app.log.1")
    log.write_text("".join(numbered(i) for i in range(1200, 1210)))

    second = _ship(tocsin_config, inputs, state)
    assert second.stats.gz_files == 1 and second.stats.records == 210
    events = shipped(tocsin_config, expect=1210)
    counts = seq_counts(events)
    assert set(counts) == set(range(1210)) and max(counts.values()) == 1
    prefixes = {e["event_id"].rsplit("-", 1)[0] for _, e in events if int(e["attrs"]["seq"]) < 1200}
    assert len(prefixes) == 1  # the .gz lines carry the ids of the file they came from

    third = _ship(tocsin_config, inputs, state)
    assert third.stats.records == 0 and third.stats.gz_files == 0  # read once


def test_old_or_unreadable_gz_files_are_not_shipped(tocsin_config, tmp_path, caplog) -> None:
    log, state = tmp_path / "app.log", tmp_path / "ship.state"
    inputs = [LogInputConfig(paths=[str(log)], service="shop", read_gz=True)]
    log.write_text("".join(numbered(i) for i in range(10)))
    with gzip.open(tmp_path / "app.log.3.gz", "wt") as f:  # history from before the first start
        f.write("".join(numbered(i) for i in range(100, 150)))
    (tmp_path / "app.log.4.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with caplog.at_level(logging.WARNING, logger="tocsin.logship"):
        first = _ship(tocsin_config, inputs, state)
    assert first.stats.records == 10 and first.stats.gz_files == 0 and first.stats.gz_refused == 1
    assert any(r.getMessage() == "Rotated .gz file not read." for r in caplog.records)
    again = _ship(tocsin_config, inputs, state)
    assert again.stats.gz_refused == 0 and again.stats.records == 0  # remembered: neither is looked at again
    assert set(seq_counts(shipped(tocsin_config, expect=10))) == set(range(10))
