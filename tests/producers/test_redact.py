"""Redaction: what each built-in and a user pattern replace (and what they leave alone), its config errors, and
end to end: secrets written to log files reach neither Kafka nor ClickHouse."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import ValidationError

from tests.kafkautil import wait_for
from tests.producers.shiputil import FAST_SHIP, consume
from tocsin.producers.config import LogInputConfig, LogShipConfig, RedactConfig
from tocsin.producers.logship import LogShipper
from tocsin.producers.redact import Redactor, luhn_ok

ALL = ["card", "email", "authorization", "bearer", "secret", "ipv4", "ipv6"]
# Each secret, the line that carries it, and the pattern that must replace it.
SECRETS = [
    ("4111 1111 1111 1111", "paid with card 4111 1111 1111 1111 today", "card"),
    ("5500-0000-0000-0004", "refund to 5500-0000-0000-0004 queued", "card"),
    ("jane.doe@example.com", "mail sent to jane.doe@example.com", "email"),
    ("eyJhbGciOiJIUzI1NiJ9.cGF5bG9hZA.c2ln", "call with Bearer eyJhbGciOiJIUzI1NiJ9.cGF5bG9hZA.c2ln", "bearer"),
    ("dXNlcjpodW50ZXIy", "headers: Authorization: Basic dXNlcjpodW50ZXIy", "authorization"),
    ("hunter2", "login failed password=hunter2 user=bob", "secret"),
    ("s3cr3tval", "config secret=s3cr3tval loaded", "secret"),
    ("tok_abcdef123", "GET /cb?token=tok_abcdef123&x=1", "secret"),
    ("10.20.30.40", "client 10.20.30.40 connected", "ipv4"),
    ("2001:db8::8a2e:370:7334", "client 2001:db8::8a2e:370:7334 connected", "ipv6"),
    ("CUST-12345678", "order for CUST-12345678 shipped", "customer"),
]


def _all_patterns() -> RedactConfig:
    return RedactConfig(builtin=ALL, patterns=[{"name": "customer", "regex": r"\bCUST-\d{8}\b"}])


@pytest.mark.parametrize(("secret", "line", "pattern"), SECRETS)
def test_each_pattern_replaces_its_secret_and_counts_it(secret: str, line: str, pattern: str) -> None:
    r = Redactor(_all_patterns())
    out = r.text(line)
    assert secret not in out and f"[REDACTED:{pattern}]" in out
    assert dict(r.counts) == {pattern: 1}


def test_lookalikes_are_left_alone() -> None:
    r = Redactor(_all_patterns())
    for line in ("card 4111 1111 1111 1112 fails Luhn", "took 12:30:45 and 1.5 s", "order 1234567890123 (13 digits)",
                 "user=bob status=200", "version 10.2.3"):
        assert r.text(line) == line, line
    assert not r.counts
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_ip_addresses_only_when_asked_for() -> None:
    assert Redactor(RedactConfig()).text("client 10.20.30.40 from ::1") == "client 10.20.30.40 from ::1"


def test_attributes_are_redacted_and_secret_named_ones_whole() -> None:
    r = Redactor(RedactConfig())
    rec = {"message": "login", "attrs": {"password": "jsonpass99", "email": "x@y.org", "n": "1",
                                         "Authorization": "Digest abc", "note": "password=p"}}
    r.record(rec)
    assert rec["attrs"] == {"password": "[REDACTED:secret]", "email": "[REDACTED:email]", "n": "1",
                            "Authorization": "[REDACTED:secret]", "note": "password=[REDACTED:secret]"}
    assert dict(r.counts) == {"secret": 3, "email": 1}
    off = Redactor(RedactConfig(attributes=False))
    rec = {"message": "to a@b.io", "attrs": {"email": "x@y.org"}}
    off.record(rec)
    assert rec == {"message": "to [REDACTED:email]", "attrs": {"email": "x@y.org"}}


def test_quoted_values_keep_their_quotes() -> None:
    r = Redactor(RedactConfig())
    assert r.text("""secret: 's3 cr3t' token="abc" """) == """secret: '[REDACTED:secret]' token="[REDACTED:secret]" """


def test_user_patterns_run_in_linear_time_on_hostile_input() -> None:
    """(a|aa)+b on 100 kB of 'a' backtracks exponentially in Python's re; RE2 answers in one pass."""
    r = Redactor(RedactConfig(builtin=[], patterns=[{"name": "evil", "regex": "(a|aa)+b"}]))
    started = time.monotonic()
    assert r.text("a" * 100_000) == "a" * 100_000
    assert time.monotonic() - started < 10  # Python's re would not finish this in a lifetime


def test_config_rejects_what_re2_cannot_run_or_what_matches_nothing() -> None:
    with pytest.raises(ValidationError, match="not an RE2 regex"):
        RedactConfig(patterns=[{"name": "x", "regex": r"(a)\1"}])  # backreference
    with pytest.raises(ValidationError, match="empty string"):
        RedactConfig(patterns=[{"name": "x", "regex": r"a*"}])
    with pytest.raises(ValidationError):
        RedactConfig(builtin=["cards"])
    with pytest.raises(ValidationError, match="only use"):
        RedactConfig(replacement="[{what}]")
    assert not Redactor(RedactConfig(builtin=[])).active


def test_no_secret_reaches_kafka_or_clickhouse(tocsin_config, tmp_path, clickhouse_client) -> None:
    from tests.sinks.clickhouse.test_sink import running as running_sink
    from tocsin.sinks.clickhouse.sink import ClickHouseSink

    cfg = tocsin_config
    text_log, json_log = tmp_path / "app.log", tmp_path / "app.json"
    text_log.write_text("".join(line + "\n" for _, line, _ in SECRETS) + "card 4111 1111 1111 1112 fails Luhn\n")
    json_log.write_text(json.dumps({"level": "info", "message": "signup by jane.doe@example.com",
                                    "password": "jsonpass99", "card": "4111111111111111"}) + "\n")
    inputs = [LogInputConfig(paths=[str(text_log)], service="shop", parser="text", redact=_all_patterns()),
              LogInputConfig(paths=[str(json_log)], service="shop-json", parser="json")]
    shipper = LogShipper(cfg, inputs=inputs, state_file=False, exit_at_eof=True, settings=LogShipConfig(**FAST_SHIP))
    with shipper:
        shipper.run()
    assert shipper.finished
    stats = shipper.stats_dict()
    assert {k: v for k, v in stats.items() if k.startswith("redacted_")} == {
        "redacted_card": 3, "redacted_email": 2, "redacted_bearer": 1, "redacted_authorization": 1,
        "redacted_secret": 4, "redacted_ipv4": 1, "redacted_ipv6": 1, "redacted_customer": 1}
    n = len(SECRETS) + 2
    secrets = [s for s, _, _ in SECRETS] + ["jsonpass99", "4111111111111111"]

    values = [r.value for r in consume(cfg, cfg.kafka.topics.logs, expect=n)]
    assert len(values) == n
    raw = b"\n".join(values)
    assert [s for s in secrets if s.encode() in raw] == []
    assert b"4111 1111 1111 1112" in raw  # not a card: left as it was

    db = cfg.clickhouse.database
    with running_sink(ClickHouseSink(cfg)):
        wait_for(lambda: clickhouse_client.query(f"SELECT count() FROM `{db}`.logs").result_rows[0][0] >= n, 60,
                 "the shipped lines in ClickHouse", every_s=0.2)
    rows = clickhouse_client.query(f"SELECT message, toString(attrs) FROM `{db}`.logs").result_rows
    stored = "\n".join(m + a for m, a in rows)
    assert len(rows) == n
    assert [s for s in secrets if s in stored] == []
    assert "[REDACTED:card]" in stored and "[REDACTED:customer]" in stored
