"""`tocsin kafka up/down/status` and `tocsin topics create/list` against the real local broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tocsin.core import localkafka


def _tocsin(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tocsin", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def home_env(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "TOCSIN_CONFIG")}
    env["TOCSIN_HOME"] = str(tmp_path / "home")
    yield env
    localkafka.down(tmp_path / "home" / "kafka")


def test_kafka_up_prints_bootstrap_reuses_the_broker_and_down_stops_it(home_env: dict[str, str]) -> None:
    started = time.monotonic()
    first = _tocsin("kafka", "up", env=home_env)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    last_line = first.stdout.strip().splitlines()[-1]
    assert last_line.startswith("bootstrap=127.0.0.1:")
    print(f"kafka up took {took:.1f} s")
    assert took < 60

    again = _tocsin("kafka", "up", env=home_env)
    assert again.stdout.strip().splitlines()[-1] == last_line
    assert again.stdout.split()[0] == first.stdout.split()[0]  # same pid: reused

    # With no KAFKA_BOOTSTRAP_SERVERS, commands find the local broker by its state file.
    created = _tocsin("topics", "create", env=home_env)
    assert created.returncode == 0, created.stderr
    assert "tocsin.alerts\tcreated" in created.stdout
    assert "tocsin.alerts\texists" in _tocsin("topics", "create", env=home_env).stdout

    bootstrap = last_line.split("=", 1)[1]
    listing = subprocess.run(["kcat", "-b", bootstrap, "-L"], capture_output=True, text=True, timeout=30)
    for topic in ("tocsin.logs", "tocsin.metrics", "tocsin.health", "tocsin.alerts", "tocsin.control",
                  "tocsin.deadletter", "tocsin.silences"):
        assert f'topic "{topic}" with 6 partitions' in listing.stdout

    topics = json.loads(_tocsin("topics", "list", "--json", env=home_env).stdout)
    by_name = {t["name"]: t for t in topics}
    assert by_name["tocsin.alerts"]["configs"]["cleanup.policy"] == "compact"
    assert by_name["tocsin.silences"]["configs"]["cleanup.policy"] == "compact"  # kept however long they last
    assert by_name["tocsin.logs"]["configs"]["retention.ms"] == str(72 * 3600 * 1000)

    status = json.loads(_tocsin("kafka", "status", "--json", env=home_env).stdout)
    assert status["running"] and status["answering"] and status["bootstrap"] == bootstrap

    down = _tocsin("kafka", "down", env=home_env)
    assert down.returncode == 0 and "stopped pid" in down.stdout
    after = _tocsin("kafka", "status", "--json", env=home_env)
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False


def test_unreachable_kafka_exits_3_with_a_hint(home_env: dict[str, str]) -> None:
    env = dict(home_env, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    proc = _tocsin("topics", "list", env=env, timeout=120)
    assert proc.returncode == 3
    assert "tocsin kafka up" in proc.stderr and "Traceback" not in proc.stderr


def test_a_broker_whose_owner_is_killed_is_stopped_and_its_directory_removed(tmp_path: Path) -> None:
    """What keeps a SIGKILLed test run or benchmark from leaving a JVM behind."""
    data_dir = tmp_path / "owned"
    owner = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "from pathlib import Path\n"
         "from tocsin.core import localkafka\n"
         "s = localkafka.up(data_dir=Path(sys.argv[1]), owner_pid=os.getpid(), remove_on_orphan=True)\n"
         "print(s.pid, flush=True)\n"
         "time.sleep(600)\n", str(data_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        broker_pid = int(owner.stdout.readline())  # type: ignore[union-attr]
        assert localkafka._pid_alive(broker_pid)
        time.sleep(2 * localkafka.WATCH_INTERVAL_S)
        assert localkafka._pid_alive(broker_pid), "the watcher stopped the broker while its owner lived"
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + localkafka.STOP_TIMEOUT_S + 15
    while localkafka._pid_alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not localkafka._pid_alive(broker_pid), "the broker outlived its owner"
    while data_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not data_dir.exists()
