"""Delivery policy as pure logic: classification, backoff with jitter, Retry-After, token bucket."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from tocsin.sinks.notify.delivery import RetryPolicy, TokenBucket, deliver
from tocsin.sinks.notify.receivers.base import DeliveryResult, classify_http, parse_retry_after
from tocsin.sinks.notify.sink import probe_notification


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "sent"), (202, "sent"), (204, "sent"), (400, "failed"), (401, "failed"), (403, "failed"), (404, "failed"),
    (410, "failed"), (413, "failed"), (422, "failed"), (408, "retry"), (429, "retry"), (500, "retry"),
    (502, "retry"), (503, "retry"),
])
def test_http_status_classification_never_retries_other_4xx(status, outcome):
    assert classify_http(status).outcome == outcome


def test_retry_after_as_seconds_or_http_date():
    assert classify_http(429, "slow down", "7").retry_after_s == 7.0
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now_s=1_000_000) == 30.0
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None


def test_backoff_doubles_with_jitter_and_is_capped():
    p = RetryPolicy(max_attempts=20, max_retry_s=10_000, backoff_initial_s=1, backoff_max_s=30)
    rng = random.Random(7)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (10, 30)]:
        delays = [p.backoff_s(attempt, rng) for _ in range(200)]
        assert base * 0.5 <= min(delays) and max(delays) <= base
        assert max(delays) - min(delays) > base * 0.3, "jitter spreads the retries"


def test_next_delay_ends_on_success_permanent_failure_attempts_or_time():
    p = RetryPolicy(max_attempts=3, max_retry_s=60, backoff_initial_s=1, backoff_max_s=10, retry_after_max_s=20)
    assert p.next_delay(1, DeliveryResult.sent(200), 0) is None
    assert p.next_delay(1, DeliveryResult.failed("HTTP 400", 400), 0) is None
    assert p.next_delay(1, DeliveryResult.retry("HTTP 500", 500), 0) is not None
    assert p.next_delay(3, DeliveryResult.retry("HTTP 500", 500), 0) is None
    assert p.next_delay(1, DeliveryResult.retry("HTTP 500", 500), 59.9) is None
    assert p.next_delay(1, DeliveryResult.retry("429", 429, retry_after_s=15), 0) == 15
    assert p.next_delay(1, DeliveryResult.retry("429", 429, retry_after_s=3600), 0) == 20, "capped"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_burst_then_rate_and_a_429_blocks_it():
    clock = FakeClock()
    b = TokenBucket(rate_per_s=2, burst=3, clock=clock)
    assert [b.try_acquire() for _ in range(3)] == [0, 0, 0]
    assert b.try_acquire() == pytest.approx(0.5)
    clock.t = 0.5
    assert b.try_acquire() == 0
    clock.t = 100
    assert [b.try_acquire() for _ in range(3)] == [0, 0, 0], "never more than the burst saved up"
    assert b.try_acquire() > 0
    b.block_for(10)
    assert b.try_acquire() == pytest.approx(10)
    clock.t = 110.5
    assert b.try_acquire() == 0


class ScriptedNotifier:
    name = "scripted"
    parts = ()

    def __init__(self, results: list[DeliveryResult]) -> None:
        self.results = results
        self.calls = 0

    def send(self, notification):
        self.calls += 1
        return self.results.pop(0)

    def close(self) -> None:
        pass


def test_deliver_retries_429_then_500_to_one_success_honouring_retry_after():
    n = ScriptedNotifier([DeliveryResult.retry("429", 429, retry_after_s=4), DeliveryResult.retry("500", 500),
                          DeliveryResult.sent(200)])
    slept: list[float] = []
    attempts = []
    result = deliver(n, probe_notification("x", "webhook"), RetryPolicy(backoff_initial_s=0.5), sleep=slept.append,
                     on_attempt=attempts.append)
    assert result.outcome == "sent" and n.calls == 3
    assert slept[0] == 4 and 0.5 <= slept[1] <= 1.0
    assert [(a.number, a.final) for a in attempts] == [(1, False), (2, False), (3, True)]


def test_deliver_stops_at_once_on_400():
    n = ScriptedNotifier([DeliveryResult.failed("HTTP 400", 400)])
    slept: list[float] = []
    assert deliver(n, probe_notification("x", "webhook"), RetryPolicy(), sleep=slept.append).outcome == "failed"
    assert n.calls == 1 and slept == []


def test_a_receiver_that_raises_is_retried_like_a_network_error():
    class Broken(ScriptedNotifier):
        def send(self, notification):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("bug")
            return DeliveryResult.sent(200)

    n = Broken([])
    assert deliver(n, probe_notification("x", "webhook"), RetryPolicy(), sleep=lambda s: None).outcome == "sent"
    assert n.calls == 2
