"""The admin routes: admin keys only, a redrive through the API done once by a worker, 409 and 503."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStatus, JobStore
from core.redrive import RedriveOptions, Report
from core.settings import Settings
from core.topics import ensure_topics
from producer import admin
from tests.support.api import api_client
from tests.support.events import as_record, url_event
from tests.support.image_server import ImageServer
from tests.support.settings import make_settings, worker_test_settings
from tests.support.worker import count_jobs, eventually, produce, running_worker

pytestmark = pytest.mark.integration

ROUTES = [
    ("GET", "/admin/consumer-group"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/dead-letters/redrive"),
]
NO_BROKER = "127.0.0.1:9"  # nothing listens there
UNAVAILABLE_BOUND_S = 15.0


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return worker_test_settings(kafka_bootstrap, tmp_path, max_attempts=2, shutdown_timeout_s=5.0)


async def call(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return await api.request(method, path, json={} if method == "POST" else None, **kwargs)


async def test_only_admin_keys_get_in(secured: Settings, keys: ApiKeyStore) -> None:
    _, reader = await keys.create("dashboard", frozenset({Role.READ, Role.SUBMIT}))
    _, operator = await keys.create("ops", frozenset({Role.ADMIN}))
    async with api_client(secured) as api:
        for method, path in ROUTES:
            refused = await call(api, method, path)
            assert refused.status_code == 401, (path, refused.text)
            assert refused.headers["www-authenticate"].startswith("Bearer")
            forbidden = await call(api, method, path, headers={"Authorization": f"Bearer {reader}"})
            assert forbidden.status_code == 403, (path, forbidden.text)
        allowed = await api.get("/admin/dead-letters", headers={"Authorization": f"Bearer {operator}"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["counts"] == {}
        documented = (await api.get("/openapi.json")).json()["paths"]["/admin/dead-letters/redrive"]["post"]
        assert {"401", "403", "409", "503"} <= set(documented["responses"])
        assert documented["security"] == [{"HTTPBearer": []}]


async def test_redrive_through_the_api_dry_run_then_once(
    worker_settings: Settings, images: ImageServer, jobs: JobStore
) -> None:
    settings = worker_settings
    late = [url_event(images.url(f"/late/{seed}.png")) for seed in range(3)]
    await produce(settings, [as_record(event) for event in late])
    async with running_worker(settings), api_client(settings) as api:
        await eventually(lambda: _jobs_in(jobs, JobStatus.FAILED, 3), what="the three jobs dead-lettered")

        async def group_caught_up() -> bool:
            page = (await api.get("/admin/consumer-group")).json()
            return bool(page["overview"]["state"] == "Stable" and page["overview"]["total_lag"] == 0)

        await eventually(group_caught_up, what="the group at lag 0")
        page = (await api.get("/admin/consumer-group")).json()
        assert [len(member["partitions"]) for member in page["overview"]["members"]] == [3]
        assert page["lag_history"]["samples"][-1]["total_lag"] == 0

        listed = (await api.get("/admin/dead-letters", params={"error_code": "http_4xx"})).json()
        assert listed["counts"] == {"http_4xx": 3}
        assert sorted(d["image_id"] for d in listed["dead_letters"]) == sorted(str(e.image_id) for e in late)
        assert {d["redriven"] for d in listed["dead_letters"]} == {False}

        images.release_late()
        dry = (await api.post("/admin/dead-letters/redrive", json={"error_code": "http_4xx"})).json()
        assert (dry["dry_run"], dry["totals"]["redrive"], dry["committed"]) == (True, 3, {})
        assert dry["by_error_code"]["http_4xx"]["redrive"] == 3
        assert dry["group"] == f"{settings.consumer_group}.redrive"

        done = await api.post("/admin/dead-letters/redrive", json={"error_code": "http_4xx", "dry_run": False})
        assert done.status_code == 200, done.text
        assert (done.json()["dry_run"], done.json()["totals"]["redrive"]) == (False, 3)
        await eventually(lambda: _jobs_in(jobs, JobStatus.DONE, 3), what="the redriven jobs done by the worker")

        again = (await api.post("/admin/dead-letters/redrive", json={"dry_run": False})).json()
        assert (again["examined"], again["totals"]["redrive"]) == (0, 0), "at most once"
        listed = (await api.get("/admin/dead-letters")).json()
        assert {d["redriven"] for d in listed["dead_letters"]} == {True}
    assert [images.hits[f"/late/{seed}.png"] for seed in range(3)] == [2] * 3, "the failed try and the redriven one"


async def test_a_second_redrive_while_one_runs_is_409(
    settings: Settings, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ensure_topics(settings)
    started, release = asyncio.Event(), asyncio.Event()

    async def held_redrive(settings: Settings, options: RedriveOptions) -> Report:
        started.set()
        await release.wait()
        return Report(dry_run=not options.execute, group=options.progress_group(settings))

    monkeypatch.setattr(admin, "redrive", held_redrive)
    first = asyncio.create_task(api.post("/admin/dead-letters/redrive", json={}))
    try:
        async with asyncio.timeout(10):
            await started.wait()
        second = await api.post("/admin/dead-letters/redrive", json={"dry_run": False})
        assert second.status_code == 409, second.text
    finally:
        release.set()
    assert (await first).status_code == 200
    after = await api.post("/admin/dead-letters/redrive", json={})
    assert after.status_code == 200, "the lock is released"


async def test_kafka_unreachable_is_503_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(NO_BROKER, tmp_path, send_timeout_s=1.0)
    async with api_client(settings) as api:
        for method, path in ROUTES:
            started = time.monotonic()
            response = await call(api, method, path)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == str(settings.retry_after_s)
            assert "Kafka" in response.json()["detail"]
            assert time.monotonic() - started < UNAVAILABLE_BOUND_S


async def _jobs_in(jobs: JobStore, status: JobStatus, expected: int) -> bool:
    return await count_jobs(jobs, status) == expected
