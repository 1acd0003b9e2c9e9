"""One trace from upload to result: a real ``image-api`` and ``image-worker`` export spans over OTLP to a collector
in this test, and their parent links must chain POST -> produce -> consume -> download -> filter -> store -> done;
a redriven job's new trace links back to the one that failed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from core import tracing
from core.settings import Settings
from schemas import TraceHeader
from tests.reliability.harness import free_port, wait_until_ready
from tests.support.callback_receiver import CallbackReceiver, callback_receiver
from tests.support.image_server import ImageServer
from tests.support.otlp_collector import CollectedSpan, OtlpCollector, otlp_collector
from tests.support.processes import ApiProcess, WorkerProcess
from tests.support.settings import worker_test_settings
from tests.support.worker import eventually

pytestmark = pytest.mark.integration

# The SDK's batch processor exports every 5 s by default: the test waits for spans, not for that timer.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
JOB_STEPS = ("download image", "apply filter", "store images", "mark done")


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with otlp_collector() as collector:
        yield collector


@pytest.fixture
def traced(kafka_bootstrap: str, tmp_path: Path, collector: OtlpCollector) -> Settings:
    return worker_test_settings(
        kafka_bootstrap,
        tmp_path,
        otel_exporter_otlp_endpoint=collector.endpoint,
        log_format="json",
        callback_secret="tracing-test-secret",
    )


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver() as receiver:
        yield receiver


@pytest.fixture
async def api_url(traced: Settings, tmp_path: Path) -> AsyncIterator[str]:
    api = ApiProcess(traced, tmp_path / "api.log", free_port(), environment=FAST_EXPORT)
    worker = WorkerProcess(traced, tmp_path / "worker.log", environment=FAST_EXPORT)
    try:
        await wait_until_ready(api.base_url)
        yield api.base_url
    finally:
        api.stop()
        worker.stop()


async def submitted(client: httpx.AsyncClient, url: str, callback_url: str | None = None) -> str:
    request = {"url": url, "filter": "grayscale"} | ({} if callback_url is None else {"callback_url": callback_url})
    accepted = await client.post("/images", json=request)
    assert accepted.status_code == 202, accepted.text
    image_id: str = accepted.json()["id"]
    return image_id


async def reaches(client: httpx.AsyncClient, image_id: str, status: str) -> None:
    async def reached() -> bool:
        answer = await client.get(f"/images/{image_id}")
        return answer.status_code == 200 and answer.json()["status"] == status

    await eventually(reached, what=f"job {image_id} {status}")


def by_id(spans: list[CollectedSpan]) -> dict[str, CollectedSpan]:
    return {span.span_id: span for span in spans}


def children(spans: list[CollectedSpan], parent: CollectedSpan) -> list[CollectedSpan]:
    return [span for span in spans if span.parent_id == parent.span_id and span.trace_id == parent.trace_id]


def descends_from(span: CollectedSpan, ancestor: CollectedSpan, spans: dict[str, CollectedSpan]) -> bool:
    while span.parent_id in spans:
        span = spans[span.parent_id]
        if span.span_id == ancestor.span_id:
            return True
    return False


def one(spans: list[CollectedSpan], what: str) -> CollectedSpan:
    assert len(spans) == 1, f"expected one {what}, found {[(span.service, span.name) for span in spans]}"
    return spans[0]


async def test_one_trace_links_a_post_to_its_job_done_and_a_redrive_links_back(
    api_url: str,
    traced: Settings,
    collector: OtlpCollector,
    images: ImageServer,
    receiver: CallbackReceiver,
    tmp_path: Path,
) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        done_id = await submitted(client, images.url("/img/1.png"), callback_url=receiver.url("/hook"))
        poison_id = await submitted(client, images.url("/late/2.png"))  # 404 until released: dead-lettered
        await reaches(client, done_id, "done")
        await reaches(client, poison_id, "failed")
        images.release_late()
        redrive = await client.post("/admin/dead-letters/redrive", json={"dry_run": False})
        assert redrive.status_code == 200, redrive.text
        assert redrive.json()["totals"]["redrive"] == 1
        await reaches(client, poison_id, "done")

    topic = traced.images_topic

    def sends_of(image_id: str, spans: list[CollectedSpan]) -> list[CollectedSpan]:
        return [
            s
            for s in spans
            if s.name == f"send {topic}" and s.attributes.get("messaging.kafka.message.key") == image_id
        ]

    async def every_job_ended() -> bool:
        names = [s.name for s in collector.spans()]
        return names.count("mark done") == 2 and f"redrive {topic}" in names and "post callback" in names

    await eventually(every_job_ended, what="both jobs' spans exported")
    spans = collector.spans()
    everything = by_id(spans)

    # POST -> produce -> consume -> download, filter, store, done: one trace, each span the child of the one before.
    send = one(sends_of(done_id, spans), "send span of the job")
    assert (send.service, send.name) == ("image-api", f"send {topic}")
    request = everything[send.parent_id]
    assert (request.service, request.kind, request.name) == ("image-api", "server", "POST /images")
    assert request.parent_id == "", "the request starts the trace"
    process = one([s for s in children(spans, send) if s.kind == "consumer"], "consumer span of the job")
    assert (process.service, process.name) == ("image-worker", f"process {topic}")
    assert process.attributes["image.id"] == done_id
    assert process.attributes["image.outcome"] == "done"
    assert [s.name for s in children(spans, process) if s.name in JOB_STEPS] == list(JOB_STEPS)
    statements = [s for s in spans if "db.statement" in s.attributes or "db.query.text" in s.attributes]
    assert any(s.service == "image-worker" and descends_from(s, process, everything) for s in statements), (
        "the worker's SQL statements are spans of the job"
    )
    assert {s.trace_id for s in (request, send, process, *children(spans, process))} == {send.trace_id}
    # The job's completion callback goes on in its trace: appended, consumed, POSTed with the trace's traceparent.
    callbacks = traced.callbacks_topic
    appended = one([s for s in children(spans, process) if s.name == f"send {callbacks}"], "callback append")
    delivery = one([s for s in children(spans, appended) if s.kind == "consumer"], "callback consumer span")
    post = one([s for s in children(spans, delivery) if s.name == "post callback"], "callback POST span")
    assert delivery.service == post.service == "image-worker"
    [received] = receiver.received
    assert received.headers["traceparent"].split("-")[1:3] == [send.trace_id, post.span_id]
    lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
    job_lines = [line for line in lines if line.get("job_id") == done_id]
    assert job_lines, "the worker logged about the job"
    assert {line["trace_id"] for line in job_lines} == {send.trace_id}, "each of its lines names its trace"

    # The poison job: its first run failed in the trace of its POST; the redrive's span links back to that trace,
    # and the run it caused continues the redrive's own trace.
    first_send = one(sends_of(poison_id, spans), "send span of the poison job")
    first_run = one([s for s in children(spans, first_send) if s.kind == "consumer"], "first run")
    assert first_run.failed
    assert first_run.attributes["image.outcome"] == "dead_lettered"
    redrive_span = one([s for s in spans if s.name == f"redrive {topic}"], "redrive span")
    assert redrive_span.service == "image-api"
    assert (first_send.trace_id, first_send.span_id) in redrive_span.links
    second_run = one([s for s in children(spans, redrive_span) if s.kind == "consumer"], "run after the redrive")
    assert second_run.trace_id != first_send.trace_id
    assert second_run.attributes["image.id"] == poison_id
    assert "mark done" in [s.name for s in children(spans, second_run)]


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_dead_letters_trace_context_becomes_a_link_and_a_malformed_one_none() -> None:
    headers = [("event-type", b"image_process"), (TraceHeader.TRACEPARENT.value, TRACEPARENT.encode())]
    malformed = [(TraceHeader.TRACEPARENT.value, b"00-not-a-trace-01")]

    links = tracing.links_to([headers, malformed, []])

    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]


def test_untraced_records_keep_their_headers_and_a_traced_copy_replaces_the_context() -> None:
    headers = [("event-type", b"image_process"), ("traceparent", b"old"), ("tracestate", b"old=1")]
    assert not tracing.enabled(), "no tracer provider in the test process"

    with tracing.producing("images") as trace_headers:
        assert trace_headers == []
    assert tracing.with_trace_headers(headers, []) == headers
    assert tracing.with_trace_headers(headers, [("traceparent", TRACEPARENT.encode())]) == [
        ("event-type", b"image_process"),
        ("traceparent", TRACEPARENT.encode()),
    ]
