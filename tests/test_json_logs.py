"""``LOG_FORMAT=json`` end to end: a real ``image-api`` and ``image-worker`` write nothing but JSON lines, and each
worker line about a job names its record and event in fields of their own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.jobs import JobStatus, JobStore
from schemas import decode_event
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration


def json_lines(log: str) -> list[dict[str, Any]]:
    """Every line of ``log`` as a JSON object; the assertion names the first line that is not one."""
    lines = []
    for number, text in enumerate(log.splitlines(), 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {text!r}") from None
        assert isinstance(line, dict), f"line {number} is JSON but no object: {text!r}"
        assert {"time", "level", "logger", "message"} <= line.keys(), text
        lines.append(line)
    return lines


async def test_every_line_is_json_and_a_jobs_lines_carry_its_record(
    kafka_bootstrap: str, tmp_path: Path, images: ImageServer
) -> None:
    settings = worker_test_settings(kafka_bootstrap, tmp_path, log_format="json")
    api = ApiProcess(settings, tmp_path / "api.log", free_port(), "--log-level", "info")
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    jobs = JobStore.from_url(settings.database_url)
    try:
        await wait_until_ready(api.base_url)
        ids = {}
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for outcome, path in ((JobStatus.DONE, "/img/4.png"), (JobStatus.FAILED, "/missing.png")):
                accepted = await client.post("/images", json={"url": images.url(path), "filter": "invert"})
                assert accepted.status_code == 202, accepted.text
                ids[accepted.json()["id"]] = outcome

        async def finished() -> bool:
            states = {image_id: await jobs.get(image_id) for image_id in ids}
            return all(job is not None and job.status is ids[image_id] for image_id, job in states.items())

        await eventually(finished, what="one job done, the other dead-lettered and failed")
        worker.terminate()  # a clean stop: its shutdown lines are checked too
        assert await asyncio.to_thread(worker.wait, 30.0) == 0, worker.log()
    finally:
        api.stop()
        worker.stop()
        await jobs.close()

    worker_lines = json_lines(worker.log())
    records = {record.key.decode(): record for record in await read_topic(settings, settings.images_topic)}
    assert set(records) == set(ids)
    for image_id, record in records.items():
        expected = {
            "job_id": image_id,
            "event_id": str(decode_event(record.value).event_id),
            "topic": settings.images_topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": image_id,
        }
        about = [line for line in worker_lines if image_id in line["message"]]
        assert about, f"no line names job {image_id}"
        for line in about:
            assert {name: line.get(name) for name in expected} == expected, line
            assert line["trace_id"] is None, "no tracing yet"
    assert {line["job_id"] for line in worker_lines if "job_id" in line} == set(ids)
    [dead_letter] = [line for line in worker_lines if "sent to" in line["message"]]
    assert dead_letter["level"] == "ERROR"
    assert ids[dead_letter["job_id"]] is JobStatus.FAILED
    assert not any("job_id" in line for line in worker_lines if "stopped" in line["message"]), "only job lines"

    api_lines = json_lines(api.log())
    assert any(line["logger"] == "uvicorn.access" and "POST /images" in line["message"] for line in api_lines), (
        "uvicorn's access lines are JSON too"
    )
