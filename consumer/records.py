"""How records and partitions are named in log lines: one spelling, so a log search by coordinates finds all."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from core.log_context import JobFields


def partition_name(partition: TopicPartition) -> str:
    """``topic[partition]``."""
    return f"{partition.topic}[{partition.partition}]"


def coordinates(record: ConsumerRecord) -> str:
    """``topic=… partition=… offset=… key=…``: where the record sits, and the image id it is keyed by."""
    return f"topic={record.topic} partition={record.partition} offset={record.offset} key={_key(record)}"


def log_fields(record: ConsumerRecord) -> JobFields:
    """The same as fields of a JSON line; the key is the image id, the job's until its event is decoded."""
    key = _key(record)
    return JobFields(topic=record.topic, partition=record.partition, offset=record.offset, key=key, job_id=key)


def _key(record: ConsumerRecord) -> str | None:
    return record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
