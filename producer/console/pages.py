"""The console's pages for every user: log in and out, submit a job, list jobs, follow one job.

Pages read the job store directly (no HTTP round trip to the API's own routes) with the same rules as the API:
a key sees only its own jobs unless it is an admin's.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from core.api_keys import Role
from core.blobs import ThumbnailKind
from core.callback_attempts import CallbackAttempts
from core.job_listing import JobQuery, MalformedCursor
from core.jobs import Job, JobStatus
from core.urls import redact_url
from producer import images
from producer.auth import Principal, principal_of_key
from producer.body import UploadsBusy
from producer.console import session
from producer.console.access import ConsoleRoute, LoginRequired, error_page, is_admin, optional_viewer, viewer
from producer.console.rendering import render
from producer.console.submission import submitted_job
from producer.deps import get_services
from producer.intake import IdempotencyKeyReused
from producer.publisher import BrokerUnavailable
from schemas import FilterName

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 25
PERIODS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1), "7d": dt.timedelta(days=7)}
FILTER_DESCRIPTIONS = {
    FilterName.GRAYSCALE: "Shades of grey",
    FilterName.SEPIA: "Warm, old-photo brown",
    FilterName.INVERT: "Negative colours",
    FilterName.BLUR: "Soft focus",
    FilterName.SHARPEN: "Crisper edges",
    FilterName.EDGE_ENHANCE: "Stronger outlines",
    FilterName.EMBOSS: "Raised relief",
    FilterName.CONTOUR: "Line drawing",
    FilterName.THUMBNAIL: "At most 256 px",
}
FINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})


@router.get("")
async def home(request: Request) -> Response:
    user = await optional_viewer(request)
    if user is None:
        raise LoginRequired
    reads = Role.READ in user.roles or Role.ADMIN in user.roles
    return RedirectResponse("/console/jobs" if reads else "/console/submit", status_code=303)


@router.get("/login")
async def login_form(request: Request, next: str = "/console/jobs") -> Response:
    if get_services(request).settings.auth_disabled:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", {"title": "Log in", "user": None, "next": _safe_next(next), "error": None})


@router.post("/login")
async def log_in(
    request: Request,
    key: Annotated[str, Form(max_length=512)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/console/jobs",
) -> Response:
    session.check_csrf(request, csrf)
    target = _safe_next(next)
    try:
        await principal_of_key(get_services(request), key.strip())
    except HTTPException:
        context = {"title": "Log in", "user": None, "next": target, "error": "That API key is unknown or revoked."}
        return render(request, "login.html", context, status_code=401)
    response = RedirectResponse(target, status_code=303)
    session.log_in(request, response, key.strip())
    return response


@router.post("/logout")
async def log_out(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    session.check_csrf(request, csrf)
    response = RedirectResponse("/console/login", status_code=303)
    session.log_out(response)
    return response


@router.get("/submit")
async def submit_form(request: Request) -> Response:
    user = await viewer(request, Role.SUBMIT)
    return _submit_page(request, user, error=None)


@router.post("/submit")
async def submit(request: Request) -> Response:
    user = await viewer(request, Role.SUBMIT)
    intake = get_services(request).intake
    try:
        async with submitted_job(request) as job:
            acceptance = await intake.submit(job.source, job.image_filter, job.submission_id, owner=user.key_id)
    except RequestValidationError as exc:
        messages = "; ".join(str(error.get("msg", "")) for error in exc.errors())
        return _submit_page(request, user, error=messages, status_code=422)
    except (UploadsBusy, BrokerUnavailable) as exc:
        return _submit_page(request, user, error=f"Nothing was accepted: {exc}. Try again shortly.", status_code=503)
    except IdempotencyKeyReused:
        return _submit_page(request, user, error="This form was already sent with another image.", status_code=409)
    return RedirectResponse(f"/console/jobs/{acceptance.job.image_id}", status_code=303)


@router.get("/jobs")
async def job_list(
    request: Request,
    status: Annotated[JobStatus | None, Query()] = None,
    filter: Annotated[FilterName | None, Query()] = None,
    q: Annotated[str, Query(max_length=36)] = "",
    period: Annotated[str, Query(max_length=8)] = "",
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    user = await viewer(request, Role.READ)
    services = get_services(request)
    since = PERIODS.get(period)
    query = JobQuery(
        status=status,
        filter=filter.value if filter else None,
        owner=_owner_scope(user),
        id_prefix=q.strip().lower() or None,
        requested_after=dt.datetime.now(dt.UTC) - since if since else None,
    )
    try:
        page = await services.jobs.list_jobs(query, cursor=cursor, limit=PAGE_SIZE)
    except MalformedCursor:
        return error_page(request, 422, "Bad link", "That page link is not valid; start from the first page.")
    chosen = {"status": status.value if status else "", "filter": filter.value if filter else "", "q": q}
    chosen["period"] = period if since else ""
    next_url = None
    if page.next_cursor:
        next_url = "/console/jobs?" + urlencode({**{k: v for k, v in chosen.items() if v}, "cursor": page.next_cursor})
    context = {
        "title": "Jobs",
        "user": user,
        "jobs": [_row(job) for job in page.jobs],
        "chosen": chosen,
        "statuses": list(JobStatus),
        "filters": list(FilterName),
        "periods": list(PERIODS),
        "next_url": next_url,
        "first_page": cursor is None,
    }
    return render(request, "jobs.html", context)


@router.get("/jobs/{image_id}")
async def job_page(request: Request, image_id: uuid.UUID) -> Response:
    user = await viewer(request, Role.READ)
    job = await _visible_job(request, user, image_id)
    cancellable = job.status is JobStatus.QUEUED and (Role.SUBMIT in user.roles or is_admin(user))
    context = {
        "title": f"Job {image_id}",
        "user": user,
        "job": _row(job),
        "cancellable": cancellable,
        "callback": await _callback(request, job),
    }
    return render(request, "job.html", context)


@router.post("/jobs/{image_id}/cancel")
async def cancel_job(
    request: Request, image_id: uuid.UUID, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    """The job page's Cancel button: ``DELETE /images/{id}``'s rules and answers, then back to the job's page."""
    user = await viewer(request, Role.SUBMIT)
    session.check_csrf(request, csrf)
    await images.cancelled_job(get_services(request), user, image_id)
    return RedirectResponse(f"/console/jobs/{image_id}", status_code=303)


@router.get("/jobs/{image_id}/status")
async def job_status(request: Request, image_id: uuid.UUID) -> JSONResponse:
    """What the job page polls while the job is not final."""
    user = await viewer(request, Role.READ)
    job = await _visible_job(request, user, image_id)
    row = _row(job)
    return JSONResponse(
        {key: row[key] for key in ("status", "final", "attempts", "executions", "error", "started", "finished")},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/jobs/{image_id}/thumbnails/{kind}")
async def job_thumbnail(request: Request, image_id: uuid.UUID, kind: ThumbnailKind) -> Response:
    user = await viewer(request, Role.READ, counted=False)
    return await images.read_thumbnail(image_id, kind, request, get_services(request), user)


@router.get("/jobs/{image_id}/original")
async def job_original(request: Request, image_id: uuid.UUID) -> Response:
    user = await viewer(request, Role.READ, counted=False)
    return await images.read_original(image_id, request, get_services(request), user)


@router.get("/jobs/{image_id}/result")
async def job_result(request: Request, image_id: uuid.UUID, download: bool = False) -> Response:
    """The result as the API serves it; ``download`` asks the browser to save it rather than show it."""
    user = await viewer(request, Role.READ, counted=False)
    response: Response = await images.read_result(image_id, request, get_services(request), user)
    if download and response.status_code == 200:
        response.headers["Content-Disposition"] = f'attachment; filename="{image_id}.png"'
    return response


def _submit_page(request: Request, user: Principal, *, error: str | None, status_code: int = 200) -> Response:
    context = {
        "title": "Submit",
        "user": user,
        "filters": [(name.value, FILTER_DESCRIPTIONS[name]) for name in FilterName],
        "submission": secrets.token_urlsafe(16),
        "error": error,
        "max_upload_mib": get_services(request).settings.max_upload_bytes // 2**20,
    }
    return render(request, "submit.html", context, status_code=status_code)


async def _visible_job(request: Request, user: Principal, image_id: uuid.UUID) -> Job:
    services = get_services(request)
    job = await services.jobs.get(str(image_id))
    if job is not None and user.may_see(job.owner):
        return job
    expired = await services.retention.expired_job(str(image_id)) if job is None else None
    if expired is not None and user.may_see(expired.owner):  # the API's rule: only its owner learns it existed
        raise HTTPException(
            410,
            f"Job {image_id} expired on {expired.expired_at:%Y-%m-%d %H:%M} UTC: its images and record are deleted.",
        )
    raise HTTPException(404, f"There is no job {image_id}, or it is not yours.")


def _owner_scope(user: Principal) -> str | None:
    return None if is_admin(user) or user.key_id is None else user.key_id


def _row(job: Job) -> dict[str, object]:
    """What the templates show of a job, every value plain text (escaped by the template)."""
    base = f"/console/jobs/{job.image_id}"
    done = job.status is JobStatus.DONE and job.files_expired_at is None  # expired files are not shown
    return {
        "id": job.image_id,
        "url": base,
        "status": job.status.value,
        "final": job.status in FINAL,
        "filter": job.filter,
        "source": redact_url(job.source_url) if job.source_url else "uploaded file",
        "requested_at": job.requested_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "started": job.started_at.isoformat() if job.started_at else None,
        "finished": job.finished_at.isoformat() if job.finished_at else None,
        "attempts": job.attempts,
        "executions": job.executions,
        "error": job.error,
        "kafka": _kafka(job),
        "files_expired_at": job.files_expired_at,
        "source_thumbnail": f"{base}/thumbnails/source" if done else None,
        "result_thumbnail": f"{base}/thumbnails/result" if done else None,
        "original": f"{base}/original" if done else None,
        "result": f"{base}/result" if done else None,
    }


async def _callback(request: Request, job: Job) -> dict[str, object] | None:
    """The job's completion callback and its attempts, oldest first; None when it asked for none."""
    if job.callback_url is None:
        return None
    attempts = (await CallbackAttempts(get_services(request).jobs.engine).of_images([job.image_id])).get(
        job.image_id, []
    )
    return {
        "url": redact_url(job.callback_url),
        "delivered": any(attempt.delivered for attempt in attempts),
        "attempts": [
            {
                "number": attempt.attempt,
                "at": attempt.attempted_at,
                "answer": attempt.status_code,
                "error": attempt.error,
                "delivered": attempt.delivered,
            }
            for attempt in attempts
        ],
    }


def _kafka(job: Job) -> dict[str, object] | None:
    if job.kafka_topic is None:
        return None
    return {"topic": job.kafka_topic, "partition": job.kafka_partition, "offset": job.kafka_offset, "key": job.image_id}


def _safe_next(target: str) -> str:
    """Where to go after logging in: a console path only, never another site (an open redirect)."""
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/jobs"
