"""``image-replay reset`` against the real broker, checked against Kafka's own ``kafka-consumer-groups``.

The shared log: a 3-partition topic, 10 records per partition stamped one hour apart (the first twelve hours
ago); partition 1's first two records deleted (log start 2); the group committed 6 on partition 0, 3 on
partition 1 and nothing on partition 2. Record 2 of partition 0 is not an event.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from core.tables import processed_events_table
from core.topics import ensure_topics
from schemas import decode_event, encode_event
from scripts.kafka.local import run_kafka_tool
from scripts.replay import cli as replay
from scripts.replay.offset_reset import configure_parser, run
from tests.support.events import url_event
from tests.support.settings import make_settings

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
HOUR_MS = 3_600_000
PER_PARTITION = 10
Plan = dict[tuple[str, int], int]


@dataclass(frozen=True)
class SharedLog:
    settings: Settings
    first_timestamp_ms: int

    @property
    def topic(self) -> str:
        return self.settings.images_topic


def reset_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


async def produce_to_partitions(settings: Settings, records: list[tuple[int, bytes, int | None]]) -> None:
    """Append ``(partition, value, timestamp_ms)`` records in order and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for partition, value, timestamp_ms in records:
            await producer.send_and_wait(settings.images_topic, value, partition=partition, timestamp_ms=timestamp_ms)
    finally:
        await producer.stop()


async def commit_as_group(settings: Settings, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(settings.images_topic, p) for p in offsets])
        await consumer.commit({TopicPartition(settings.images_topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def shared_log(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> SharedLog:
    settings = make_settings(kafka_bootstrap, tmp_path_factory.mktemp("reset"))
    await ensure_topics(settings)
    workers = JobStore.from_url(settings.database_url)  # the workers' database, as image-migrate leaves it
    await upgrade(workers.engine)
    await workers.close()
    first_ms = (int(dt.datetime.now(dt.UTC).timestamp()) - 12 * 3600) * 1000
    records: list[tuple[int, bytes, int | None]] = []
    for partition in range(3):
        for index in range(PER_PARTITION):
            value = encode_event(url_event(f"http://x.example/{partition}/{index}.png"))
            records.append(
                (partition, b"not an event" if (partition, index) == (0, 2) else value, first_ms + index * HOUR_MS)
            )
    await produce_to_partitions(settings, records)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(settings.images_topic, 1): RecordsToDelete(2)})
    finally:
        await admin.close()
    await commit_as_group(settings, {0: 6, 1: 3})
    return SharedLog(settings, first_ms)


async def read_values(settings: Settings, partition: TopicPartition, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        async with asyncio.timeout(20):
            while len(values) < count:
                batch = await consumer.getmany(partition, timeout_ms=500)
                values.extend(record.value for record in batch.get(partition, []))
        return values
    finally:
        await consumer.stop()


async def kafka_tool(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    args = ["--bootstrap-server", settings.kafka_bootstrap_servers, "--group", settings.consumer_group, *argv]
    return await asyncio.to_thread(run_kafka_tool, CONSUMER_GROUP_COMMAND, ["--reset-offsets", *args], check=False)


async def kafka_plan(settings: Settings, *argv: str) -> Plan:
    """What ``kafka-consumer-groups --reset-offsets ... --dry-run`` prints: GROUP TOPIC PARTITION NEW-OFFSET rows."""
    result = await kafka_tool(settings, *argv, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Error" not in result.stdout, result.stdout
    rows = re.findall(rf"^{re.escape(settings.consumer_group)}\s+(\S+)\s+(\d+)\s+(\d+)\s*$", result.stdout, re.M)
    assert rows, result.stdout
    return {(topic, int(partition)): int(offset) for topic, partition, offset in rows}


async def our_document(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code = await run(settings, reset_args(*argv, "--json"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document: dict[str, object] = json.loads(captured.out)
    return document


def targets(document: dict[str, object]) -> Plan:
    rows = document["partitions"]
    assert isinstance(rows, list)
    return {(row["topic"], row["partition"]): row["target"] for row in rows}


def iso(timestamp_ms: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


SPECS: dict[str, Callable[[SharedLog], list[str]]] = {
    "to-earliest": lambda log: ["--topic", log.topic, "--to-earliest"],
    "to-latest": lambda log: ["--topic", log.topic, "--to-latest"],
    "to-current": lambda log: ["--topic", log.topic, "--to-current"],
    "to-offset-below-start": lambda log: ["--topic", log.topic, "--to-offset", "1"],
    "to-offset-mid": lambda log: ["--topic", log.topic, "--to-offset", "7"],
    "to-offset-beyond-end": lambda log: ["--topic", log.topic, "--to-offset", "100"],
    "shift-back-clamped": lambda log: ["--topic", f"{log.topic}:0,1", "--shift-by", "-5"],
    "shift-forward": lambda log: ["--topic", f"{log.topic}:0,1", "--shift-by", "3"],
    "shift-beyond-end": lambda log: ["--topic", f"{log.topic}:0,1", "--shift-by", "50"],
    "to-datetime-mid": lambda log: [
        "--topic",
        log.topic,
        "--to-datetime",
        iso(log.first_timestamp_ms + 4 * HOUR_MS + 1),
    ],
    "to-datetime-exact": lambda log: ["--topic", log.topic, "--to-datetime", iso(log.first_timestamp_ms + 3 * HOUR_MS)],
    "to-datetime-past": lambda log: ["--topic", log.topic, "--to-datetime", iso(log.first_timestamp_ms - 24 * HOUR_MS)],
    "to-datetime-future": lambda log: [
        "--topic",
        log.topic,
        "--to-datetime",
        iso(log.first_timestamp_ms + 48 * HOUR_MS),
    ],
    "by-duration": lambda log: ["--topic", log.topic, "--by-duration", "PT7H30M"],
    "by-duration-none-newer": lambda log: ["--topic", log.topic, "--by-duration", "PT1M"],
    "all-topics": lambda log: ["--all-topics", "--to-earliest"],
    "one-partition": lambda log: ["--topic", f"{log.topic}:2", "--to-offset", "3"],
}


@pytest.mark.parametrize("spec", list(SPECS))
async def test_plan_equals_kafkas_own_tool(
    shared_log: SharedLog, capsys: pytest.CaptureFixture[str], spec: str
) -> None:
    argv = SPECS[spec](shared_log)
    ours = await our_document(shared_log.settings, capsys, *argv)
    assert targets(ours) == await kafka_plan(shared_log.settings, *argv)
    assert ours["executed"] is False


async def test_plan_rows_and_idempotency_counts(shared_log: SharedLog, capsys: pytest.CaptureFixture[str]) -> None:
    # Mark three of the events in partition 0's replay range processed, as a worker would have.
    values = await read_values(shared_log.settings, TopicPartition(shared_log.topic, 0), PER_PARTITION)
    event_ids = [str(decode_event(value).event_id) for value in values[:6] if value != b"not an event"][:3]
    store = JobStore.from_url(shared_log.settings.database_url)
    await upgrade(store.engine)
    try:
        now = dt.datetime.now(dt.UTC)
        async with store.engine.begin() as connection:
            await connection.execute(
                processed_events_table.insert(),
                [{"event_id": event_id, "image_id": event_id, "processed_at": now} for event_id in event_ids],
            )
        document = await our_document(shared_log.settings, capsys, "--topic", shared_log.topic, "--to-earliest")
    finally:
        await store.close()
    rows = {row["partition"]: row for row in document["partitions"]}  # type: ignore[attr-defined]
    assert rows[0] == {
        "topic": shared_log.topic, "partition": 0, "committed": 6, "target": 0, "log_start": 0, "log_end": 10,
        "redelivered": 6, "skipped_over": 0, "already_processed": 3, "undecodable": 1,
    }  # fmt: skip
    assert (rows[1]["committed"], rows[1]["target"], rows[1]["redelivered"]) == (3, 2, 1)
    assert (rows[2]["committed"], rows[2]["target"], rows[2]["redelivered"]) == (None, 0, 0)
    assert document["totals"] == {"redelivered": 7, "skipped_over": 0, "already_processed": 3, "undecodable": 1}
    # The human table says the same.
    assert await run(shared_log.settings, reset_args("--topic", shared_log.topic, "--to-earliest")) == 0
    table = capsys.readouterr().out
    assert "7 record(s) will be delivered again; 3 were processed and will be skipped" in table
    assert re.search(rf"{shared_log.topic}\s+0\s+6\s+0\s+0\s+10\s+6\s+3", table), table


async def test_shift_by_without_committed_offset_is_refused_like_kafka(
    shared_log: SharedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = await kafka_tool(shared_log.settings, "--topic", shared_log.topic, "--shift-by", "-1", "--dry-run")
    assert theirs.returncode == 1
    assert f"Cannot shift offset for partition {shared_log.topic}-2" in theirs.stderr
    assert await run(shared_log.settings, reset_args("--topic", shared_log.topic, "--shift-by", "-1")) == 1
    assert f"cannot shift partition {shared_log.topic}-2" in capsys.readouterr().err


async def test_export_then_from_file_round_trips(
    shared_log: SharedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan_csv = tmp_path / "plan.csv"
    argv = ["--topic", shared_log.topic, "--to-offset", "1"]
    exported = await our_document(shared_log.settings, capsys, *argv, "--export", str(plan_csv))
    theirs = await kafka_tool(shared_log.settings, *argv, "--dry-run", "--export")
    assert theirs.returncode == 0, theirs.stderr
    assert sorted(plan_csv.read_text().split()) == sorted(theirs.stdout.split())  # Kafka's own CSV format
    replayed = await our_document(shared_log.settings, capsys, "--from-file", str(plan_csv))
    assert targets(replayed) == targets(exported)
    assert targets(replayed) == await kafka_plan(shared_log.settings, "--from-file", str(plan_csv))


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Make ``Settings()`` (what ``image-replay`` builds) read ``settings``."""
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--topic", "no-such-topic", "--to-earliest"], "unknown topic(s): no-such-topic"),
        (["--topic", "{topic}:0,7", "--to-earliest"], "unknown partition(s): {topic}-7"),
        (["--topic", "{topic}:x", "--to-earliest"], "invalid partition 'x'"),
        (["--topic", "{topic}", "--to-datetime", "2026-01-01T00:00:00"], "has no zone"),
        (["--topic", "{topic}", "--by-duration", "1 hour"], "is not an ISO-8601 duration"),
        (["--from-file", "{bad_csv}"], "line 2: expected topic,partition,offset"),
        (["--from-file", "{missing_csv}"], "cannot read --from-file"),
    ],
)
def test_bad_inputs_exit_1_with_one_line(
    shared_log: SharedLog,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(f"{shared_log.topic},0,1\n{shared_log.topic},0\n")
    names = {"topic": shared_log.topic, "bad_csv": str(bad_csv), "missing_csv": str(tmp_path / "missing.csv")}
    use_settings(monkeypatch, shared_log.settings)
    assert replay.main(["reset", *(arg.format(**names) for arg in argv)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("image-replay reset: ")
    assert message.format(**names) in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--to-earliest"],  # no scope
        ["--topic", "t", "--to-earliest", "--to-latest"],  # two specs
        ["--topic", "t", "--all-topics", "--to-earliest"],  # two scopes
        ["--topic", "t", "--to-offset", "x"],
        ["--from-file", "plan.csv", "--topic", "t"],
    ],
)
def test_usage_errors_exit_2(
    shared_log: SharedLog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    use_settings(monkeypatch, shared_log.settings)
    try:
        code = replay.main(["reset", *argv])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_console_script(shared_log: SharedLog) -> None:
    executable = shutil.which("image-replay", path=str(Path(sys.executable).parent))
    assert executable is not None, "image-replay is not installed in this environment"
    env = {**os.environ, **shared_log.settings.as_environment()}
    argv = [executable, "reset", "--topic", shared_log.topic, "--to-offset", "4", "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    plan = targets(json.loads(done.stdout))
    assert plan == {(shared_log.topic, 0): 4, (shared_log.topic, 1): 4, (shared_log.topic, 2): 4}
    argv = [executable, "reset", "--topic", "no-such-topic", "--to-earliest"]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "image-replay reset: unknown topic(s): no-such-topic\n"


@pytest.mark.parametrize("database", ["missing", "empty"])
async def test_a_database_without_job_tables_is_refused_and_nothing_is_created(
    shared_log: SharedLog, tmp_path: Path, capsys: pytest.CaptureFixture[str], database: str
) -> None:
    """Planning against the wrong database would say "nothing was processed" and be wrong without a word."""
    path = tmp_path / "elsewhere" / "images.db"
    if database == "empty":
        path.parent.mkdir()
        sqlite3.connect(path).close()
    settings = shared_log.settings.model_copy(update={"database_url": f"sqlite:///{path}"})
    code = await run(settings, reset_args("--topic", shared_log.topic, "--to-earliest", "--json"))
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert "set DATABASE_URL to the workers' database" in err
    assert path.exists() is (database == "empty"), "no database or folder is created"
    assert path.parent.exists() is (database == "empty")


def test_from_an_empty_folder_without_database_url_it_uses_the_documented_place(
    shared_log: SharedLog, tmp_path: Path
) -> None:
    """No DATABASE_URL: the documented ~/.local/share/image-pipeline/images.db, never ./data of the working folder.

    Here that home has no workers' database yet, so the command exits 1 with one line and creates nothing.
    """
    executable = shutil.which("image-replay", path=str(Path(sys.executable).parent))
    assert executable is not None
    home, folder = tmp_path / "home", tmp_path / "empty"
    home.mkdir()
    folder.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "STORAGE_DIR")}
    env |= {
        "HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": shared_log.settings.kafka_bootstrap_servers,
        "CONSUMER_GROUP": shared_log.settings.consumer_group,
    }
    argv = [executable, "reset", "--topic", shared_log.topic, "--to-earliest"]
    done = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{home}/.local/share/image-pipeline/images.db does not exist" in done.stderr
    assert list(folder.iterdir()) == [], "nothing is created in the working folder"
    assert list(home.iterdir()) == [], "nor in the home folder"
