"""The worker's probes answer at their exact paths: a scraper that follows no redirect still gets its metrics."""

from __future__ import annotations

from pathlib import Path

import httpx

from consumer.probes import probes_app
from consumer.retry import RecordHandler
from consumer.worker import Worker
from core.settings import Settings


class Idle(RecordHandler):
    async def handle(self, record: object, attempt: int) -> str:
        raise AssertionError("no record is consumed here")

    async def record_failure(self, record: object, error: BaseException, attempts: int) -> None:
        raise AssertionError("no record is consumed here")


async def test_metrics_and_livez_answer_200_at_their_exact_paths(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", storage_dir=tmp_path, liveness_timeout_s=60.0)
    worker = Worker(settings, Idle())
    worker.liveness.joined()
    transport = httpx.ASGITransport(app=probes_app(worker))
    async with httpx.AsyncClient(transport=transport, base_url="http://probes") as client:
        metrics = await client.get("/metrics")
        livez = await client.get("/livez")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "image_worker_records_total" in metrics.text
    assert livez.status_code == 200
    assert livez.json() == {"alive": True, "problems": []}


async def test_the_alive_gauge_says_what_livez_says(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", storage_dir=tmp_path, liveness_timeout_s=60.0)
    worker = Worker(settings, Idle())
    registry = worker.metrics.registry
    worker.liveness.joined()
    assert registry.get_sample_value("image_worker_alive") == 1
    worker.liveness.timeout_s = -1.0  # every poll is now too long ago: what a stalled loop reports
    assert worker.liveness.problems(), "the premise: /livez would answer 503"
    assert registry.get_sample_value("image_worker_alive") == 0
