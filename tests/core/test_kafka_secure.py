"""Kafka over TLS and SASL for real: the local broker with a SASL_SSL listener (SCRAM-SHA-512 and PLAIN,
certificates made at start), tocsin's clients through it, and the three ways to get it wrong failing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import unique
from tocsin.core import kafka as kafka_api
from tocsin.core import localkafka
from tocsin.core.config import KafkaConfig
from tocsin.core.localkafka import BrokerState, SecureSetup

SETUP = SecureSetup("tocsin", "s3cure-" + "p" * 16)


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[BrokerState]:
    data_dir = Path(tempfile.mkdtemp(prefix="tocsin-test-kafka-secure-"))
    try:
        yield localkafka.up(data_dir=data_dir, owner_pid=os.getpid(), remove_on_orphan=True, secure=SETUP)
    finally:
        localkafka.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def _cfg(state: BrokerState, mechanism: str = "SCRAM-SHA-512", password: str = SETUP.password,
         ca: str | None = None, protocol: str = "SASL_SSL") -> KafkaConfig:
    return KafkaConfig.model_validate({
        "bootstrap_servers": state.secure_bootstrap, "security_protocol": protocol,
        **({"sasl_mechanism": mechanism, "sasl_plain_username": SETUP.username,
            "sasl_plain_password": password} if protocol.startswith("SASL") else {}),
        "ssl_cafile": ca or state.ca_file, "request_timeout_ms": 10_000})


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_produce_and_consume_over_sasl_ssl(secure_broker, mechanism):
    cfg = _cfg(secure_broker, mechanism)
    topic = unique("secure")
    producer = kafka_api.producer(cfg)
    producer.send(topic, key=b"k", value=b"over tls").get(timeout=60)
    producer.close()
    consumer = kafka_api.consumer(cfg, group_id=None, auto_offset_reset="earliest")
    consumer.subscribe([topic])
    got = []
    for _ in range(60):
        for records in consumer.poll(timeout_ms=1000).values():
            got += [r.value for r in records]
        if got:
            break
    consumer.close()
    assert got == [b"over tls"]


def test_wrong_password_unknown_ca_and_plaintext_fail(secure_broker, tmp_path):
    from tests.sinks.notify.support import self_signed_cert

    other_ca, _ = self_signed_cert(tmp_path)
    for bad in (_cfg(secure_broker, password="wrong-password-000"), _cfg(secure_broker, ca=other_ca),
                _cfg(secure_broker, protocol="PLAINTEXT")):
        with pytest.raises(Exception):  # noqa: B017  (kafka-python raises several kinds here)
            producer = kafka_api.producer(bad.model_copy(update={"request_timeout_ms": 5000}))
            try:
                producer.send(unique("nope"), value=b"x").get(timeout=20)
            finally:
                producer.close(timeout=5)


def _run_cli(cfg: KafkaConfig, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"tocsin-{unique('cfg')}.yaml"
    dumped = cfg.model_dump(mode="json", exclude_none=True)
    if cfg.sasl_plain_password is not None:
        dumped["sasl_plain_password"] = cfg.sasl_plain_password.get_secret_value()
    path.write_text(yaml.safe_dump({"kafka": dumped}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "KAFKA_"))}
    return subprocess.run([sys.executable, "-m", "tocsin", "-c", str(path), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=Path(__file__).parents[2])


def test_topics_create_through_the_secure_broker(secure_broker, tmp_path):
    cfg = _cfg(secure_broker)
    out = _run_cli(cfg, tmp_path, "topics", "create")
    assert out.returncode == 0, out.stderr
    assert f"{cfg.topics.logs}\t" in out.stdout


def test_each_security_mistake_is_one_line_naming_the_setting(secure_broker, tmp_path):
    from tests.sinks.notify.support import self_signed_cert

    other_ca, _ = self_signed_cert(tmp_path)
    plaintext = KafkaConfig(bootstrap_servers=secure_broker.secure_bootstrap)
    cases = [
        (_cfg(secure_broker, password="wrong-password-000"),
         f"error: kafka.sasl_plain_password: the broker rejected the credentials for user {SETUP.username} "
         "(SASL authentication failed"),
        (_cfg(secure_broker, ca=other_ca), f"error: kafka.ssl_cafile: the broker's certificate is not signed by a CA "
                                           f"in {other_ca}"),
        (plaintext, f"error: kafka.security_protocol: {secure_broker.secure_bootstrap} speaks TLS but "
                    "security_protocol is PLAINTEXT (use SSL or SASL_SSL)"),
        (_cfg(secure_broker).model_copy(update={"bootstrap_servers": secure_broker.bootstrap}),
         f"error: kafka.security_protocol: {secure_broker.bootstrap} does not speak TLS"),
    ]
    for cfg, line in cases:
        out = _run_cli(cfg, tmp_path, "topics", "create")
        assert out.returncode == 3, (line, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line), (line, out.stderr)
        assert "Traceback" not in out.stderr and "wrong-password-000" not in out.stderr
