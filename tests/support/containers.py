"""The test services as containers (``--services=docker``): Kafka, PostgreSQL and an S3 store, set up like compose.yaml.

Written against testcontainers-python 4.15 (``testcontainers.core`` and ``testcontainers.community``; the old
top-level module paths warn, and warnings are errors here). Machines without a Docker engine never run this code;
``tests/test_services.py`` imports it with warnings as errors, so at least an import that would fail Docker users
before their first test fails here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tests.support.object_store import BUCKET, S3Server

KAFKA_IMAGE = "apache/kafka:4.1.1"  # the launcher's version (scripts/kafka/support.py) and compose.yaml's image
POSTGRES_IMAGE = "postgres:17-alpine"
S3_IMAGE = "chrislusf/seaweedfs:4.43"  # `weed mini -bucket` (4.22+) creates the bucket before it says it is ready

KAFKA_HOST_PORT = 29092  # the listener clients outside the container use, as in compose.yaml
KAFKA_STARTUP_TIMEOUT_S = 120
KAFKA_START_SCRIPT = "/tmp/testcontainers-start.sh"  # inside the container

# compose.yaml's kafka service, without what names hosts or places data (tests/test_compose.py keeps the two equal).
KAFKA_BROKER_ENVIRONMENT: dict[str, str] = {
    "KAFKA_NODE_ID": "1",
    "KAFKA_PROCESS_ROLES": "broker,controller",
    "KAFKA_LISTENERS": f"PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:{KAFKA_HOST_PORT}",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,HOST:PLAINTEXT",
    "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
    "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "1000",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
}
# What differs from compose.yaml: one container alone, so the controller is itself; a throwaway cluster id.
KAFKA_CONTAINER_ENVIRONMENT: dict[str, str] = {
    **KAFKA_BROKER_ENVIRONMENT,
    "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
    "CLUSTER_ID": "qyPbCJPNQIeKHJYmCXzUrQ",
    "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
}


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """Yield the bootstrap address of an ``apache/kafka`` broker (KRaft, one node) for the ``with`` block.

    The address a client is sent back to must hold the port Docker mapped, known only once the container runs:
    so the container waits for a start script that exports ``KAFKA_ADVERTISED_LISTENERS`` and then runs the
    image's own ``/etc/kafka/docker/run`` (testcontainers' own KafkaContainer does the same for cp-kafka only).
    """
    container = DockerContainer(KAFKA_IMAGE, env=dict(KAFKA_CONTAINER_ENVIRONMENT))
    container.with_exposed_ports(KAFKA_HOST_PORT)
    container.with_command(
        ["sh", "-c", f"while [ ! -f {KAFKA_START_SCRIPT} ]; do sleep 0.1; done; exec bash {KAFKA_START_SCRIPT}"]
    )
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(KAFKA_HOST_PORT)
        script = (
            "#!/bin/bash\n"
            f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:9092,HOST://{host}:{port}\n"
            "exec /etc/kafka/docker/run\n"
        )
        container.copy_into_container(script.encode(), KAFKA_START_SCRIPT, mode=0o755)
        ready = LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(KAFKA_STARTUP_TIMEOUT_S)
        ready.wait_until_ready(container)
        yield f"{host}:{port}"


@contextlib.contextmanager
def postgres_container() -> Iterator[str]:
    """Yield the URL (``postgresql://images:images@HOST:PORT/images``) of a PostgreSQL 17 server."""
    with PostgresContainer(POSTGRES_IMAGE, username="images", password="images", dbname="images", driver=None) as pg:
        url: str = pg.get_connection_url()
        yield url


S3_PORT = 8333
S3_ACCESS_KEY_ID = "images"  # a throwaway store's keys, as in compose.yaml
S3_SECRET_ACCESS_KEY = "images-secret"
S3_STARTUP_TIMEOUT_S = 120


@contextlib.contextmanager
def s3_container(bucket: str = BUCKET) -> Iterator[S3Server]:
    """Yield a SeaweedFS S3 endpoint (``weed mini``) with ``bucket`` made, and admin keys from the environment."""
    container = DockerContainer(
        S3_IMAGE,
        # weed's S3 gateway makes an admin identity of these two variables.
        env={"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY},
        command=f"mini -dir=/data -bucket={bucket}",
        _wait_strategy=LogMessageWaitStrategy("All enabled components are running").with_startup_timeout(
            S3_STARTUP_TIMEOUT_S
        ),
    )
    container.with_exposed_ports(S3_PORT)
    with container:
        endpoint = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(S3_PORT)}"
        yield S3Server(endpoint, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, bucket)
