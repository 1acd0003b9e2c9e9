"""Credentials in a URL stay in the event: no log line, error, dead letter or API answer shows them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.jobs import JobStatus, JobStore
from core.urls import redact_url
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.image_server import ImageServer
from tests.support.kafka_reads import read_topic
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration

SECRETS = ("secret", "token=abc")


def test_urls_are_shown_without_user_info_and_with_query_values_masked() -> None:
    assert redact_url("http://user:secret@host:8080/x.png?token=abc&size=2&flag") == (
        "http://host:8080/x.png?token=***&size=***&flag"
    )
    assert redact_url("https://example.com/a.png") == "https://example.com/a.png"


async def test_a_job_with_credentials_in_its_url_shows_them_nowhere(
    kafka_bootstrap: str, tmp_path: Path, images: ImageServer
) -> None:
    settings = worker_test_settings(kafka_bootstrap, tmp_path, max_attempts=1)
    api = ApiProcess(settings, tmp_path / "api.log", free_port())
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    jobs = JobStore.from_url(settings.database_url)
    answers: list[str] = []
    try:
        await wait_until_ready(api.base_url)
        port = images.url("/").split(":")[2].split("/")[0]
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            ids = {}
            for path in ("/img/4.png", "/missing.png"):
                url = f"http://user:secret@127.0.0.1:{port}{path}?token=abc"
                accepted = await client.post("/images", json={"url": url, "filter": "invert"})
                assert accepted.status_code == 202, accepted.text
                answers.append(accepted.text)
                ids[path] = accepted.json()["id"]

            async def finished() -> bool:
                states = [await jobs.get(image_id) for image_id in ids.values()]
                return all(job is not None and job.status in (JobStatus.DONE, JobStatus.FAILED) for job in states)

            await eventually(finished, what="both jobs finished")
            for image_id in ids.values():
                status = await client.get(f"/images/{image_id}")
                answers.append(status.text)
        failed = await jobs.get(ids["/missing.png"])
        assert failed is not None
        assert failed.status is JobStatus.FAILED
        assert "127.0.0.1" in (failed.error or ""), "the error still says where"
    finally:
        api.stop()
        worker.stop()
        await jobs.close()

    [letter] = await read_topic(settings, settings.dlq_topic)
    headers = "\n".join(value.decode(errors="replace") for key, value in letter.headers if key.startswith("dlq."))
    logs = api.log() + worker.log()
    assert "Processing image http://127.0.0.1" in worker.log(), "the job line is there, without the secrets"
    for secret in SECRETS:
        assert secret not in logs
        assert secret not in headers
        assert all(secret not in answer for answer in answers)
