"""Shaping per input (keep/drop by level, logger, regex; sampling that spares errors) and the site's own multiline
rules, in memory and through the file shipper to the real broker."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tests.producers.shiputil import FAST_SHIP, seq_counts, shipped
from tocsin.producers.config import LogInputConfig, LogShipConfig, MultilineConfig, ShapeConfig
from tocsin.producers.logship import LogShipper
from tocsin.producers.multiline import PatternJoiner
from tocsin.producers.shape import Shaper


def _rec(level: str = "INFO", logger: str = "app", message: str = "m") -> dict:
    return {"level": level, "logger": logger, "message": message, "attrs": {}}


def test_levels_loggers_and_regexes_drop_and_count() -> None:
    s = Shaper(ShapeConfig(drop_levels=["debug"], drop_loggers=["urllib3"], drop_regex=[r"GET /health\b"]))
    assert not s.keep(_rec("DEBUG"), "a")
    assert not s.keep(_rec(logger="urllib3.connectionpool"), "b")
    assert s.keep(_rec(logger="urllib3x"), "c")  # a sibling, not a child
    assert not s.keep(_rec(message="GET /health 200"), "d")
    assert s.keep(_rec(message="GET /healthz 200"), "e")
    assert dict(s.counts) == {"dropped_level": 1, "dropped_logger": 1, "dropped_regex": 1}
    only = Shaper(ShapeConfig(keep_levels=["WARNING", "ERROR"], keep_loggers=["shop"], keep_regex=["order"]))
    assert only.keep(_rec("ERROR", "shop.cart", "order 1 failed"), "f")
    assert not only.keep(_rec("INFO", "shop", "order"), "g")
    assert not only.keep(_rec("ERROR", "other", "order"), "h")
    assert not only.keep(_rec("ERROR", "shop", "cart"), "i")
    assert not Shaper(ShapeConfig()).active


def test_sampling_keeps_one_in_n_by_event_id_and_spares_errors() -> None:
    s = Shaper(ShapeConfig(sample_1_in=10))
    ids = [f"prefix-{i:x}" for i in range(20_000)]
    kept = [i for i in ids if s.keep(_rec(), i)]
    assert 1600 < len(kept) < 2400
    assert kept == [i for i in ids if Shaper(ShapeConfig(sample_1_in=10)).keep(_rec(), i)]  # same verdict again
    assert all(s.keep(_rec(level), i) for level in ("ERROR", "CRITICAL", "fatal") for i in ids[:500])
    errors_too = Shaper(ShapeConfig(sample_1_in=10, sample_errors=True))
    assert sum(errors_too.keep(_rec("ERROR"), i) for i in ids) < 2400


def test_pattern_joiner_start_and_continuation_modes() -> None:
    out: list = []
    j = PatternJoiner(start=r"\d{4}-\d\d-\d\d ")
    lines = [b"2024-03-01 first", b"  detail 1", b"detail 2", b"2024-03-01 second", b"2024-03-01 third", b"tail"]
    off = 0
    for line in lines:
        j.feed(line, off, off + len(line) + 1, out)
        off += len(line) + 1
    assert j.open_start() == off - len(b"2024-03-01 third\ntail\n")
    j.flush(out)
    assert [(r[0], r[3]) for r in out] == [(b"2024-03-01 first\n  detail 1\ndetail 2", 3),
                                           (b"2024-03-01 second", 1), (b"2024-03-01 third\ntail", 2)]
    assert out[0][1] == 0 and out[1][1] == out[0][2]  # offsets: first line's start, last line's end
    out = []
    c = PatternJoiner(continuation=r"\s|\\\\$|>")
    for i, line in enumerate([b"a", b" b", b">c", b"d", b"e"]):
        c.feed(line, i * 10, i * 10 + 10, out)
    c.flush(out)
    assert [r[0] for r in out] == [b"a\n b\n>c", b"d", b"e"]
    out = []
    capped = PatternJoiner(start="X", max_lines=2)
    for i, line in enumerate([b"X1", b"a", b"b", b"c"]):
        capped.feed(line, i, i + 1, out)
    capped.flush(out)
    assert [r[0] for r in out] == [b"X1\na", b"b\nc"] and capped.splits == 1


def test_config_rejects_bad_patterns() -> None:
    with pytest.raises(ValidationError, match="not an RE2 regex"):
        ShapeConfig(drop_regex=[r"(?=lookahead)"])
    with pytest.raises(ValidationError, match="exactly one"):
        MultilineConfig(start="a", continuation="b")
    with pytest.raises(ValidationError):
        ShapeConfig(sample_1_in=0)


def _line(i: int, level: str, logger: str = "shop", message: str | None = None) -> str:
    return json.dumps({"timestamp": "2024-03-01T12:00:00Z", "level": level, "logger": logger,
                       "message": message or f"line {i}", "seq": i}) + "\n"


def test_shipper_sends_only_what_the_shape_keeps_and_acknowledges_everything(tocsin_config, tmp_path) -> None:
    log, text = tmp_path / "app.log", tmp_path / "app.txt"
    lines, want = [], set()
    for i in range(2000):
        kind = i % 10
        if kind == 0:
            lines.append(_line(i, "DEBUG"))
        elif kind == 1:
            lines.append(_line(i, "INFO", logger="urllib3.connectionpool"))
        elif kind == 2:
            lines.append(_line(i, "INFO", message="GET /health 200"))
        elif kind == 3:
            lines.append(_line(i, "ERROR"))
            want.add(i)  # errors are never sampled out
        else:
            lines.append(_line(i, "INFO"))
    log.write_text("".join(lines))
    text.write_text("2024-03-01 12:00:00 one\n  more of one\n2024-03-01 12:00:01 two\nmore of two\n")
    shape = ShapeConfig(drop_levels=["DEBUG"], drop_loggers=["urllib3"], drop_regex=["^GET /health"], sample_1_in=3)
    inputs = [LogInputConfig(paths=[str(log)], service="shop", shape=shape),
              LogInputConfig(paths=[str(text)], service="shop-text", parser="text",
                             multiline=MultilineConfig(start=r"\d{4}-\d\d-\d\d "))]
    shipper = LogShipper(tocsin_config, inputs=inputs, state_file=False, exit_at_eof=True,
                         settings=LogShipConfig(**FAST_SHIP))
    with shipper:
        shipper.run()
    assert shipper.finished  # every line's offset acknowledged, dropped ones included
    stats = shipper.stats_dict()
    assert (stats["dropped_level"], stats["dropped_logger"], stats["dropped_regex"]) == (200, 200, 200)
    sent = 2000 - 600 - stats["sampled_out"]
    events = shipped(tocsin_config, expect=sent + 2)
    assert len(events) == sent + 2
    counts = seq_counts([e for e in events if e[0] == b"shop"])
    assert max(counts.values()) == 1 and want <= set(counts)
    assert all(i % 10 >= 3 for i in counts)
    assert 0.2 < (len(counts) - len(want)) / 1200 < 0.47  # about one in three of the 1200 sampled INFO lines
    assert sorted(e["message"] for k, e in events if k == b"shop-text") == [
        "2024-03-01 12:00:00 one\n  more of one", "2024-03-01 12:00:01 two\nmore of two"]
