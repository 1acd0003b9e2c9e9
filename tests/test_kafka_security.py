"""Kafka with TLS, SASL logins and ACLs: each service logs in as its own user and may do only its own job.

The broker is the launcher's ``--secure`` one (SASL_SSL only, a CA made with keytool at start, the pipeline's
ACLs), whatever broker the rest of the suite uses.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from core.clients import running
from core.jobs import JobStatus, JobStore
from core.kafka_connection import kafka_connection
from core.settings import Settings
from core.topics import ensure_topics, topic_partitions
from scripts.kafka.cli import main as kafka_cli
from scripts.replay.group_offsets import GroupOffsets
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.brokers import SecuredBroker, client_certificate, secured_broker
from tests.support.image_server import ImageServer
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    with secured_broker(tmp_path_factory.mktemp("secured-kafka")) as broker:
        yield broker


def logged_in(secured: SecuredBroker, user: str, tmp_path: Path, **overrides: object) -> Settings:
    """Test settings on the ACLs' topic and group names, logging in as ``user``."""
    names = secured.names
    base = worker_test_settings(
        secured.bootstrap_servers,
        tmp_path,
        images_topic=names.images_topic,
        dlq_topic=names.dlq_topic,
        consumer_group=names.consumer_group,
        **overrides,
    )
    return secured.login(user, base)


async def produce(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(**kafka_connection(settings), enable_idempotence=True, request_timeout_ms=10_000)
    async with running(producer):
        await producer.send_and_wait(topic, b"{}", key=b"intruder")


async def read_partition(settings: Settings, topic: str, *, group: str | None = None) -> None:
    consumer = AIOKafkaConsumer(**kafka_connection(settings), group_id=group, enable_auto_commit=False)
    async with running(consumer):
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.getmany(partition, timeout_ms=5000)
        if group is not None:
            await consumer.commit({partition: 0})


async def test_api_worker_and_replay_run_end_to_end_each_as_its_own_user(
    secured: SecuredBroker, tmp_path: Path, images: ImageServer
) -> None:
    names = secured.names
    worker_settings = logged_in(secured, names.worker_user, tmp_path)
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    api = ApiProcess(logged_in(secured, names.api_user, tmp_path), tmp_path / "api.log", free_port())
    jobs = JobStore.from_url(worker_settings.database_url)
    try:
        await wait_until_ready(api.base_url)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            accepted = await client.post("/images", json={"url": images.url("/img/1.png"), "filter": "invert"})
            assert accepted.status_code == 202, accepted.text

        async def done() -> bool:
            job = await jobs.get(accepted.json()["id"])
            return job is not None and job.status is JobStatus.DONE

        await eventually(done, what="the job done through the secured broker")
        worker.terminate()
        assert worker.wait(timeout_s=30) == 0, worker.log()
    finally:
        api.stop()
        worker.stop()
        await jobs.close()
    assert "Processing image" in worker.log()

    replay_settings = logged_in(secured, names.replay_user, tmp_path)
    reset = _replay(replay_settings, "reset", "--topic", names.images_topic, "--to-earliest", "--execute")
    assert reset.returncode == 0, reset.stderr
    async with GroupOffsets(replay_settings, names.consumer_group, timeout_s=10) as kafka:
        committed = await kafka.committed_offsets()
    assert committed, "the workers' group committed on the secured broker"
    assert set(committed.values()) == {0}, committed
    redrive = _replay(replay_settings, "redrive")  # a dry run reads the dead letters and the progress group
    assert redrive.returncode == 0, redrive.stderr

    refused = _replay(
        logged_in(secured, names.api_user, tmp_path), "reset", "--topic", names.images_topic, "--to-earliest"
    )
    assert refused.returncode == 1
    assert "GroupAuthorizationFailedError" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_launcher_reports_its_secured_broker_answering(
    secured: SecuredBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kafka_cli(["status", "--data-dir", str(secured.data_dir)]) == 0
    assert "answering, live brokers [1]" in capsys.readouterr().out


def _replay(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "image-replay"), *argv]
    return subprocess.run(command, env=settings.as_environment(), capture_output=True, text=True, timeout=120)


async def test_each_login_may_only_do_its_own_job(secured: SecuredBroker, tmp_path: Path) -> None:
    names = secured.names
    api, worker = (logged_in(secured, user, tmp_path) for user in (names.api_user, names.worker_user))
    await ensure_topics(worker)

    await produce(api, names.images_topic)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(api, names.dlq_topic)
    with pytest.raises(TopicAuthorizationFailedError):
        await read_partition(api, names.images_topic)
    with pytest.raises(GroupAuthorizationFailedError):
        await read_partition(api, names.images_topic, group=names.consumer_group)

    await read_partition(worker, names.images_topic, group=names.consumer_group)
    await produce(worker, names.dlq_topic)
    with pytest.raises(TopicAuthorizationFailedError):  # a worker's login cannot inject events
        await produce(worker, names.images_topic)


def unsigned_token(subject: str) -> str:
    """An unsecured JWS (``alg: none``), what Kafka's unsecured OAUTHBEARER validator takes."""

    def part(claims: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 3600})}."


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"])
async def test_every_supported_login_mechanism_reaches_the_broker(
    secured: SecuredBroker, tmp_path: Path, mechanism: str
) -> None:
    settings = logged_in(secured, secured.names.worker_user, tmp_path, topic_partitions=1)
    update: dict[str, object] = {"kafka_sasl_mechanism": mechanism}
    if mechanism == "OAUTHBEARER":
        token = tmp_path / "token"
        token.write_text(unsigned_token(secured.names.worker_user) + "\n", encoding="utf-8")
        update |= {"kafka_sasl_username": None, "kafka_sasl_password": None, "kafka_sasl_oauth_token_file": token}
    settings = Settings.model_validate({**settings.model_dump(), **update})
    await ensure_topics(settings)
    assert await topic_partitions(settings, secured.names.dlq_topic)


async def test_a_client_certificate_from_the_ca_is_taken_and_one_from_elsewhere_refused(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    settings = logged_in(secured, secured.names.worker_user, tmp_path)
    ours, stranger = (
        client_certificate(secured.listener, tmp_path, name, from_the_ca=from_the_ca)
        for name, from_the_ca in (("image-worker", True), ("stranger", False))
    )
    with_ours, with_stranger = (
        Settings.model_validate({**settings.model_dump(), "kafka_ssl_certfile": certificate})
        for certificate in (ours, stranger)
    )
    assert await topic_partitions(with_ours, secured.names.images_topic)
    with pytest.raises(KafkaConnectionError):  # the broker checked the certificate the client showed
        await topic_partitions(with_stranger, secured.names.images_topic)


async def test_a_wrong_password_or_no_tls_does_not_get_in(secured: SecuredBroker, tmp_path: Path) -> None:
    settings = logged_in(secured, secured.names.worker_user, tmp_path)
    wrong_password = Settings.model_validate({**settings.model_dump(), "kafka_sasl_password": "not-the-password"})
    plaintext = Settings.model_validate(
        {**settings.model_dump(), "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": None}
    )
    for refused in (wrong_password, plaintext):
        with pytest.raises(KafkaConnectionError):
            await topic_partitions(refused, secured.names.images_topic)
