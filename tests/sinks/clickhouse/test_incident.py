"""``GET /api/alerts/{alert_id}/context`` over the real store: the rule's value re-windowed from the rollups,
the thresholds, the error lines around the start (escaped, bounded), a hostile id, and the token's scope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_config
from tests.processors.test_http_app import MemoryView
from tocsin.core.clickhouse import connect
from tocsin.core.events import now_us
from tocsin.processors.http import create_app
from tocsin.processors.rules import load_rules
from tocsin.sinks.clickhouse.incident import _iso, context_router
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.clickhouse.store_access import DirectStore

READER, OPERATOR = "r" * 24, "o" * 24
MIN = 60_000_000
RULES = load_rules()


def _spec(name: str) -> dict | None:
    rule = RULES.by_name.get(name)
    return rule.spec.model_dump() if rule else None


@pytest.fixture
def env(tocsin_config):
    cfg = make_config(tocsin_config.kafka.bootstrap_servers, tocsin_config.clickhouse.url, api={
        "tokens": [{"name": "reader", "scope": "read", "token": READER},
                   {"name": "olivia", "scope": "operate", "token": OPERATOR}]})
    cfg = cfg.model_copy(update={"clickhouse": tocsin_config.clickhouse})
    client = connect(cfg.clickhouse)
    db = cfg.clickhouse.database
    migrate(client, db)
    start = now_us() // MIN * MIN - 10 * MIN  # ten minutes ago, on a minute
    # 30 ERROR lines before the start, one a minute; 8 a minute for the 5 minutes from it; INFO noise
    logs = [[f"b{i}", start - (30 - i) * MIN + 1, "shop", "web-1", "ERROR", f"before {i}"] for i in range(30)]
    logs += [[f"a{m}-{j}", start + m * MIN + j * 1_000_000, "shop", "web-1", "CRITICAL" if j == 0 else "ERROR",
              f"after {m}.{j} <img src=x onerror=alert(1)>\x1b[31m"] for m in range(5) for j in range(8)]
    logs += [[f"i{i}", start + i, "shop", "web-1", "INFO", "fine"] for i in range(50)]
    logs += [[f"o{i}", start + i, "other", "web-1", "ERROR", "other service"] for i in range(50)]
    client.insert(f"`{db}`.logs", logs, column_names=["event_id", "ts", "service", "host", "level", "message"])
    alert_id = f"fp-shop@{start}"
    rows = [[f"t{i}", start + off, alert_id, "fp-shop", "error_rate", "shop", sev, prev, state, pstate, value, thr,
             {"service": "shop"}, start] for i, (off, sev, prev, state, pstate, value, thr) in enumerate([
                 (0, "critical", "none", "firing", "inactive", 8.0, 5.0),
                 (7 * MIN, "none", "critical", "resolved", "firing", 0.4, 1.0)])]
    client.insert(f"`{db}`.alerts", rows, column_names=[
        "event_id", "ts", "alert_id", "fingerprint", "rule", "service", "severity", "previous_severity", "state",
        "previous_state", "value", "threshold", "labels", "started_at"])
    store = DirectStore(client, cfg)
    app = create_app(MemoryView(), cfg, scoped_routers=[lambda require: context_router(lambda: store, _spec,
                                                                                        require)])
    return TestClient(app), alert_id, start


def _get(client: TestClient, path: str, token: str | None = READER, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers, params=params)


def test_context_has_the_windowed_rate_the_thresholds_and_the_lines_around_the_start(env):
    client, alert_id, start = env
    r = _get(client, f"/api/alerts/{alert_id}/context")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["incident"]["rule"] == "error_rate" and doc["incident"]["service"] == "shop"
    assert doc["thresholds"] == [{"severity": "warning", "value": 1.0}, {"severity": "critical", "value": 5.0}]
    series = doc["series"]
    assert series["source"] == "log_counts_1m" and "per minute over 5 min" in series["what"]
    at = {ts: v for ts, v in series["points"]}

    def minute(offset: int) -> str:
        return _iso(start + offset * MIN)

    # a point is the rate over the 5 minutes ending at it: none before the first line (a zero, not a gap),
    # 1/min once 1 a minute fills the window, then 8 a minute entering a minute at a time
    assert at[minute(-30)] == 0.0 and at[minute(-29)] == pytest.approx(1 / 5)
    assert at[minute(0)] == pytest.approx(1.0)
    assert at[minute(1)] == pytest.approx((4 * 1 + 8) / 5)
    assert at[minute(5)] == pytest.approx(8.0)
    assert at[minute(7)] == pytest.approx(8 * 3 / 5)
    assert min(at) == minute(-30) and max(at) == minute(7)  # 30 min before the start to the resolve
    assert series["transitions"][0][1:] == [8.0, "critical"]
    logs = doc["logs"]
    assert logs["levels"] == ["ERROR", "CRITICAL"] and logs["limit"] == 20
    assert [line["message"] for line in logs["before"]] == [f"before {i}" for i in range(10, 30)]  # the last 20
    assert len(logs["after"]) == 20 and logs["after"][0]["level"] == "CRITICAL"
    first = logs["after"][0]["message"]
    assert first.startswith("after 0.0 <img") and "\x1b" not in first and "\\x1b[31m" in first  # text, escaped
    assert "other service" not in str(logs) and "fine" not in str(logs)
    assert "service = 'shop'" in logs["more"]["sql"] and logs["more"]["cli"].startswith("tocsin query '")
    few = _get(client, f"/api/alerts/{alert_id}/context", logs=3).json()["logs"]
    assert [line["message"] for line in few["before"]] == ["before 27", "before 28", "before 29"]


def test_a_hostile_id_is_a_parameter_and_limits_are_enforced(env):
    client, alert_id, _ = env
    for hostile in ("x' OR 1=1 --", "' UNION SELECT * FROM system.users --", "\\'; DROP TABLE logs"):
        r = _get(client, "/api/alerts/" + hostile.replace("/", "%2F") + "/context")
        assert r.status_code == 404 and "no alert" in r.json()["detail"], (hostile, r.text)
    assert _get(client, "/api/alerts/" + "a" * 257 + "/context").status_code == 422
    assert _get(client, f"/api/alerts/{alert_id}/context", logs=201).status_code == 422
    assert _get(client, f"/api/alerts/{alert_id}/context", before_s=7 * 3600).status_code == 422
    assert _get(client, f"/api/alerts/{alert_id}/context").status_code == 200  # the table is still there


def test_context_wants_a_token_and_a_read_one_suffices(env):
    client, alert_id, _ = env
    path = f"/api/alerts/{alert_id}/context"
    assert _get(client, path, token=None).status_code == 401
    assert _get(client, path, token="w" * 24).status_code == 401
    assert _get(client, path, token=READER).status_code == 200
    assert _get(client, path, token=OPERATOR).status_code == 200


def test_context_without_the_store_is_503_with_the_reason():
    from fastapi import FastAPI

    api = FastAPI()
    api.include_router(context_router(None, _spec, lambda scope: lambda: None))
    answer = TestClient(api).get("/api/alerts/fp-1/context")
    assert answer.status_code == 503 and "tocsin start all" in answer.json()["detail"]
