"""One failing member never takes the others down: it is rebuilt with exponential, capped backoff.

Pure in-process tests of ``ServiceGroup`` (no broker); the end-to-end ones
(restarts on ``/health/detailed``, ``tocsin start all`` frozen and thawed) are
in ``test_resilience.py``.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.kafkautil import wait_for
from tocsin.app.services import FAILED, RESTARTING, RUNNING, Backoff, ServiceGroup
from tocsin.core.component import Component

FAST = Backoff(initial_s=0.2, max_s=0.8, factor=2.0, reset_after_s=5.0)


class Steady(Component):
    """Runs until stopped, counting its turns."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    def run(self) -> None:
        while not self._stop.wait(0.02):
            self.turns += 1


class Raises(Component):
    """Raises from ``run()`` after ``after_s``; records when each instance started and was closed."""

    log: list[tuple[str, float]] = []

    def __init__(self, after_s: float = 0.0, where: str = "run") -> None:
        super().__init__()
        self.after_s, self.where = after_s, where

    def start(self) -> None:
        Raises.log.append(("start", time.monotonic()))
        if self.where == "start":
            raise ConnectionError("broker unreachable")

    def run(self) -> None:
        if not self._stop.wait(self.after_s):
            raise RuntimeError("rebalance listener raised")

    def _release(self) -> None:
        Raises.log.append(("close", time.monotonic()))


@pytest.fixture(autouse=True)
def _fresh_log():
    Raises.log = []


def _running(group: ServiceGroup) -> threading.Thread:
    group.start()
    t = threading.Thread(target=group.run, daemon=True)
    t.start()
    return t


def test_a_member_that_raises_is_rebuilt_with_growing_capped_backoff_while_the_others_run() -> None:
    steady = Steady()
    group = ServiceGroup({"steady": steady, "flaky": Raises()}, {"flaky": Raises}, FAST)
    t = _running(group)
    wait_for(lambda: group.status["flaky"].restarts >= 5, 20, "five restarts")
    group.stop()
    t.join(10)
    group.close()
    assert not t.is_alive()
    starts = [at for what, at in Raises.log if what == "start"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.2, 0.4, 0.8, 0.8 ...: each gap is at least its backoff step, and the cap holds.
    for gap, step in zip(gaps, (0.2, 0.4, 0.8, 0.8, 0.8), strict=False):
        assert step <= gap < step + 1.0, (gaps, step)
    assert group.members["steady"] is steady and steady.turns > 0, "the steady member was never touched"
    assert group.status["steady"].restarts == 0
    assert group.status["flaky"].last_error == "RuntimeError: rebalance listener raised"
    # Every failed instance was closed before its replacement started.
    assert [w for w, _ in Raises.log][:4] == ["start", "close", "start", "close"]


def test_a_member_whose_start_fails_keeps_being_retried() -> None:
    group = ServiceGroup({"steady": Steady(), "flaky": Steady()},
                         {"flaky": lambda: Raises(where="start")}, FAST)
    t = _running(group)
    group.members["flaky"].stop()  # run() returns while the group runs: a failure too
    wait_for(lambda: group.status["flaky"].restarts >= 2, 20, "retries of a failing start()")
    assert group.status["flaky"].state in (RESTARTING, RUNNING)
    assert group.status["flaky"].last_error == "ConnectionError: broker unreachable"
    assert group.alive("steady")
    group.stop()
    t.join(10)
    group.close()


def test_backoff_resets_after_a_healthy_period() -> None:
    backoff = Backoff(initial_s=0.2, max_s=5.0, factor=4.0, reset_after_s=0.5)
    # Each instance runs 0.6 s (longer than reset_after_s) before failing: every delay is the first one.
    group = ServiceGroup({"flaky": Raises(after_s=0.6)}, {"flaky": lambda: Raises(after_s=0.6)}, backoff)
    t = _running(group)
    wait_for(lambda: group.status["flaky"].restarts >= 3, 20, "three restarts")
    group.stop()
    t.join(10)
    group.close()
    closes = [at for what, at in Raises.log if what == "close"]
    starts = [at for what, at in Raises.log if what == "start"][1:]
    waits = [s - c for c, s in zip(closes, starts, strict=False)]
    assert waits and all(w < 0.2 + 0.6 for w in waits), f"backoff grew although each run was healthy: {waits}"


def test_a_member_without_a_factory_stops_the_group_and_its_error_ends_run() -> None:
    steady = Steady()
    group = ServiceGroup({"steady": steady, "store-owner": Raises(after_s=0.2)}, {}, FAST)
    group.start()
    with pytest.raises(RuntimeError, match="rebalance listener raised"):
        group.run()
    group.close()
    assert group.status["store-owner"].state == FAILED and steady.stopping


def test_close_during_backoff_returns_promptly() -> None:
    group = ServiceGroup({"flaky": Raises()}, {"flaky": Raises}, Backoff(initial_s=30, max_s=30))
    t = _running(group)
    wait_for(lambda: group.status["flaky"].state == RESTARTING, 10, "the first failure")
    began = time.monotonic()
    group.stop()
    t.join(10)
    group.close()
    assert not t.is_alive() and time.monotonic() - began < 5
    assert group.status["flaky"].restarts == 0
