"""Secrets are never printed: markers planted in every secret and URL credential stay out of `config show`,
`config check`, `health --json --publish` (stdout, stderr and the health topic) and the service log."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_config
from tests.kafkautil import consume_all
from tocsin.core.config import RedactingFilter, redact
from tocsin.core.kafka import create_topics
from tocsin.schemas.codec import default_codec

ROOT = Path(__file__).parents[2]
MARKERS = [f"SECRETMARK{i}x" for i in range(9)]


@pytest.mark.parametrize("text, shown", [
    ("http://u:pw@h:8123/db", "http://u:***@h:8123/db"),
    ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("redis://:pw@r:6379/0", "redis://:***@r:6379/0"),
    ("https://h/x?token=abc&ok=1", "https://h/x?token=***&ok=1"),
    ("https://b.s3/k?X-Amz-Signature=dead&X-Amz-Date=1", "https://b.s3/k?X-Amz-Signature=***&X-Amz-Date=1"),
    ("Authorization: Bearer abcdefgh123", "Authorization: Bearer ***"),
    ("no secret in here", "no secret in here"),
])
def test_redact(text, shown):
    assert redact(text) == shown


def test_the_log_filter_masks_messages_arguments_extras_and_tracebacks():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tocsin.test.secrets")
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError(f"cannot reach https://u:{MARKERS[0]}@h/x")
        except ConnectionError:
            logger.exception("failed %s", f"http://a:{MARKERS[1]}@b", extra={"url": f"http://x/?token={MARKERS[2]}"})
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "failed http://a:***@b" in text and "u:***@h" in text
    assert not any(m in text for m in MARKERS[:3]), text


def test_no_command_output_or_topic_carries_a_planted_secret(kafka_bootstrap, clickhouse_url, httpserver, tmp_path):
    httpserver.expect_request("/svc").respond_with_data("down", status=500)
    web = httpserver.url_for("/svc").replace("http://", f"http://probe:{MARKERS[3]}@")
    cfg = make_config(
        kafka_bootstrap, clickhouse_url,
        api={"token": MARKERS[4] + "-long-enough", "tokens": [{"name": "ops", "scope": "read",
                                                                "token": MARKERS[5] + "-long-enough"}]},
        agents={"health": {"clickhouse": False, "database_dsn": f"postgresql://app:{MARKERS[6]}@127.0.0.1:1/db",
                           "redis_url": f"redis://:{MARKERS[7]}@127.0.0.1:1/0",
                           "http": [{"name": "svc", "url": f"{web}?token={MARKERS[8]}"},
                                    {"name": "gone", "url": f"http://u:{MARKERS[3]}@127.0.0.1:1/?api_key={MARKERS[8]}",
                                     "timeout_s": 2}]}},
        notify={"receivers": [{"name": "hook", "type": "webhook",
                               "url": f"http://127.0.0.1:1/hook?token={MARKERS[8]}"}],
                "route": {"receiver": "hook"}})
    create_topics(cfg.kafka)
    path = tmp_path / "tocsin.yaml"
    dumped = cfg.model_dump(mode="json", exclude={"source"})
    dumped["api"]["token"] = MARKERS[4] + "-long-enough"
    dumped["api"]["tokens"][0]["token"] = MARKERS[5] + "-long-enough"
    path.write_text(yaml.safe_dump(dumped))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "CLICKHOUSE_"))}
    outputs = {}
    for args in (["config", "show"], ["config", "check"], ["health", "--json", "--publish"]):
        out = subprocess.run([sys.executable, "-m", "tocsin", "-c", str(path), *args], capture_output=True,
                             text=True, env=env, timeout=120, cwd=ROOT)
        outputs[" ".join(args)] = out.stdout + out.stderr
    assert "***" in outputs["config show"]
    assert "svc" in outputs["health --json --publish"], outputs["health --json --publish"]
    codec = default_codec()
    published = [codec.decode(m.value)[1] for m in consume_all(cfg.kafka, cfg.kafka.topics.health, timeout_s=20)]
    assert published, "health --publish produced nothing"
    outputs["health topic"] = repr(published)
    for name, text in outputs.items():
        leaked = [m for m in MARKERS if m in text]
        assert not leaked, f"{name} printed {leaked}: {text[:2000]}"
