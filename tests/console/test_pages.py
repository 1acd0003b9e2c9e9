"""The console's pages over HTTP, in process: the session cookie, CSRF, escaping and the security headers."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.api_keys import ApiKeyStore, Role
from core.callback_attempts import CallbackAttempt, CallbackAttempts
from core.jobs import Job, JobStatus, JobStore
from core.settings import Settings
from producer.console.rendering import CONTENT_SECURITY_POLICY
from tests.support.api import api_client
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration

XSS = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


@pytest.fixture
async def store(secured: Settings) -> AsyncIterator[JobStore]:
    jobs = JobStore.from_url(secured.database_url)
    yield jobs
    await jobs.close()


async def new_key(store: JobStore, name: str, *roles: Role) -> tuple[str, str]:
    key, secret = await ApiKeyStore(store.engine).create(name, frozenset(roles))
    return key.key_id, secret


async def log_in(console: httpx.AsyncClient, secret: str) -> httpx.Response:
    form = await console.get("/console/login")
    return await console.post("/console/login", data={"key": secret, "csrf": csrf_of(form), "next": "/console/jobs"})


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, "the page has a form with a CSRF token"
    return found.group(1)


def cookie_attributes(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.lower()
    raise AssertionError(f"no {name} cookie set")


async def test_login_keeps_the_key_in_a_locked_down_cookie(secured: Settings, store: JobStore) -> None:
    _, secret = await new_key(store, "alice", Role.SUBMIT, Role.READ)
    async with api_client(secured) as console:
        away = await console.get("/console/jobs?status=done")
        assert away.status_code == 303
        assert away.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs%3Fstatus%3Ddone"

        form = await console.get("/console/login")
        assert form.status_code == 200
        assert form.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        csrf_cookie = cookie_attributes(form, "console_csrf")
        for attribute in ("httponly", "samesite=strict", "path=/console"):
            assert attribute in csrf_cookie

        refused = await console.post("/console/login", data={"key": "ipk_nope", "csrf": csrf_of(form)})
        assert refused.status_code == 401
        assert "unknown or revoked" in refused.text
        forged = await console.post("/console/login", data={"key": secret, "csrf": "forged"})
        assert forged.status_code == 403, "a login form posted from another site is refused"

        away_again = await console.post(
            "/console/login", data={"key": secret, "csrf": csrf_of(form), "next": "https://evil.example/"}
        )
        assert away_again.status_code == 303
        assert away_again.headers["location"] == "/console/jobs", "never an open redirect"
        session = cookie_attributes(away_again, "console_key")
        for attribute in ("httponly", "samesite=strict", "path=/console"):
            assert attribute in session
        assert (await console.get("/console/jobs")).status_code == 200


async def test_forms_without_the_csrf_token_change_nothing(secured: Settings, store: JobStore) -> None:
    _, secret = await new_key(store, "alice", Role.SUBMIT, Role.READ)
    async with api_client(secured) as console:
        await log_in(console, secret)
        job = {"url": "https://example.com/a.png", "filter": "blur", "submission": "s1"}
        for token in (None, "stale"):
            data = job if token is None else {**job, "csrf": token}
            refused = await console.post("/console/submit", files={"file": ("", b"")}, data=data)
            assert refused.status_code == 403
            assert "security token" in refused.text
        listing = await console.get("/console/jobs")
        assert "No jobs match" in listing.text, "nothing was submitted"
        assert (await console.post("/console/logout")).status_code == 403


async def test_the_submit_form_accepts_a_url_once_per_form(secured: Settings, store: JobStore) -> None:
    _, secret = await new_key(store, "alice", Role.SUBMIT, Role.READ)
    async with api_client(secured) as console:
        await log_in(console, secret)
        form = await console.get("/console/submit")
        assert 'value="sepia"' in form.text
        fields = {"csrf": csrf_of(form), "url": "https://example.com/cat.png", "filter": "sepia", "submission": "f1"}
        first = await console.post("/console/submit", files={"file": ("", b"")}, data=fields)
        again = await console.post("/console/submit", files={"file": ("", b"")}, data=fields)
        assert first.status_code == again.status_code == 303
        assert first.headers["location"] == again.headers["location"], "a form sent twice is one job"
        job_id = first.headers["location"].rsplit("/", 1)[1]
        job = await store.get(job_id)
        assert job is not None
        assert job.filter == "sepia"

        private = {**fields, "url": "http://10.0.0.1/a.png", "submission": "f2"}
        refused = await console.post("/console/submit", files={"file": ("", b"")}, data=private)
        assert refused.status_code == 422
        assert "non-public IP address" in refused.text
        neither = {**fields, "url": "", "submission": "f3"}
        empty = await console.post("/console/submit", files={"file": ("", b"")}, data=neither)
        assert empty.status_code == 422
        assert "choose an image file" in empty.text


async def test_what_users_wrote_is_shown_as_text_never_as_markup(secured: Settings, store: JobStore) -> None:
    key_id, secret = await new_key(store, "alice", Role.READ)
    now = dt.datetime.now(dt.UTC)
    job = Job(
        image_id=str(uuid.uuid4()),
        status=JobStatus.FAILED,
        filter="blur",
        source_url=f"https://example.com/{XSS}",
        blob_key=None,
        request_fingerprint=None,
        requested_at=now,
        updated_at=now,
        finished_at=now,
        error=XSS,
        owner=key_id,
    )
    await store.record_accepted(job)
    await store.mark_failed(job)
    async with api_client(secured) as console:
        await log_in(console, secret)
        for path in (f"/console/jobs/{job.image_id}", "/console/jobs"):
            page = await console.get(path)
            assert page.status_code == 200
            assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page.text
            assert "<script>alert" not in page.text
            assert "<img src=x" not in page.text
            scripts = re.findall(r"<script[^>]*>", page.text)
            assert scripts == ['<script src="/console/static/console.js" defer>'], "no inline script"
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert page.headers["x-frame-options"] == "DENY"


async def test_the_job_page_shows_each_callback_attempt(secured: Settings, store: JobStore) -> None:
    key_id, secret = await new_key(store, "alice", Role.READ)
    now = dt.datetime.now(dt.UTC)
    hook = f"https://hooks.example.com/{XSS}?token=s3cret"
    job = Job(
        image_id=str(uuid.uuid4()),
        status=JobStatus.FAILED,
        filter="blur",
        source_url="https://example.com/a.png",
        blob_key=None,
        request_fingerprint=None,
        requested_at=now,
        updated_at=now,
        finished_at=now,
        error="http_4xx",
        owner=key_id,
        callback_url=hook,
    )
    await store.record_accepted(job)
    await store.mark_failed(job)
    attempts = CallbackAttempts(store.engine)
    for number, (status, error) in enumerate([(500, "answered HTTP 500"), (200, None)], start=1):
        attempt = CallbackAttempt(str(uuid.uuid4()), number, job.image_id, hook, now, status, error, status == 200)
        await attempts.record(attempt)
    async with api_client(secured) as console:
        await log_in(console, secret)
        page = await console.get(f"/console/jobs/{job.image_id}")

    assert page.status_code == 200
    section = page.text[page.text.index('id="callback"') :]
    assert "token=s3cret" not in page.text, "the callback URL's query values are masked"
    assert "<script>alert" not in section
    assert re.findall(r'data-delivered="(\w+)"', section) == ["false", "true"]
    assert "HTTP 500" in section
    assert "answered HTTP 500" in section
    assert "Delivered" in section


async def test_another_keys_job_is_not_there(secured: Settings, store: JobStore) -> None:
    _, alice = await new_key(store, "alice", Role.SUBMIT, Role.READ)
    _, bob = await new_key(store, "bob", Role.READ)
    async with api_client(secured) as console:
        await log_in(console, alice)
        form = await console.get("/console/submit")
        fields = {"csrf": csrf_of(form), "url": "https://example.com/b.png", "filter": "blur", "submission": "b1"}
        job_path = (await console.post("/console/submit", files={"file": ("", b"")}, data=fields)).headers["location"]
        assert (await console.get(job_path)).status_code == 200
        console.cookies.clear()
        await log_in(console, bob)
        assert (await console.get(job_path)).status_code == 404
        assert (await console.get(f"{job_path}/status")).status_code == 404
        assert (await console.get("/console/submit")).status_code == 403, "bob's key may not submit"
        assert (await console.get("/console/jobs/not-a-uuid")).status_code == 404


async def test_the_cancel_button_needs_the_form_token_and_cancels_a_queued_job(
    secured: Settings, store: JobStore
) -> None:
    _, alice = await new_key(store, "alice", Role.SUBMIT, Role.READ)
    _, bob = await new_key(store, "bob", Role.SUBMIT, Role.READ)
    async with api_client(secured) as console:
        await log_in(console, alice)
        form = await console.get("/console/submit")
        fields = {"csrf": csrf_of(form), "url": "https://example.com/c.png", "filter": "blur", "submission": "c1"}
        job_path = (await console.post("/console/submit", files={"file": ("", b"")}, data=fields)).headers["location"]
        job_id = job_path.rsplit("/", 1)[1]
        page = await console.get(job_path)
        assert f'action="{job_path}/cancel"' in page.text, "a queued job's page has the Cancel button"
        for data in ({}, {"csrf": "stale"}):
            refused = await console.post(f"{job_path}/cancel", data=data)
            assert refused.status_code == 403
            assert "security token" in refused.text
        console.cookies.clear()
        await log_in(console, bob)
        page = await console.get("/console/jobs")
        assert (await console.post(f"{job_path}/cancel", data={"csrf": csrf_of(page)})).status_code == 404
        queued = await store.get(job_id)
        assert queued is not None
        assert queued.status is JobStatus.QUEUED, "refused forms changed nothing"

        console.cookies.clear()
        await log_in(console, alice)
        page = await console.get(job_path)
        cancelled = await console.post(f"{job_path}/cancel", data={"csrf": csrf_of(page)})
        assert cancelled.status_code == 303
        assert cancelled.headers["location"] == job_path
        job = await store.get(job_id)
        assert job is not None
        assert job.status is JobStatus.CANCELLED
        after = await console.get(job_path)
        assert '<span class="status status-cancelled">cancelled</span>' in after.text
        assert "/cancel" not in after.text, "no Cancel button once cancelled"
        assert 'value="cancelled"' in (await console.get("/console/jobs")).text, "the status filter offers it"


async def test_a_redrive_needs_the_form_token_and_an_admin(secured: Settings, store: JobStore) -> None:
    _, admin = await new_key(store, "root", Role.ADMIN)
    _, reader = await new_key(store, "alice", Role.READ, Role.SUBMIT)
    async with api_client(secured) as console:
        await log_in(console, reader)
        for path in ("/console/workers", "/console/dead-letters"):
            page = await console.get(path)
            assert page.status_code == 403
            assert "may not admin" in page.text
        console.cookies.clear()
        await log_in(console, admin)
        forged = await console.post("/console/dead-letters/redrive", data={"mode": "execute", "csrf": "x"})
        assert forged.status_code == 403, "a redrive posted from another site is refused before Kafka is asked"


async def test_pages_count_against_the_rate_limit_and_their_images_do_not(kafka_bootstrap: str, tmp_path: Path) -> None:
    limited = make_settings(kafka_bootstrap, tmp_path, auth_disabled=False, rate_limit="2/minute")
    store = JobStore.from_url(limited.database_url)
    try:
        _, secret = await new_key(store, "alice", Role.READ)
    finally:
        await store.close()
    async with api_client(limited) as console:
        await log_in(console, secret)
        assert (await console.get("/console/jobs")).status_code == 200
        for _ in range(5):  # a page's thumbnails: here of a job that is not there
            thumbnail = await console.get(f"/console/jobs/{uuid.uuid4()}/thumbnails/result")
            assert thumbnail.status_code == 404
        assert (await console.get("/console/jobs")).status_code == 200
        over = await console.get("/console/jobs")
        assert over.status_code == 429
        assert over.headers["retry-after"]


async def test_with_keys_off_the_console_needs_no_login_and_says_so(settings: Settings) -> None:
    async with api_client(settings) as console:
        home = await console.get("/console")
        assert home.status_code == 303
        assert home.headers["location"] == "/console/jobs"
        page = await console.get("/console/jobs")
        assert page.status_code == 200
        assert "API keys are off" in page.text
        assert 'href="/console/workers"' in page.text, "the local user has every role"
        assert (await console.get("/console/login")).headers["location"] == "/console/jobs"
