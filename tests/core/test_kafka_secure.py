"""Kafka over TLS and SASL for real: the local broker with a SASL_SSL listener (SCRAM-SHA-512 and PLAIN,
certificates made at start), tocsin's clients through it, and the three ways to get it wrong failing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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
