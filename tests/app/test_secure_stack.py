"""The whole stack through a SASL_SSL broker (issue 15 item 9): ``tocsin start all`` (agent, processor, both
sinks) with SCRAM-SHA-512 and the broker's CA; a log line written to the agent's file is in ClickHouse, the
error rule's alert reaches a webhook receiver, and ``tocsin alerts`` / ``tocsin topics create`` work through it."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
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

MARK = "SECRETMARK{}x"
SETUP = SecureSetup("tocsin", "stack-" + MARK.format("sasl") + "q" * 8)


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[BrokerState]:
    data_dir = Path(tempfile.mkdtemp(prefix="tocsin-test-kafka-stack-"))
    try:
        yield localkafka.up(data_dir=data_dir, owner_pid=os.getpid(), remove_on_orphan=True, secure=SETUP)
    finally:
        localkafka.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def _stack(state: BrokerState, hook_url: str, tmp_path: Path) -> tuple[str, Path, dict]:
    """Own topics, database, groups and port; the agent tails ``app.log`` as service shop."""
    run = unique("t")
    app_log = tmp_path / "app.log"
    app_log.write_text("")
    data = {
        "kafka": {"bootstrap_servers": state.secure_bootstrap, "security_protocol": "SASL_SSL",
                  "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": SETUP.username,
                  "sasl_plain_password": SETUP.password, "ssl_cafile": state.ca_file,
                  "topics": {**{n: f"{run}.{n}" for n in ("logs", "metrics", "health", "alerts", "control",
                                                           "deadletter", "silences", "patterns")},
                             "partitions": 1}},
        "clickhouse": {"url": f"chdb://{tmp_path / 'chdb'}", "database": run},
        "api": {"token": TOKEN, "http_addr": f"127.0.0.1:{free_port()}"},
        "processor": {"group_id": f"{run}-processor", "heartbeat_interval_s": 2.0},
        "summary": {"enabled": False},
        "agents": {"service": "shop", "logship": {"inputs": [{"paths": [str(app_log)], "service": "shop"}]}},
        "notify": {"group_id": f"{run}-notify",
                   "receivers": [{"name": "hook", "type": "webhook", "url": hook_url,
                                  "backoff_initial_s": 0.1}],
                   "route": {"receiver": "hook", "group_wait_s": 0.5, "group_interval_s": 1.0}},
    }
    return run, app_log, data


def _write_errors(app_log: Path, marker: str, n: int = 10) -> None:
    now = dt.datetime.now(dt.UTC).isoformat()
    with app_log.open("a") as f:
        for i in range(n):
            f.write(json.dumps({"timestamp": now, "level": "ERROR", "logger": "t", "message": f"{marker} {i}"}) + "\n")


@pytest.mark.slow
def test_start_all_through_sasl_ssl_ships_stores_and_notifies(secure_broker, httpserver, tmp_path) -> None:
    hook = record(httpserver, "/hook")
    run, app_log, data = _stack(secure_broker, httpserver.url_for("/hook"), tmp_path)
    config = _write(tmp_path / "tocsin.yaml", data)
    home = tmp_path / "home"
    out = _cli(home, config, "topics", "create")
    assert out.returncode == 0 and f"{run}.logs\tcreated" in out.stdout, out.stdout + out.stderr
    marker = unique("through-tls")
    url = f"http://{data['api']['http_addr']}"

    def stored() -> int:
        resp = requests.post(f"{url}/api/store/query", headers=AUTH, timeout=30,
                             json={"sql": f"SELECT count() FROM `{run}`.logs WHERE message LIKE '{marker}%'"})
        return int(resp.json()["rows"][0][0]) if resp.status_code == 200 else 0

    with _detached(home, config, "all"):
        wait_for(lambda: requests.get(f"{url}/health", timeout=5).status_code == 200, 120,
                 "the processor healthy", ignore=(requests.RequestException,))
        _write_errors(app_log, marker)
        wait_for(lambda: stored() >= 10, 120, "the agent's lines in ClickHouse",
                 ignore=(requests.RequestException, KeyError, ValueError), every_s=1)

        def fired() -> bool:
            _write_errors(app_log, marker)  # more lines move event time on, so the window closes and the rule evaluates
            return any(a["labels"].get("alertname") == "error_rate" and a["labels"].get("service") == "shop"
                       for b in hook.bodies() for a in b["alerts"])

        wait_for(fired, 180, "the error_rate alert at the webhook", every_s=2)
        alerts = _cli(home, config, "alerts", "--json")
        assert alerts.returncode == 0, alerts.stderr
        assert "error_rate" in alerts.stdout and "shop" in alerts.stdout
    log = (home / "logs" / "all.log").read_text(errors="replace")
    assert SETUP.password not in log


@pytest.mark.slow
def test_no_secret_of_a_running_stack_reaches_its_log_topics_or_tables(secure_broker, httpserver, tmp_path) -> None:
    """Markers in every secret (API tokens, the SASL password, the ClickHouse password, credentials in the webhook,
    HTTP-check, database and Redis URLs); after the stack shipped, stored, probed and notified, none is in the
    service log, in any topic's raw bytes (keys, values, headers) or in any row of any table."""
    from tocsin.app.config import TocsinConfig
    from tocsin.core.kafka import read_topic

    hook = record(httpserver, "/hook")
    httpserver.expect_request("/svc").respond_with_data("down", status=500)
    hook_url = httpserver.url_for("/hook").replace("http://", f"http://hook:{MARK.format('hook')}@")
    run, app_log, data = _stack(secure_broker, hook_url + f"?token={MARK.format('hooktoken')}", tmp_path)
    web = httpserver.url_for("/svc").replace("http://", f"http://probe:{MARK.format('probe')}@")
    data["api"]["tokens"] = [{"name": "ops", "scope": "read", "token": MARK.format("readtoken") + "-long-enough"}]
    data["clickhouse"]["password"] = MARK.format("chpassword")
    data["agents"]["health"] = {
        "clickhouse": False, "interval_s": 5,
        "database_dsn": f"postgresql://app:{MARK.format('dsn')}@127.0.0.1:1/db",
        "redis_url": f"redis://:{MARK.format('redis')}@127.0.0.1:1/0",
        "http": [{"name": "svc", "url": f"{web}?token={MARK.format('query')}"},
                 {"name": "gone", "url": f"http://u:{MARK.format('gone')}@127.0.0.1:1/?api_key=k", "timeout_s": 2}]}
    data["api"]["token"] = MARK.format("apitoken") + "-long-enough"
    auth = {"Authorization": f"Bearer {data['api']['token']}"}
    config = _write(tmp_path / "tocsin.yaml", data)
    cfg = TocsinConfig.model_validate(data)
    home = tmp_path / "home"
    assert _cli(home, config, "topics", "create").returncode == 0
    url = f"http://{data['api']['http_addr']}"
    marker = unique("plain-line")

    def query(sql: str) -> list:
        resp = requests.post(f"{url}/api/store/query", headers=auth, timeout=60, json={"sql": sql})
        assert resp.status_code == 200, resp.text
        return resp.json()["rows"]

    with _detached(home, config, "all"):
        wait_for(lambda: requests.get(f"{url}/health", timeout=5).status_code == 200, 120,
                 "the processor healthy", ignore=(requests.RequestException,))

        def notified() -> bool:
            _write_errors(app_log, marker)
            return bool(hook.bodies())

        wait_for(notified, 180, "an alert at the webhook (through its URL's credentials)", every_s=2)
        wait_for(lambda: query(f"SELECT count() FROM `{run}`.health_checks")[0][0], 120,
                 "health checks stored", every_s=2, ignore=(requests.RequestException, AssertionError))
        tables = [r[0] for r in query(f"SELECT name FROM system.tables WHERE database = '{run}'")]
        texts = {}
        for t in tables:  # aggregate states (uniqExact keeps hashes: no text in them) read as what they count
            cols = [f"finalizeAggregation(`{c}`)" if ty.startswith("AggregateFunction") else f"`{c}`" for c, ty in
                    query(f"SELECT name, type FROM system.columns WHERE database = '{run}' AND table = '{t}'")]
            texts[f"table {t}"] = json.dumps(query(f"SELECT {', '.join(cols)} FROM `{run}`.`{t}`")) if cols else ""
    assert "table logs" in texts and marker in texts["table logs"], sorted(texts)
    texts["service log"] = (home / "logs" / "all.log").read_text(errors="replace")
    for name in type(cfg.kafka.topics).model_fields:
        topic = getattr(cfg.kafka.topics, name)
        if not isinstance(topic, str) or not topic.startswith(run):
            continue
        raw: list[bytes] = []
        read_topic(cfg.kafka, topic, lambda _tp, rec, raw=raw: raw.extend(
            [rec.key or b"", rec.value or b"", *(v for _, v in rec.headers or [])]), timeout_s=60, missing_ok=True)
        texts[f"topic {topic}"] = b"\n".join(raw).decode("utf-8", "replace")
    assert texts[f"topic {cfg.kafka.topics.health}"], "the health topic is empty: nothing was probed"
    leaks = {name: sorted({m for m in re.findall(r"SECRETMARK\w+x", text)}) for name, text in texts.items()}
    assert not {k: v for k, v in leaks.items() if v}, leaks
