"""Kafka outages are reported, not flooded: a start, a count per interval, an end. JSON lines carry the job's
fields; text lines stay as they were."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
from typing import Any

import pytest

from core import log_context
from core.log_context import JobFields, JobFieldsFilter
from core.logs import FORMAT, KAFKA_TROUBLE, OutageReport, json_formatter

JOB_KEYS = {"job_id", "event_id", "topic", "partition", "offset", "key", "trace_id"}


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


class Lines:
    """A logger whose lines land in memory, through the filter and a formatter as configure_logging installs them."""

    def __init__(self, formatter: logging.Formatter, name: str = "tests.lines") -> None:
        self.stream = io.StringIO()
        handler = logging.StreamHandler(self.stream)
        handler.addFilter(JobFieldsFilter())
        handler.setFormatter(formatter)
        self.logger = logging.getLogger(name)
        self.logger.handlers = [handler]
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)

    def text(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text()]


def job(offset: int = 7) -> JobFields:
    return JobFields(topic="images-x", partition=2, offset=offset, key="img-1", job_id="img-1")


def test_a_json_line_has_time_level_logger_message_and_no_job_fields_outside_a_job() -> None:
    lines = Lines(json_formatter())
    lines.logger.warning("assigned %s", ["images[0]"], extra=KAFKA_TROUBLE)

    [line] = lines.json()
    assert line["level"] == "WARNING"
    assert line["logger"] == "tests.lines"
    assert line["message"] == "assigned ['images[0]']"
    time = dt.datetime.fromisoformat(line["time"])
    assert time.utcoffset() == dt.timedelta(0), "UTC, whatever the host's zone"
    assert abs(dt.datetime.now(dt.UTC) - time) < dt.timedelta(minutes=1)
    assert not JOB_KEYS & line.keys()
    assert "exception" not in line
    assert "kafka_trouble" not in line, "an internal marker, not a field"


def test_a_job_line_carries_the_records_fields_then_the_events_and_its_exception_text() -> None:
    lines = Lines(json_formatter())
    with log_context.about(job()):
        lines.logger.info("before decoding")
        log_context.name_event(event_id="ev-9", job_id="img-1")
        try:
            raise ValueError("no such filter")
        except ValueError:
            lines.logger.exception("Processing record failed")
    lines.logger.info("after the job")

    before, failed, after = lines.json()
    assert {key: before[key] for key in JOB_KEYS} == {
        "job_id": "img-1",
        "event_id": None,
        "topic": "images-x",
        "partition": 2,
        "offset": 7,
        "key": "img-1",
        "trace_id": None,
    }
    assert failed["event_id"] == "ev-9"
    assert failed["offset"] == 7
    assert "ValueError: no such filter" in failed["exception"]
    assert failed["exception"].startswith("Traceback")
    assert not JOB_KEYS & after.keys(), "the fields end with the job"


async def test_concurrent_jobs_keep_their_own_fields() -> None:
    lines = Lines(json_formatter())
    both_started = asyncio.Barrier(2)

    async def run(offset: int) -> None:
        with log_context.about(job(offset)):
            log_context.name_event(event_id=f"ev-{offset}", job_id=f"img-{offset}")
            await both_started.wait()  # each logs while the other's fields are bound too
            lines.logger.info("job at %d", offset)

    await asyncio.gather(run(1), run(2))
    seen = {line["message"]: (line["offset"], line["event_id"], line["job_id"]) for line in lines.json()}
    assert seen == {"job at 1": (1, "ev-1", "img-1"), "job at 2": (2, "ev-2", "img-2")}


def test_text_lines_are_unchanged_inside_a_job() -> None:
    inside, outside = Lines(logging.Formatter(FORMAT), "tests.inside"), Lines(logging.Formatter(FORMAT), "tests.out")
    with log_context.about(job()):
        inside.logger.info("Skipping event %s: already processed", "ev-9")
    outside.logger.info("Skipping event %s: already processed", "ev-9")

    [with_job], [without] = inside.text(), outside.text()
    assert with_job.split(" INFO ", 1)[1] == "tests.inside: Skipping event ev-9: already processed"
    assert without.split(" INFO ", 1)[1] == "tests.out: Skipping event ev-9: already processed"
    assert "img-1" not in with_job
