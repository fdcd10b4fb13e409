"""Both routes to the history: the store opened directly, and the owner's HTTP API (uvicorn in a thread,
the embedded engine held by this test process) used by ``tocsin query/report/cleanup`` subprocesses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import uvicorn
import yaml
from fastapi import FastAPI, Header, HTTPException

from tests.conftest import make_config
from tocsin.core.clickhouse import connect
from tocsin.core.errors import StoreError
from tocsin.core.events import now_us
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.clickhouse.store_access import DirectStore, HttpStore, open_store, owner_pid
from tocsin.sinks.clickhouse.store_api import store_router

TOKEN = "s3cret-token"
ROOT = Path(__file__).parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bearer(authorization: str | None = Header(None)) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(401, "missing or wrong bearer token")


@pytest.fixture
def store(kafka_bootstrap, clickhouse_url, tmp_path):
    port = _free_port()
    cfg = make_config(kafka_bootstrap, clickhouse_url, api={"http_addr": f"127.0.0.1:{port}", "token": TOKEN},
                      jobs={"archive_dir": str(tmp_path / "archive")})
    client = connect(cfg.clickhouse)
    db = cfg.clickhouse.database
    migrate(client, db)
    base = now_us() // 60_000_000 * 60_000_000 - 1  # the report counts whole minutes: stay before this one
    client.insert(f"`{db}`.logs", [[f"e{i}", base - i * 1_000_000, "shop" if i % 2 else "cart", "h",
                                    "ERROR" if i % 3 == 0 else "INFO", f"failure {i}"] for i in range(60)],
                  column_names=["event_id", "ts", "service", "host", "level", "message"])
    app = FastAPI()
    app.include_router(store_router(lambda: connect(cfg.clickhouse), cfg, auth=_bearer))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    config_path = tmp_path / "tocsin.yaml"
    dumped = cfg.model_dump(mode="json", exclude={"source"})
    dumped["api"]["token"] = TOKEN  # SecretStr dumps masked
    config_path.write_text(yaml.safe_dump(dumped))
    yield cfg, client, f"http://127.0.0.1:{port}", config_path
    server.should_exit = True
    thread.join(10)
    client.command(f"DROP DATABASE IF EXISTS `{db}`")


def _cli(config_path: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TOCSIN_CONFIG", "CLICKHOUSE_URL", "TOCSIN_API_TOKEN")}
    if token is not None:
        env["TOCSIN_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "tocsin", "-c", str(config_path), *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)


def test_direct_route_in_the_process_that_holds_the_store(store):
    cfg, _, _, _ = store
    direct = open_store(cfg)
    assert isinstance(direct, DirectStore)
    db = cfg.clickhouse.database
    res = direct.query(f"SELECT service, count() AS n FROM `{db}`.logs GROUP BY service ORDER BY service")
    assert (res.columns, res.rows) == (["service", "n"], [["cart", 30], ["shop", 30]])
    assert direct.report(1)["totals"]["errors"] == 20
    assert direct.cleanup(1, dry_run=True)["rows_removed"] == 0
    with pytest.raises(StoreError, match="only SELECT"):
        direct.query(f"DROP TABLE `{db}`.logs")
    with pytest.raises(StoreError, match="readonly"):
        direct.query("SELECT 1 SETTINGS readonly = 0")
    # The writing session is untouched by the read-only one.
    direct.client.command(f"CREATE TABLE `{db}`.scratch (a UInt8) ENGINE = Memory")
    assert direct.query(f"SELECT count() FROM `{db}`.scratch").rows == [[0]]


def test_http_route_answers_like_the_direct_one_and_never_writes(store):
    cfg, client, url, _ = store
    db = cfg.clickhouse.database
    http = HttpStore(url, TOKEN, db)
    sql = f"SELECT service, count() AS n, max(ts) AS last FROM `{db}`.logs GROUP BY service ORDER BY service"
    assert http.query(sql) == DirectStore(client, cfg).query(sql)
    assert http.query(f"SELECT count() FROM `{db}`.logs WHERE service = {{s:String}}", {"s": "shop"}).rows == [[30]]
    assert http.report(1, service="shop")["services"][0]["errors"] == 10
    assert http.cleanup(0, dry_run=True)["dry_run"] is True
    with pytest.raises(StoreError, match=r"403.*only SELECT"):
        http.query(f"DROP TABLE `{db}`.logs")
    resp = requests.post(f"{url}/api/store/query", json={"sql": "SELECT 1", "readonly": False},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert resp.status_code == 403
    with pytest.raises(StoreError, match="401"):
        HttpStore(url, "wrong", db).query("SELECT 1")
    assert requests.get(f"{url}/api/store/report", timeout=10).status_code == 401
    assert client.query(f"SELECT count() FROM `{db}`.logs").result_rows == [(60,)]


def test_cli_in_another_process_goes_through_the_owner_api(store, clickhouse_url):
    cfg, _, _, config_path = store
    db = cfg.clickhouse.database
    embedded = clickhouse_url.startswith("chdb://")
    if embedded:  # this process holds the engine: a second process cannot open it
        assert owner_pid(Path(clickhouse_url.removeprefix("chdb://"))) is not None
    out = _cli(config_path, "query", f"SELECT level, count() AS n FROM `{db}`.logs GROUP BY level ORDER BY level",
               "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"level": "ERROR", "n": 20}, {"level": "INFO", "n": 40}]
    out = _cli(config_path, "query", f"SELECT count() AS n FROM `{db}`.logs", "--format", "csv")
    assert out.stdout == "n\n60\n"
    out = _cli(config_path, "report", "--hours", "1", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totals"]["log_events"] == 60
    out = _cli(config_path, "cleanup", "--days", "1", "--dry-run")
    assert out.returncode == 0 and "would remove 0 row(s)" in out.stdout, out.stderr
    if embedded:
        out = _cli(config_path, "query", "SELECT 1", token="not-the-token")
        assert out.returncode == 3 and "401" in out.stderr and "TOCSIN_API_TOKEN" in out.stderr
        out = _cli(config_path, "db", "migrate")
        assert out.returncode == 3 and "held by pid" in out.stderr


def test_archive_cli_through_the_owner_writes_parquet_once(store, tmp_path):
    cfg, client, _, config_path = store
    db = cfg.clickhouse.database
    old = now_us() - 20 * 86_400_000_000  # inside the 30-day TTL: older rows are already gone
    client.insert(f"`{db}`.alerts", [[f"a{i}", old + i, f"alert-{i}", "fp", "error_rate", "firing"] for i in range(3)],
                  column_names=["event_id", "ts", "alert_id", "fingerprint", "rule", "state"])
    out = _cli(config_path, "archive", "--older-than", "15", "--to", str(tmp_path / "archive"))
    assert out.returncode == 0, out.stderr
    assert "1 file(s) written, 0 existed" in out.stdout
    (path,) = (tmp_path / "archive").glob("alerts-*.parquet")
    assert path.read_bytes()[:4] == b"PAR1"
    again = _cli(config_path, "archive", "--older-than", "15", "--to", str(tmp_path / "archive"))
    assert "0 file(s) written, 1 existed" in again.stdout
