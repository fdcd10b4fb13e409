"""Session-scoped real infrastructure: an Apache Kafka broker and a ClickHouse engine.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else testcontainers' Kafka when a
Docker engine answers, else the local KRaft broker from docker/kafka (started
once for the run, stopped at the end). If none can be had the broker tests
fail with the reason: they never skip.

ClickHouse: ``CLICKHOUSE_URL`` if set, else testcontainers' ClickHouse when a
Docker engine answers, else the embedded engine (chdb) in a temp directory.
chdb allows one engine per process, so the whole run shares one path and each
test gets its own database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tocsin.app.config import TocsinConfig
from tocsin.core.errors import LocalKafkaError


def _docker_engine() -> bool:
    if not shutil.which("docker") or os.environ.get("TOCSIN_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a real broker for this test run."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from tocsin.core import localkafka

    data_dir = Path(tempfile.mkdtemp(prefix="tocsin-test-kafka-"))
    try:
        state = localkafka.up(data_dir=data_dir, owner_pid=os.getpid(), remove_on_orphan=True)
    except LocalKafkaError as exc:
        pytest.fail(f"no Kafka broker for the tests: {exc}", pytrace=False)
    os.environ["TOCSIN_TEST_KAFKA_DATA"] = str(data_dir)
    try:
        yield state.bootstrap
    finally:
        localkafka.down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def clickhouse_url() -> Iterator[str]:
    """URL of a real ClickHouse for this run: a server, or the embedded engine."""
    if os.environ.get("CLICKHOUSE_URL"):
        yield os.environ["CLICKHOUSE_URL"]
        return
    if _docker_engine():
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer() as ch:
            host, port = ch.get_container_host_ip(), ch.get_exposed_port(8123)
            yield f"http://{ch.username}:{ch.password}@{host}:{port}"
        return
    path = Path(tempfile.mkdtemp(prefix="tocsin-test-chdb-"))
    yield f"chdb://{path}"
    shutil.rmtree(path, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def make_config(kafka_bootstrap: str, clickhouse_url: str, **sections: object) -> TocsinConfig:
    """A config with this test's own topics and database, so tests never see each other's data."""
    run = unique("t")
    topics = {name: f"{run}.{name}" for name in ("logs", "metrics", "health", "alerts", "control", "deadletter",
                                                    "silences", "patterns")}
    data: dict[str, object] = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topics": {**topics, "partitions": 3}},
        "clickhouse": {"url": clickhouse_url, "database": run},
    }
    data.update(sections)
    return TocsinConfig.model_validate(data)


@pytest.fixture
def tocsin_config(kafka_bootstrap: str, clickhouse_url: str) -> TocsinConfig:
    """A config pointing at the session's broker and store, with fresh topics and database."""
    from tocsin.core.kafka import create_topics

    cfg = make_config(kafka_bootstrap, clickhouse_url)
    create_topics(cfg.kafka)
    return cfg


@pytest.fixture
def clickhouse_client(tocsin_config: TocsinConfig):
    """A clickhouse-connect client; the test's own database is ``tocsin_config.clickhouse.database``.

    The embedded engine's client is shared by the whole process, so code and
    tests qualify table names with the database instead of switching it.
    """
    from tocsin.core.clickhouse import connect

    client = connect(tocsin_config.clickhouse)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{tocsin_config.clickhouse.database}`")
