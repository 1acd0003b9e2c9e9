"""The API's Prometheus metrics: requests by route template and status, refusals by reason, publishing and job-row
writes, and where they are served (a port of their own, the sum of all processes under ``--workers N``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from producer.metrics_endpoint import serve
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.api import running_api
from tests.support.processes import ApiProcess
from tests.support.settings import make_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration

JOB = {"url": "https://example.com/a.png", "filter": "blur"}
NO_BROKER = "127.0.0.1:9"  # nothing listens there
UNKNOWN_ID = "0b7c0000-0000-4000-8000-000000000000"


def registry_of(app: FastAPI) -> CollectorRegistry:
    registry: CollectorRegistry = app.state.metrics.registry
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series was never touched (as Prometheus would read a missing counter)."""
    return registry.get_sample_value(name, labels) or 0.0


def requests(registry: CollectorRegistry, method: str, route: str, status: int) -> float:
    return value(registry, "image_api_requests_total", method=method, route=route, status=str(status))


async def test_requests_are_counted_by_route_template_method_and_status(settings: Settings) -> None:
    async with running_api(settings) as (app, api):
        accepted = await api.post("/images", json=JOB)
        assert accepted.status_code == 202, accepted.text
        for _ in range(2):
            assert (await api.get(accepted.json()["status_url"])).status_code == 200
        assert (await api.get(f"/images/{UNKNOWN_ID}")).status_code == 404
        assert (await api.get("/images/not-an-id")).status_code == 422
        assert (await api.get("/nowhere/0b7c")).status_code == 404
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.post("/images", content=b"x", headers={"content-type": "text/plain"})).status_code == 415
    registry = registry_of(app)

    assert requests(registry, "POST", "/images", 202) == 1
    assert requests(registry, "POST", "/images", 415) == 1
    assert requests(registry, "GET", "/images/{image_id}", 200) == 2
    assert requests(registry, "GET", "/images/{image_id}", 404) == 1
    assert requests(registry, "GET", "/images/{image_id}", 422) == 1
    assert requests(registry, "GET", "unmatched", 404) == 1
    assert requests(registry, "GET", "/healthz", 200) == 1
    routes = {
        sample.labels["route"]
        for family in registry.collect()
        if family.name == "image_api_requests"
        for sample in family.samples
    }
    assert routes == {"/images", "/images/{image_id}", "unmatched", "/healthz"}, "never a raw path with an id"
    assert value(registry, "image_api_request_seconds_count", method="GET", route="/images/{image_id}") == 4
    assert value(registry, "image_api_request_seconds_sum", method="POST", route="/images") > 0


async def test_a_post_observes_publish_latency_transaction_size_and_its_row_write(settings: Settings) -> None:
    async with running_api(settings) as (app, api):
        assert (await api.post("/images", json=JOB)).status_code == 202
        registry = registry_of(app)
        assert value(registry, "image_api_publish_seconds_count", outcome="committed") == 1
        assert value(registry, "image_api_publish_seconds_sum", outcome="committed") > 0
        assert value(registry, "image_api_transaction_events_count") == 1
        assert value(registry, "image_api_transaction_events_sum") == 1
        assert value(registry, "image_api_job_row_write_seconds_count", outcome="committed") == 1
        assert value(registry, "image_api_job_row_batch_rows_sum") == 1

        batch = await api.post("/images:batch", json={"jobs": [JOB] * 3})
        assert batch.status_code == 200, batch.text
        assert value(registry, "image_api_transaction_events_count") == 2
        assert value(registry, "image_api_transaction_events_bucket", le="2.0") == 1, "the batch's 3 in one"
        assert value(registry, "image_api_transaction_events_bucket", le="5.0") == 2
        assert value(registry, "image_api_job_row_batch_rows_sum") == 4
        assert value(registry, "image_api_publish_seconds_count", outcome="failed") == 0


async def test_a_429_is_counted_as_rate_limited(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, auth_disabled=False, rate_limit="2/minute")
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    try:
        _, secret = await ApiKeyStore(jobs.engine).create("alice", frozenset({Role.READ}))
        async with running_api(settings) as (app, api):
            answers = [
                (await api.get(f"/images/{UNKNOWN_ID}", headers={"Authorization": f"Bearer {secret}"})).status_code
                for _ in range(3)
            ]
    finally:
        await jobs.close()
    assert answers == [404, 404, 429]
    registry = registry_of(app)
    assert value(registry, "image_api_refusals_total", reason="rate_limited") == 1
    assert requests(registry, "GET", "/images/{image_id}", 429) == 1


async def test_a_503_without_a_broker_is_counted_with_its_reason(tmp_path: Path) -> None:
    settings = make_settings(NO_BROKER, tmp_path, send_timeout_s=0.5)
    async with running_api(settings) as (app, api):
        refused = await api.post("/images", json=JOB)
        assert refused.status_code == 503, refused.text
        at_once = await api.post("/images", json=JOB)  # within Retry-After: refused without trying the broker
        assert at_once.status_code == 503, at_once.text
        assert (await api.get("/readyz")).status_code == 503
    registry = registry_of(app)
    assert value(registry, "image_api_refusals_total", reason="broker_unavailable") == 2
    assert value(registry, "image_api_refusals_total", reason="not_ready") == 1
    assert requests(registry, "POST", "/images", 503) == 2
    assert value(registry, "image_api_publish_seconds_count", outcome="failed") == 2
    assert value(registry, "image_api_publish_seconds_count", outcome="committed") == 0
    assert value(registry, "image_api_transaction_events_count") == 0, "no transaction committed"


async def test_metrics_are_served_on_their_own_port_never_on_the_api(settings: Settings) -> None:
    assert Settings.model_fields["api_metrics_port"].default is None, "off unless asked for"
    assert Settings.model_fields["metrics_host"].default == "127.0.0.1", "loopback unless asked for"
    async with running_api(settings) as (app, api):
        assert (await api.get("/metrics")).status_code == 404, "the API's clients never see the figures"
        assert (await api.get("/healthz")).status_code == 200
        server = serve(registry_of(app), "127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as scraper:
                scraped = await scraper.get(f"http://127.0.0.1:{server.port}/metrics")
        finally:
            server.close()
    assert scraped.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    healthz = [
        sample
        for sample in families["image_api_requests"].samples
        if sample.name == "image_api_requests_total" and sample.labels["route"] == "/healthz"
    ]
    assert [sample.value for sample in healthz] == [1.0]
    assert requests(registry_of(app), "GET", "unmatched", 404) == 1, "a request for /metrics on the API is just a 404"


@pytest.mark.parametrize("processes", [1, 2])
async def test_image_api_serves_the_sum_of_its_processes(kafka_bootstrap: str, tmp_path: Path, processes: int) -> None:
    metrics_port = free_port()
    settings = make_settings(kafka_bootstrap, tmp_path, api_metrics_port=metrics_port)
    api = ApiProcess(settings, tmp_path / "api.log", free_port(), "--workers", str(processes))
    try:
        await wait_until_ready(api.base_url)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for _ in range(20):  # each on a new connection: the processes share them out
                async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as fresh:
                    assert (await fresh.get("/healthz")).status_code == 200
            assert (await client.post("/images", json=JOB)).status_code == 202

        async def counted() -> bool:
            async with httpx.AsyncClient(timeout=5) as scraper:
                text = (await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            healthz = samples.get(
                ("image_api_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200"))), 0
            )
            published = samples.get(("image_api_publish_seconds_count", (("outcome", "committed"),)), 0)
            return healthz == 20 and published == 1

        # A request is counted once its answer is sent, so the last one may be counted just after the client read it.
        await eventually(counted, timeout_s=10, what=f"20 /healthz and 1 publish counted over {processes} process(es)")
    finally:
        api.stop()
