"""Silences over HTTP on a running processor, read back from the silences topic (what every notify sink reads)."""

from __future__ import annotations

import pytest
import requests

from tests.kafkautil import consume_all
from tests.processors.test_http_e2e import AUTH, Running
from tocsin.core.events import CONTROL_EVENT
from tocsin.schemas.codec import default_codec
from tocsin.sinks.notify.silences import read_store


def _records(proc: Running, silence_id: str) -> list[dict]:
    codec = default_codec()
    out = []
    for m in consume_all(proc.cfg.kafka, proc.cfg.kafka.topics.silences, idle_s=2.0):
        name, rec = codec.decode(m.value)
        if name == CONTROL_EVENT and rec["silence_id"] == silence_id:
            assert m.key == silence_id.encode()  # keyed by id: compaction keeps its latest state
            out.append(rec)
    return out


def test_create_list_and_expire_a_silence_through_the_api(oncall_proc: Running) -> None:
    url = f"{oncall_proc.url}/api/silences"
    body = {"matchers": ["service=shop", "env!=dev", {"label": "instance", "op": "=~", "value": "web-.*"},
                         'rule!~"disk.*"'],
            "duration": "2h", "comment": "deploy 4.2 <b>", "created_by": "mallory"}
    assert requests.post(url, json=body, timeout=30).status_code == 401  # operate: behind the token
    assert requests.post(url, json=body, headers=AUTH, timeout=30).status_code == 422  # no self-declared creator
    del body["created_by"]
    created = requests.post(url, json=body, headers=AUTH, timeout=30)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]

    [rec] = _records(oncall_proc, sid)
    assert rec["action"] == "silence_create" and rec["created_by"] == "admin" and rec["reason"] == "deploy 4.2 <b>"
    assert [(m["label"], m["op"], m["value"]) for m in rec["matchers"]] == [
        ("service", "=", "shop"), ("env", "!=", "dev"), ("instance", "=~", "web-.*"), ("rule", "!~", "disk.*")]
    assert rec["ends_at"] - rec["starts_at"] == 2 * 3600 * 1_000_000
    store = read_store(oncall_proc.cfg.kafka)  # the CLI's and the sinks' reading of the topic
    assert store.muting({"service": "shop", "env": "prod", "instance": "web-1", "rule": "cpu"}, rec["starts_at"])
    assert not store.muting({"service": "shop", "env": "dev", "instance": "web-1"}, rec["starts_at"])

    listed = requests.get(url, headers=AUTH, timeout=30).json()["silences"]
    [mine] = [s for s in listed if s["id"] == sid]
    assert mine["state"] == "active" and mine["created_by"] == "admin" and mine["comment"] == "deploy 4.2 <b>"

    gone = requests.delete(f"{url}/{sid}", headers=AUTH, timeout=30)
    assert gone.status_code == 200, gone.text
    assert [r["action"] for r in _records(oncall_proc, sid)] == ["silence_create", "silence_expire"]
    assert sid not in [s["id"] for s in requests.get(url, headers=AUTH, timeout=30).json()["silences"]]
    ended = requests.get(url, headers=AUTH, params={"state": "all"}, timeout=30).json()["silences"]
    assert next(s for s in ended if s["id"] == sid)["expired_by"] == "admin"
    assert requests.delete(f"{url}/{sid}", headers=AUTH, timeout=30).status_code == 404


def test_a_planned_silence_by_start_and_end(oncall_proc: Running) -> None:
    body = {"matchers": ["service=db"], "starts_at": "+1h", "ends_at": "+3h", "comment": "upgrade"}
    created = requests.post(f"{oncall_proc.url}/api/silences", json=body, headers=AUTH, timeout=30)
    assert created.status_code == 201, created.text
    [rec] = _records(oncall_proc, created.json()["id"])
    assert abs(rec["ends_at"] - rec["starts_at"] - 2 * 3600 * 1_000_000) < 5_000_000
    listed = requests.get(f"{oncall_proc.url}/api/silences", headers=AUTH, timeout=30).json()["silences"]
    assert [s["state"] for s in listed if s["id"] == created.json()["id"]] == ["pending"]


@pytest.mark.parametrize(("body", "says"), [
    ({"matchers": ["service"], "duration": "2h"}, "matchers[0]"),
    ({"matchers": ["service=~(("], "duration": "2h"}, "matchers[0]"),
    ({"matchers": ["service=shop"]}, "exactly one of ends_at and duration"),
    ({"matchers": ["service=shop"], "duration": "2h", "ends_at": "+1h"}, "exactly one of ends_at and duration"),
    ({"matchers": ["service=shop"], "duration": "200d"}, "at most 90 days"),
    ({"matchers": ["service=shop"], "starts_at": "+2h", "ends_at": "+1h"}, "after starts_at"),
    ({"matchers": ["service=shop"], "duration": "2h", "starts_at": "tomorrow"}, "ISO 8601"),
])
def test_bad_silences_are_400_with_the_reason_and_publish_nothing(oncall_proc: Running, body: dict, says: str) -> None:
    before = len(consume_all(oncall_proc.cfg.kafka, oncall_proc.cfg.kafka.topics.silences, idle_s=1.0))
    answer = requests.post(f"{oncall_proc.url}/api/silences", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 400 and says in answer.json()["detail"], answer.text
    assert len(consume_all(oncall_proc.cfg.kafka, oncall_proc.cfg.kafka.topics.silences, idle_s=1.0)) == before
