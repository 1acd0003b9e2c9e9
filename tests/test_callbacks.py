"""Completion callbacks: signed webhooks POSTed once a job is done or failed, against a real broker, a real worker
and its callback consumer, and a receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.callback_outbox import CallbackOutbox, delivery_id
from consumer.callback_sender import CallbackSender
from consumer.callbacks import callback_engine_settings
from consumer.download import BlockedUrl
from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStatus, JobStore
from core.settings import Settings
from schemas.callbacks import CallbackHeader, signature, verify
from tests.support.api import api_client
from tests.support.callback_receiver import ReceivedCallback, callback_receiver
from tests.support.database import migrated_sqlite
from tests.support.image_server import ImageServer
from tests.support.images import png_bytes
from tests.support.settings import make_settings, worker_test_settings
from tests.support.worker import eventually, offsets_all_committed, running_callback_consumer, running_worker

Headers = dict[str, str]


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path, database_url: str) -> Settings:
    return worker_test_settings(
        kafka_bootstrap,
        tmp_path,
        database_url=database_url,
        auth_disabled=False,
        callback_backoff_s=0.05,
        callback_max_attempts=4,
        callback_timeout_s=5.0,
    )


@pytest.fixture
async def api(worker_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(worker_settings) as client:
        yield client


async def new_key(jobs: JobStore) -> tuple[Headers, str]:
    """A submit-and-read key's headers and its callback signing secret."""
    keys = ApiKeyStore(jobs.engine)
    key, secret = await keys.create(f"key-{uuid.uuid4().hex[:12]}", frozenset({Role.SUBMIT, Role.READ}))
    callback_secret = await keys.callback_secret(key.key_id)
    assert callback_secret is not None
    assert callback_secret.startswith("whsec_")
    return {"Authorization": f"Bearer {secret}"}, callback_secret


def verified(callback: ReceivedCallback, secret: str) -> bool:
    return verify(
        secret,
        timestamp=callback.headers["webhook-timestamp"],
        signature_header=callback.headers["webhook-signature"],
        body=callback.body,
        now_s=time.time(),
    )


async def callback_of(api: httpx.AsyncClient, headers: Headers, status_path: str) -> dict[str, Any]:
    view = await api.get(status_path, headers=headers)
    assert view.status_code == 200, view.text
    callback: dict[str, Any] = view.json()["callback"]
    return callback


async def until_given_up_or_delivered(
    api: httpx.AsyncClient, headers: Headers, status_path: str, attempts: int
) -> dict[str, Any]:
    async def finished() -> bool:
        view = await api.get(status_path, headers=headers)
        return view.status_code == 200 and len((view.json()["callback"] or {}).get("attempts", [])) >= attempts

    await eventually(finished, timeout_s=30, what=f"{attempts} callback attempt(s)")
    return await callback_of(api, headers, status_path)


@pytest.mark.integration
async def test_a_done_job_is_called_back_once_verified_after_two_failures(
    api: httpx.AsyncClient, worker_settings: Settings, jobs: JobStore, images: ImageServer
) -> None:
    headers, secret = await new_key(jobs)
    with callback_receiver([500, 503]) as receiver:
        hook = receiver.url("/hooks/images?token=abc")
        accepted = await api.post(
            "/images", json={"url": images.url("/img/1.png"), "filter": "sepia", "callback_url": hook}, headers=headers
        )
        assert accepted.status_code == 202, accepted.text
        image_id, status_path = accepted.json()["id"], accepted.json()["status_url"]
        async with running_worker(worker_settings), running_callback_consumer(worker_settings) as metrics:
            callback = await until_given_up_or_delivered(api, headers, status_path, attempts=3)
            engine = callback_engine_settings(worker_settings)
            await eventually(lambda: offsets_all_committed(engine), what="the callback record's offset committed")

            # The same callback appended again (as a worker retrying after its append does): delivered already.
            job = await jobs.get(image_id)
            assert job is not None
            assert job.status is JobStatus.DONE
            outbox = CallbackOutbox(worker_settings)
            try:
                await outbox.append(job)
            finally:
                await outbox.aclose()
            await eventually(lambda: offsets_all_committed(engine), what="the repeated record's offset committed")

    assert [request.answered for request in receiver.received] == [500, 503, 200], "no POST after the delivery"
    delivered = [request for request in receiver.received if request.answered == 200]
    assert len(delivered) == 1
    assert all(verified(request, secret) for request in receiver.received), "each attempt is signed anew"
    assert not verified(delivered[0], secret + "x")
    assert {request.headers["webhook-id"] for request in receiver.received} == {
        str(delivery_id(image_id, JobStatus.DONE))
    }, "one delivery id across attempts"
    assert delivered[0].path == "/hooks/images?token=abc"
    assert delivered[0].headers["content-type"] == "application/json"
    body = json.loads(delivered[0].body)
    assert body["type"] == "image.done"
    assert body["image_id"] == image_id
    assert body["status"] == "done"
    assert body["result_url"] == f"/images/{image_id}/result"
    assert body["error"] is None

    assert callback["url"] == receiver.url("/hooks/images?token=***"), "query values masked, as for image URLs"
    assert [attempt["status_code"] for attempt in callback["attempts"]] == [500, 503, 200]
    assert [attempt["delivered"] for attempt in callback["attempts"]] == [False, False, True]
    assert [attempt["attempt"] for attempt in callback["attempts"]] == [1, 2, 3]
    assert callback["attempts"][0]["error"] == "HTTP 500 Internal Server Error"
    assert callback["delivered_at"] == callback["attempts"][2]["attempted_at"]
    assert metrics.registry.get_sample_value("image_worker_callbacks_delivered_total") == 1.0
    assert metrics.registry.get_sample_value("image_worker_callback_failed_attempts_total") == 2.0
    assert metrics.registry.get_sample_value("image_worker_callbacks_given_up_total") == 0.0


@pytest.mark.integration
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_failed_job_is_called_back_and_a_receiver_that_keeps_failing_is_given_up(
    api: httpx.AsyncClient, worker_settings: Settings, jobs: JobStore, images: ImageServer
) -> None:
    headers, secret = await new_key(jobs)
    with callback_receiver([500] * 10) as receiver:
        accepted = await api.post(
            "/images",
            json={"url": images.url("/missing.png"), "filter": "sepia", "callback_url": receiver.url("/hook")},
            headers=headers,
        )
        assert accepted.status_code == 202, accepted.text
        image_id, status_path = accepted.json()["id"], accepted.json()["status_url"]
        async with running_worker(worker_settings), running_callback_consumer(worker_settings) as metrics:
            callback = await until_given_up_or_delivered(api, headers, status_path, attempts=4)
            engine = callback_engine_settings(worker_settings)
            await eventually(lambda: offsets_all_committed(engine), what="the given-up record's offset committed")

    assert len(receiver.received) == 4, "CALLBACK_MAX_ATTEMPTS POSTs, no more"
    assert all(verified(request, secret) for request in receiver.received)
    body = json.loads(receiver.received[0].body)
    assert (body["type"], body["status"], body["image_id"], body["result_url"]) == (
        "image.failed",
        "failed",
        image_id,
        None,
    )
    assert "404" in body["error"]
    assert callback["delivered_at"] is None
    assert [attempt["delivered"] for attempt in callback["attempts"]] == [False] * 4
    assert metrics.registry.get_sample_value("image_worker_callbacks_given_up_total") == 1.0
    assert metrics.registry.get_sample_value("image_worker_callback_failed_attempts_total") == 4.0


BLOCKED = ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:9/hook", "http://[::1]/", "http://10.1.2.3/"]


@pytest.mark.parametrize("callback_url", BLOCKED)
async def test_a_blocked_callback_url_is_refused_at_submit(
    kafka_bootstrap: str, tmp_path: Path, callback_url: str
) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, callback_secret="whsec_local")
    async with api_client(settings) as api:
        refused = await api.post(
            "/images", json={"url": "https://example.com/a.png", "filter": "blur", "callback_url": callback_url}
        )
        multipart = await api.post(
            "/images",
            files={"file": ("a.png", png_bytes(seed=1), "image/png")},
            data={"filter": "blur", "callback_url": callback_url},
        )
        batch = await api.post(
            "/images:batch",
            json={"jobs": [{"url": "https://example.com/a.png", "filter": "blur", "callback_url": callback_url}]},
        )

    for answer in (refused, multipart):
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert (error["type"], error["loc"]) == ("blocked_url", ["body", "callback_url"])
        assert callback_url not in answer.text, "the input is never echoed back"
    assert batch.status_code == 200, batch.text
    [item] = batch.json()["jobs"]
    assert item["error"]["type"] == "blocked_url"
    assert item["error"]["loc"] == ["body", "jobs", 0, "callback_url"]


async def test_without_keys_a_callback_needs_the_callback_secret(kafka_bootstrap: str, tmp_path: Path) -> None:
    job = {"url": "https://example.com/a.png", "filter": "blur", "callback_url": "https://hooks.example.com/x"}
    async with api_client(make_settings(kafka_bootstrap, tmp_path)) as api:
        refused = await api.post("/images", json=job)
        batch = await api.post("/images:batch", json={"jobs": [job]})
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert (error["type"], error["loc"]) == ("callback_secret_unset", ["body", "callback_url"])
    assert "CALLBACK_SECRET" in error["msg"]
    assert batch.json()["jobs"][0]["error"]["type"] == "callback_secret_unset"


async def test_the_callback_url_is_in_the_event_and_the_fingerprint(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, callback_secret="whsec_local")
    job = {"url": "https://example.com/a.png", "filter": "blur"}
    key = {"Idempotency-Key": "callbacks-1"}
    async with api_client(settings) as api:
        first = await api.post("/images", json={**job, "callback_url": "https://hooks.example.com/a"}, headers=key)
        other = await api.post("/images", json={**job, "callback_url": "https://hooks.example.com/b"}, headers=key)
        status = await api.get(first.json()["status_url"])
    assert first.status_code == 202, first.text
    assert other.status_code == 409, "another callback URL is another request"
    assert status.json()["callback"] == {"url": "https://hooks.example.com/a", "attempts": [], "delivered_at": None}


async def test_the_sender_resolves_again_and_refuses_a_private_address(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def rebinding(host: str, port: int) -> Sequence[str]:
        return ["93.184.215.14", "10.0.0.7"]  # one public, one private answer: refused as a whole

    sender = CallbackSender(make_settings(kafka_bootstrap, tmp_path), resolver=rebinding)
    try:
        with pytest.raises(BlockedUrl, match=r"non-public address 10\.0\.0\.7"):
            await sender.post("https://hooks.example.com/x", b"{}", {})
    finally:
        await sender.aclose()


async def test_the_sender_follows_no_redirect(kafka_bootstrap: str, tmp_path: Path) -> None:
    sender = CallbackSender(make_settings(kafka_bootstrap, tmp_path, allow_private_urls=True))
    try:
        with callback_receiver([307]) as receiver:
            outcome = await sender.post(receiver.url("/hook"), b"{}", {})
    finally:
        await sender.aclose()
    assert not outcome.delivered
    assert outcome.status_code == 307
    assert outcome.error == "HTTP 307 Temporary Redirect (redirects are not followed)"
    assert [request.path for request in receiver.received] == ["/hook"]


def test_the_signature_is_hmac_sha256_of_the_timestamp_and_body() -> None:
    body = b'{"image_id": "x"}'
    expected = hmac.new(b"whsec_test", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("whsec_test", 1_700_000_000, body) == f"v1={expected}"


def test_verify_takes_a_genuine_fresh_callback_only() -> None:
    body, now = b'{"status": "done"}', 1_700_000_000
    header = signature("whsec_test", now, body)

    def check(**changes: Any) -> bool:
        arguments: dict[str, Any] = {"timestamp": str(now), "signature_header": header, "body": body, "now_s": now + 5}
        return verify(changes.pop("secret", "whsec_test"), **(arguments | changes))

    assert check()
    assert check(signature_header=f"v1=0000, {header}"), "any of several signatures (a secret being rotated)"
    assert not check(secret="whsec_other")
    assert not check(body=b'{"status": "failed"}')
    assert not check(timestamp=str(now + 1)), "the timestamp is signed"
    assert not check(now_s=now + 301), "older than the tolerance: a replay"
    assert not check(timestamp="soon")


def test_callback_headers_are_the_documented_ones() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for header in CallbackHeader:
        assert f"`{header.value}`" in readme


def test_the_keys_command_shows_and_rotates_the_callback_secret(tmp_path: Path) -> None:
    executable = shutil.which("image-keys", path=str(Path(sys.executable).parent))
    assert executable is not None
    env = os.environ | {"DATABASE_URL": f"sqlite:///{migrated_sqlite(tmp_path / 'api.db')}"}

    def keys(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([executable, *argv], env=env, capture_output=True, text=True, timeout=60, check=False)

    created = keys("create", "--name", "ci")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ipk_")
    assert "\n" not in created.stdout.strip(), "stdout: the key alone"
    first = created.stderr.split("callback signing secret: ", 1)[1].strip()
    rotated = keys("rotate-callback-secret", "ci")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("whsec_")
    assert rotated.stdout.strip() != first
    assert keys("rotate-callback-secret", "nobody").returncode == 1


def test_the_readmes_verification_snippet_verifies_a_real_signature() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = readme.split("refuse old timestamps (replays):\n\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # our own README's code
    body, now = b'{"status": "done"}', int(time.time())
    headers = {"Webhook-Timestamp": str(now), "Webhook-Signature": signature("whsec_test", now, body)}
    assert namespace["verify"]("whsec_test", headers, body)
    assert not namespace["verify"]("whsec_other", headers, body)
