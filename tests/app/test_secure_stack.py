"""The whole stack through a SASL_SSL broker (issue 15 item 9): ``tocsin start all`` (agent, processor, both
sinks) with SCRAM-SHA-512 and the broker's CA; a log line written to the agent's file is in ClickHouse, the
error rule's alert reaches a webhook receiver, and ``tocsin alerts`` / ``tocsin topics create`` work through it."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.app.test_resilience import _cli, _detached, _write
from tests.conftest import unique
from tests.kafkautil import wait_for
from tests.processors.test_http_e2e import AUTH, TOKEN, free_port
from tests.sinks.notify.support import record
from tocsin.core import localkafka
from tocsin.core.localkafka import BrokerState, SecureSetup

SETUP = SecureSetup("tocsin", "stack-" + "q" * 18)


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[BrokerState]:
    data_dir = Path(tempfile.mkdtemp(prefix="tocsin-test-kafka-stack-"))
    try:
        yield localkafka.up(data_dir=data_dir, owner_pid=os.getpid(), remove_on_orphan=True, secure=SETUP)
    finally:
        localkafka.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.slow
def test_start_all_through_sasl_ssl_ships_stores_and_notifies(secure_broker, httpserver, tmp_path) -> None:
    hook = record(httpserver, "/hook")
    run = unique("t")
    app_log = tmp_path / "app.log"
    app_log.write_text("")
    data = {
        "kafka": {"bootstrap_servers": secure_broker.secure_bootstrap, "security_protocol": "SASL_SSL",
                  "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": SETUP.username,
                  "sasl_plain_password": SETUP.password, "ssl_cafile": secure_broker.ca_file,
                  "topics": {**{n: f"{run}.{n}" for n in ("logs", "metrics", "health", "alerts", "control",
                                                           "deadletter", "silences", "patterns")},
                             "partitions": 1}},
        "clickhouse": {"url": f"chdb://{tmp_path / 'chdb'}", "database": run},
        "api": {"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}"},
        "processor": {"group_id": f"{run}-processor", "heartbeat_interval_s": 2.0},
        "summary": {"enabled": False},
        "agents": {"service": "shop", "logship": {"inputs": [{"paths": [str(app_log)], "service": "shop"}]}},
        "notify": {"group_id": f"{run}-notify",
                   "receivers": [{"name": "hook", "type": "webhook", "url": httpserver.url_for("/hook"),
                                  "backoff_initial_s": 0.1}],
                   "route": {"receiver": "hook", "group_wait_s": 0.5, "group_interval_s": 1.0}},
    }
    config = _write(tmp_path / "tocsin.yaml", data)
    home = tmp_path / "home"
    out = _cli(home, config, "topics", "create")
    assert out.returncode == 0 and f"{run}.logs\tcreated" in out.stdout, out.stdout + out.stderr
    marker = unique("through-tls")
    url = f"http://{data['api']['http_addr']}"

    def write_errors() -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        with app_log.open("a") as f:
            for i in range(10):
                f.write(json.dumps({"timestamp": now, "level": "ERROR", "logger": "t",
                                    "message": f"{marker} {i}"}) + "\n")

    def stored() -> int:
        resp = requests.post(f"{url}/api/store/query", headers=AUTH, timeout=30,
                             json={"sql": f"SELECT count() FROM `{run}`.logs WHERE message LIKE '{marker}%'"})
        return int(resp.json()["rows"][0][0]) if resp.status_code == 200 else 0

    with _detached(home, config, "all"):
        wait_for(lambda: requests.get(f"{url}/health", timeout=5).status_code == 200, 120,
                 "the processor healthy", ignore=(requests.RequestException,))
        write_errors()
        wait_for(lambda: stored() >= 10, 120, "the agent's lines in ClickHouse",
                 ignore=(requests.RequestException, KeyError, ValueError), every_s=1)

        def fired() -> bool:
            write_errors()  # more lines move event time on, so the window closes and the rule evaluates
            return any(a["labels"].get("alertname") == "error_rate" and a["labels"].get("service") == "shop"
                       for b in hook.bodies() for a in b["alerts"])

        wait_for(fired, 180, "the error_rate alert at the webhook", every_s=2)
        alerts = _cli(home, config, "alerts", "--json")
        assert alerts.returncode == 0, alerts.stderr
        assert "error_rate" in alerts.stdout and "shop" in alerts.stdout
    log = (home / "logs" / "all.log").read_text(errors="replace")
    assert SETUP.password not in log
