"""Delivery policy shared by every receiver: retries with exponential backoff and jitter, and a rate limit.

* ``RetryPolicy.next_delay`` decides after each attempt: a ``sent`` or
  ``failed`` outcome ends it; a ``retry`` waits ``min(backoff_max, initial *
  2**n)`` scaled by a random factor in [0.5, 1] (jitter spreads a fleet's
  retries), or the receiver's Retry-After when that is longer (capped at
  ``retry_after_max_s``), until ``max_attempts`` or ``max_retry_s`` run out.
* ``TokenBucket`` caps each receiver at ``rate_limit_per_s`` with bursts of
  ``rate_limit_burst``; a 429 empties it until its Retry-After. Requests wait
  for a token, they are never dropped (Alertmanager #2111, #2205).
* ``ReceiverWorker`` is the one thread that talks to one receiver: a queue of
  jobs ordered by due time, so a notification waiting out its backoff does
  not hold back the other groups of that receiver.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tocsin.sinks.notify.receivers.base import DeliveryResult, Notification, Notifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again; built from a receiver config with ``RetryPolicy.of(cfg)``."""

    max_attempts: int = 12
    max_retry_s: float = 900.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0

    @classmethod
    def of(cls, receiver: Any) -> RetryPolicy:
        return cls(receiver.max_attempts, receiver.max_retry_s, receiver.backoff_initial_s,
                   receiver.backoff_max_s, receiver.retry_after_max_s)

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after failed attempt number ``attempt`` (1-based), with jitter in [50 %, 100 %]."""
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (attempt - 1)))
        return base * (0.5 + 0.5 * (rng or random).random())

    def next_delay(self, attempt: int, result: DeliveryResult, elapsed_s: float,
                   rng: random.Random | None = None) -> float | None:
        """Seconds until the next attempt, or None when this outcome is final."""
        if result.outcome != "retry" or attempt >= self.max_attempts:
            return None
        delay = self.backoff_s(attempt, rng)
        if result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, self.retry_after_max_s))
        if elapsed_s + delay > self.max_retry_s:
            return None
        return delay


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; thread-safe, clock injectable."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def try_acquire(self) -> float:
        """Takes a token and returns 0, or returns the seconds until one is available (taking none)."""
        with self._lock:
            now = self._clock()
            if now < self._blocked_until:
                return self._blocked_until - now
            self._refill(now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def block_for(self, seconds: float) -> None:
        """No tokens for ``seconds`` (a 429's Retry-After), then start again from empty."""
        with self._lock:
            now = self._clock()
            self._blocked_until = max(self._blocked_until, now + seconds)
            self._tokens = 0.0
            self._last = self._blocked_until


@dataclass
class Attempt:
    """One finished attempt, as the notification log records it."""

    job: Job
    number: int
    result: DeliveryResult
    duration_ms: float
    final: bool


@dataclass
class Job:
    """A notification on its way to one receiver, with its retry state."""

    notification: Notification
    context: Any = None  # owner's bookkeeping (the router's group and transitions)
    attempts: int = 0
    first_attempt_at: float | None = None
    result: DeliveryResult | None = None
    due: float = 0.0
    seq: int = field(default=0)


def deliver(notifier: Notifier[Any], notification: Notification, policy: RetryPolicy,
            bucket: TokenBucket | None = None, on_attempt: Callable[[Attempt], None] | None = None,
            sleep: Callable[[float], None] = time.sleep, should_stop: Callable[[], bool] = lambda: False,
            ) -> DeliveryResult:
    """Delivers one notification synchronously with retries (``tocsin notify test``); returns the final result."""
    job = Job(notification)
    while True:
        if bucket is not None:
            while (wait := bucket.try_acquire()) > 0:
                sleep(wait)
        attempt = _attempt(notifier, job, policy)
        if on_attempt is not None:
            on_attempt(attempt)
        if attempt.final or should_stop():
            return attempt.result
        delay = _delay(job, policy, bucket)
        sleep(delay)


def _attempt(notifier: Notifier[Any], job: Job, policy: RetryPolicy) -> Attempt:
    now = time.monotonic()
    if job.first_attempt_at is None:
        job.first_attempt_at = now
    job.attempts += 1
    started = time.perf_counter()
    try:
        result = notifier.send(job.notification)
    except Exception as exc:  # a receiver bug must not kill the worker; retry it like a network error
        log.exception("Receiver raised instead of returning a result.", extra={"receiver": notifier.name})
        result = DeliveryResult.retry(f"receiver error: {type(exc).__name__}: {exc}")
    duration_ms = (time.perf_counter() - started) * 1000.0
    job.result = result
    elapsed = time.monotonic() - job.first_attempt_at
    delay = policy.next_delay(job.attempts, result, elapsed)
    job.due = -1.0 if delay is None else delay
    return Attempt(job, job.attempts, result, duration_ms, final=delay is None)


def _delay(job: Job, policy: RetryPolicy, bucket: TokenBucket | None) -> float:
    assert job.result is not None
    if bucket is not None and job.result.http_status == 429:
        # A 429 speaks for the whole receiver: every job waits, not only this one.
        ra = job.result.retry_after_s
        bucket.block_for(min(ra, policy.retry_after_max_s) if ra is not None else job.due)
    return job.due


class ReceiverWorker:
    """The thread that delivers one receiver's notifications in due order.

    ``on_attempt`` runs after every attempt (the notification log write) and
    ``on_done`` once per job with its final result; both run on this thread.
    """

    def __init__(self, notifier: Notifier[Any], policy: RetryPolicy, bucket: TokenBucket,
                 on_attempt: Callable[[Attempt], None], on_done: Callable[[Job], None],
                 max_queued: int = 10_000) -> None:
        self.notifier = notifier
        self.policy = policy
        self.bucket = bucket
        self._on_attempt = on_attempt
        self._on_done = on_done
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self.max_queued = max_queued
        self.sent = 0
        self.failed = 0
        self.attempts = 0
        self._thread = threading.Thread(target=self._run, name=f"notify-{notifier.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            job.seq = next(self._seq)
            heapq.heappush(self._heap, (time.monotonic(), job.seq, job))
            self._cond.notify()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._heap)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops after the attempt in flight; queued jobs stay undelivered (their offsets uncommitted)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        self.notifier.close()

    def _next_job(self) -> Job | None:
        """Waits for the earliest due job and a rate-limit token; None when stopping."""
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait(1.0)
                    continue
                due = self._heap[0][0]
                now = time.monotonic()
                if due > now:
                    self._cond.wait(due - now)
                    continue
                wait = self.bucket.try_acquire()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                return heapq.heappop(self._heap)[2]
        return None

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            attempt = _attempt(self.notifier, job, self.policy)
            self.attempts += 1
            try:
                self._on_attempt(attempt)
            except Exception:
                log.exception("Recording a notification attempt failed.", extra={"receiver": self.notifier.name})
            if attempt.final:
                if attempt.result.outcome == "sent":
                    self.sent += 1
                else:
                    self.failed += 1
                try:
                    self._on_done(job)
                except Exception:
                    log.exception("Settling a notification failed.", extra={"receiver": self.notifier.name})
                continue
            delay = _delay(job, self.policy, self.bucket)
            with self._cond:
                heapq.heappush(self._heap, (time.monotonic() + delay, job.seq, job))
