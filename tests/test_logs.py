"""Kafka outages are reported, not flooded: a start, a count per interval, an end."""

from __future__ import annotations

import logging

import pytest

from core.logs import KAFKA_TROUBLE, OutageReport


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def kafka_line(message: str = "Unable connect to %r", *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, message, args or ("broker:9092",), None)


def test_an_outage_is_its_first_line_then_one_count_per_interval_then_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    report = OutageReport(interval_s=10.0, clock=clock, watch=False)
    shown = []
    for second in range(30):  # 60 lines a second for 30 s, as a worker logged them
        clock.now_s = 1000.0 + second
        for _ in range(60):
            record = kafka_line()
            if report.filter(record):
                shown.append(record.getMessage())
    assert len(shown) == 3, shown
    assert shown[0].startswith("Kafka unavailable: Unable connect to 'broker:9092'")
    assert shown[1].startswith("Kafka still unavailable after 10 s (599 lines held back)")
    assert report.over() is False, "the outage is not over while lines keep coming"

    clock.now_s += 10.0
    with caplog.at_level(logging.WARNING, logger="core.logs"):
        assert report.over() is True
    assert [r.getMessage() for r in caplog.records] == ["Kafka available again: the trouble lasted 29 s (1800 lines)"]
    assert report.over() is True, "the end is said once"

    record = kafka_line()
    assert report.filter(record), "the next outage starts a new report"
    assert record.getMessage().startswith("Kafka unavailable:")


def test_other_lines_pass_and_the_projects_own_kafka_lines_join_the_report() -> None:
    report = OutageReport(interval_s=10.0, clock=Clock(), watch=False)
    ordinary = logging.LogRecord("consumer.worker", logging.WARNING, __file__, 1, "a job failed", None, None)
    quiet = logging.LogRecord("aiokafka.conn", logging.INFO, __file__, 1, "connected", None, None)
    assert report.filter(ordinary)
    assert report.filter(quiet)
    assert ordinary.getMessage() == "a job failed"

    ours = logging.LogRecord("consumer.cli", logging.WARNING, __file__, 1, "Kafka not reachable", None, None)
    ours.__dict__.update(KAFKA_TROUBLE)
    assert report.filter(ours)
    assert ours.getMessage() == "Kafka unavailable: Kafka not reachable; similar lines are summed up every 10 s"
    assert not report.filter(kafka_line()), "aiokafka's lines now belong to the same outage"
