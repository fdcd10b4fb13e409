"""Scoped, named tokens: read < operate < admin per route (401 without a valid token, 403 below the scope), the
token's name as the actor, rotation through the tokens file without a restart, and api.token as admin."""

from __future__ import annotations

import time

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import make_config
from tests.kafkautil import wait_for
from tests.processors.test_http_app import MemoryView, alert
from tocsin.core.clickhouse import connect
from tocsin.processors.http import create_app
from tocsin.sinks.clickhouse.store_api import store_router

TOKENS = {"reader": ("read", "r" * 24), "olivia": ("operate", "o" * 24), "root": ("admin", "a" * 24)}
LEGACY = "legacy-admin-token-0123"

READ = [("GET", "/health/detailed"), ("GET", "/api/alerts"), ("GET", "/api/dashboard"), ("GET", "/metrics"),
        ("GET", "/openapi.json"), ("GET", "/api/whoami"), ("GET", "/api/debug/production/alerts/")]
OPERATE = [("POST", "/api/alerts/resolve"), ("POST", "/api/debug/production/alerts/resolve/")]
ADMIN = [("GET", "/api/store/queries"), ("POST", "/api/store/query")]
BODIES = {"/api/alerts/resolve": {"alert_id": "a1"}, "/api/debug/production/alerts/resolve/": {"alert_id": "a1"},
          "/api/store/query": {"sql": "SELECT 1"}}


@pytest.fixture
def app_and_view(tocsin_config, tmp_path):
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(yaml.safe_dump([{"name": "filed", "scope": "read", "token": "f" * 24}]))
    cfg = make_config(tocsin_config.kafka.bootstrap_servers, tocsin_config.clickhouse.url, api={
        "token": LEGACY, "service_name": "scopes", "tokens_file": str(tokens_file),
        "tokens": [{"name": n, "scope": s, "token": t} for n, (s, t) in TOKENS.items()]})
    cfg = cfg.model_copy(update={"clickhouse": tocsin_config.clickhouse})
    view = MemoryView()
    view.active = [alert("a1", "shop")]
    view.history = [alert("a1", "shop")]
    app = create_app(view, cfg, extra_routers=[store_router(lambda: connect(cfg.clickhouse), cfg)])
    return TestClient(app), view, tokens_file


def _call(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, path, headers=headers, json=BODIES.get(path)).status_code


def test_every_route_answers_by_scope(app_and_view):
    client, _, _ = app_and_view
    tokens = {"none": None, "wrong": "w" * 24, **{n: t for n, (_, t) in TOKENS.items()}, "legacy": LEGACY}
    allowed = {"none": set(), "wrong": set(), "reader": {"read"}, "olivia": {"read", "operate"},
               "root": {"read", "operate", "admin"}, "legacy": {"read", "operate", "admin"}}
    for who, token in tokens.items():
        for scope, routes in (("read", READ), ("operate", OPERATE), ("admin", ADMIN)):
            for method, path in routes:
                code = _call(client, method, path, token)
                if token is None or who == "wrong":
                    assert code == 401, (who, path, code)
                elif scope in allowed[who]:
                    assert code < 400 or code == 404, (who, path, code)  # 404: a1 resolved already
                else:
                    assert code == 403, (who, path, code)
    assert client.get("/health").status_code == 200  # open


def test_the_actor_is_the_token_name_never_the_body(app_and_view):
    client, view, _ = app_and_view
    r = client.post("/api/alerts/resolve", headers={"Authorization": f"Bearer {TOKENS['olivia'][1]}"},
                    json={"alert_id": "a1", "reason": "r", "actor": "mallory"})
    assert r.status_code == 202
    assert view.published == [("a1", "r", "olivia")]
    who = client.get("/api/whoami", headers={"Authorization": f"Bearer {LEGACY}"}).json()
    assert who == {"name": "admin", "scope": "admin"}  # api.token: the admin token named "admin"


def test_tokens_file_rotation_takes_effect_without_a_restart(app_and_view):
    client, _, tokens_file = app_and_view
    old, new = "f" * 24, "n" * 30
    assert client.get("/api/whoami", headers={"Authorization": f"Bearer {old}"}).json()["name"] == "filed"
    tokens_file.write_text(yaml.safe_dump([{"name": "rotated", "scope": "operate", "token": new}]))

    def rotated() -> bool:
        return (client.get("/api/whoami", headers={"Authorization": f"Bearer {old}"}).status_code == 401
                and client.get("/api/whoami", headers={"Authorization": f"Bearer {new}"}).json().get("name")
                == "rotated")

    wait_for(rotated, 10, "the rotated token", every_s=0.2)
    # a broken file keeps the tokens it had (and logs the field, never a value)
    tokens_file.write_text("- {name: x, scope: root, token: short}\n")
    time.sleep(1.2)
    assert client.get("/api/whoami", headers={"Authorization": f"Bearer {new}"}).status_code == 200
