"""Schemathesis over the whole OpenAPI document (store API included) with each token scope: no 5xx and only
documented status codes, bounded in time (a few examples per operation)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import requests

from tests.conftest import make_config, unique
from tests.kafkautil import wait_for
from tests.processors.test_http_e2e import _schemathesis_env, free_port, running_processor
from tocsin.core.clickhouse import connect
from tocsin.core.kafka import create_topics
from tocsin.sinks.clickhouse.schema import migrate
from tocsin.sinks.clickhouse.store_api import store_router

TOKENS = {"read": "fuzz-read-" + "r" * 16, "operate": "fuzz-operate-" + "o" * 16, "admin": "fuzz-admin-" + "a" * 16}


@pytest.fixture(scope="module")
def served(kafka_bootstrap, clickhouse_url, tmp_path_factory):
    archive = tmp_path_factory.mktemp("fuzz-archive")
    cfg = make_config(kafka_bootstrap, clickhouse_url,
                      api={"http_addr": f"127.0.0.1:{free_port()}", "service_name": "fuzz",
                           "tokens": [{"name": f"fuzz-{s}", "scope": s, "token": t} for s, t in TOKENS.items()]},
                      processor={"group_id": unique("fuzz")}, jobs={"archive_dir": str(archive)},
                      sink_clickhouse={"query_max_execution_s": 5})
    create_topics(cfg.kafka)
    migrate(connect(cfg.clickhouse), cfg.clickhouse.database)
    with running_processor(cfg, [store_router(lambda: connect(cfg.clickhouse), cfg)]) as running:
        wait_for(lambda: requests.get(f"{running.url}/health", timeout=5).status_code == 200, 90,
                 "the processor healthy", ignore=(requests.RequestException,))
        yield running


@pytest.mark.parametrize("scope", ["read", "operate", "admin"])
def test_schemathesis_per_scope_finds_no_server_error(served, scope, tmp_path):
    pytest.importorskip("schemathesis")
    cli = shutil.which("schemathesis") or shutil.which("st")
    cmd = [cli] if cli else [sys.executable, "-m", "schemathesis.cli"]
    schema = tmp_path / "openapi.json"
    schema.write_bytes(requests.get(f"{served.url}/openapi.json", timeout=30,
                                    headers={"Authorization": f"Bearer {TOKENS['read']}"}).content)
    result = subprocess.run(
        [*cmd, "run", str(schema), "--url", served.url, "--header", f"Authorization: Bearer {TOKENS[scope]}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
         "--max-examples", "8", "--workers", "1", "--request-timeout", "30", "--no-color"],
        capture_output=True, text=True, timeout=600, env=_schemathesis_env())
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
