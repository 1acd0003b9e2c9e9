"""The local Kafka launcher, exercised for real: jars from the cache, real JVM brokers on free ports.

Every wait is a poll with a deadline (inside the launcher or ``_eventually``); nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError, UnknownTopicOrPartitionError

from scripts.kafka.cli import main
from scripts.kafka.local import (
    KafkaCluster,
    KafkaLocalError,
    KafkaNode,
    broker_ids,
    fetch_jars,
    new_cluster_id,
    run_kafka_tool,
)

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


async def _create_topic(bootstrap: str, name: str, *, partitions: int = 1, replication: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, replication)])
    finally:
        await admin.close()


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, value: bytes, **config: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **config)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records if r.value is not None]
        return values
    finally:
        await consumer.stop()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.1)  # poll interval, not a synchronisation delay


def _live_brokers(node: KafkaNode) -> list[int]:
    return sorted(broker_ids(node.host, node.port) or [])


def test_cluster_id_looks_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_cached_jars_need_no_maven(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = fetch_jars()  # downloads on a fresh machine, cached afterwards
    assert (lib / "kafka_2.13-4.1.1.jar").is_file()
    assert (lib / "slf4j-api-1.7.36.jar").is_file()
    monkeypatch.setenv("KAFKA_LOCAL_MVN", "/nonexistent/mvn")  # any Maven call would now fail
    started = time.monotonic()
    assert fetch_jars() == lib
    assert time.monotonic() - started < 1.0


def test_unpublished_version_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_LOCAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(KafkaLocalError, match=r"could not resolve org\.apache\.kafka:kafka_2\.13:0\.0\.1"):
        fetch_jars("0.0.1")
    assert not (tmp_path / "cache" / "lib").exists()  # no half-filled cache left behind


def test_busy_port_is_reported_before_starting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        node = KafkaNode(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(KafkaLocalError, match="already in use"):
            node.start()
    assert not node.running


def test_broker_death_at_startup_reports_the_log(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, jvm_args=["-XX:+NoSuchJvmOption"])
    with pytest.raises(KafkaLocalError, match="exited with code") as caught:
        node.start(timeout_s=30)
    assert "NoSuchJvmOption" in caught.value.details
    assert not node.running


async def test_single_node_survives_stop_and_kill(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path / "node", properties={"message.max.bytes": 2000})
    await asyncio.to_thread(node.start)
    try:
        bootstrap = node.bootstrap_servers
        assert broker_ids(node.host, node.port) == [1]
        assert "auto.create.topics.enable=false" in node.config_path.read_text()
        await _create_topic(bootstrap, "kept")
        await _produce(bootstrap, "kept", b"before-stop")

        with pytest.raises(MessageSizeTooLargeError):  # the property override reached the broker
            await _produce(bootstrap, "kept", b"x" * 5000)
        with pytest.raises(UnknownTopicOrPartitionError):  # auto-creation is off: it never appears
            await _produce(bootstrap, "not-created", b"x", request_timeout_ms=2000)
        assert "not-created" not in await _topics(bootstrap)

        assert node.stop() == 143  # JVM exit code after SIGTERM and a clean shutdown
        assert broker_ids(node.host, node.port) is None
        await asyncio.to_thread(node.start)  # same dir, same port, no reformat
        assert node.bootstrap_servers == bootstrap
        await _produce(bootstrap, "kept", b"after-stop")

        assert node.kill() == -9
        await asyncio.to_thread(node.start)
        assert "kept" in await _topics(bootstrap)
        assert await _consume(bootstrap, "kept", 2) == [b"before-stop", b"after-stop"]
    finally:
        node.stop()
    assert not node.running
    assert not (node.data_dir / "kafka.pid").exists()


def test_tools_classpath_runs_consumer_group_command(tmp_path: Path) -> None:
    with KafkaNode(tmp_path) as node:
        result = run_kafka_tool(CONSUMER_GROUP_COMMAND, ["--bootstrap-server", node.bootstrap_servers, "--list"])
    assert result.returncode == 0


def test_cli_reports_expected_errors_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["start", "--port", str(busy.getsockname()[1]), "--data-dir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("image-kafka: error: port")
    assert "\n" not in err


async def test_three_node_cluster_tolerates_a_killed_broker(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path, size=3)
    await asyncio.to_thread(cluster.start)
    try:
        bootstrap = cluster.bootstrap_servers
        assert len({n.cluster_id for n in cluster.nodes}) == 1
        assert _live_brokers(cluster.node(1)) == [1, 2, 3]
        await _create_topic(bootstrap, "replicated", partitions=3, replication=3)
        await _produce(bootstrap, "replicated", b"all-up")

        victim = cluster.node(3)
        victim.kill()

        async def victim_fenced() -> bool:
            return await asyncio.to_thread(_live_brokers, cluster.node(1)) == [1, 2]

        await _eventually(victim_fenced)  # the controller fences it after the 3 s broker session
        await _produce(bootstrap, "replicated", b"one-down")  # 2 in-sync replicas still meet min.insync.replicas

        await asyncio.to_thread(victim.start)
        assert sorted(await _consume(bootstrap, "replicated", 2)) == [b"all-up", b"one-down"]
    finally:
        await asyncio.to_thread(cluster.stop)
    assert not any(n.running for n in cluster.nodes)
