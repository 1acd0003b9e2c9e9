"""How records and partitions are named in log lines: one spelling, so a log search by coordinates finds all."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition


def partition_name(partition: TopicPartition) -> str:
    """``topic[partition]``."""
    return f"{partition.topic}[{partition.partition}]"


def coordinates(record: ConsumerRecord) -> str:
    """``topic=… partition=… offset=… key=…``: where the record sits, and the image id it is keyed by."""
    key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
    return f"topic={record.topic} partition={record.partition} offset={record.offset} key={key}"
