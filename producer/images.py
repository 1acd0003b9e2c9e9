"""``/images``: submit a job, list jobs, read a job's status, fetch its result, thumbnails and original."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import AwareDatetime, BeforeValidator

from core.api_keys import Role
from core.blobs import THUMBNAIL_MEDIA_TYPE, ThumbnailKind
from core.callback_attempts import CallbackAttempt, CallbackAttempts
from core.job_listing import CURSOR_PATTERN, MAX_PAGE_SIZE
from core.jobs import Job, JobQuery, JobStatus, MalformedCursor
from core.retention import ExpiredJob
from core.urls import redact_url
from producer import idempotency_header, openapi
from producer.allow import AllowEveryMethodRoute
from producer.auth import Principal, Reader, Submitter, require
from producer.blob_responses import blob_response
from producer.body import UnsupportedMediaType, UploadsBusy, job_request
from producer.callback_rules import unsignable_callback
from producer.deps import Services, ServicesDep, get_services
from producer.intake import IdempotencyKeyReused
from producer.metrics import Refusal
from producer.models import (
    CallbackAttemptView,
    CallbackView,
    JobAccepted,
    JobList,
    JobSource,
    JobView,
    KafkaCoordinates,
    ThumbnailUrls,
)
from producer.publisher import BrokerUnavailable
from schemas import FilterName

router = APIRouter(prefix="/images", tags=["images"], route_class=AllowEveryMethodRoute)
# RFC 3339 as the OpenAPI format date-time says, with its zone: pydantic alone would also take "0.5" (seconds since
# 1970) or a date without a time.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("expected an RFC 3339 date-time with a zone, e.g. 2026-11-27T10:00:00Z")
    return value


DateTimeParameter = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


@router.post(
    "",
    status_code=202,
    summary="Submit an image job",
    openapi_extra={**openapi.SUBMIT_BODY, **openapi.BEARER, "parameters": [idempotency_header.PARAMETER]},
    responses=openapi.SUBMIT_RESPONSES,
)
async def submit_image(request: Request) -> JSONResponse:
    """Append an ``image_process`` event keyed by a new image id; answer once the broker acked it."""
    principal = await require(request, Role.SUBMIT)
    services = get_services(request)
    idempotency_key = idempotency_header.idempotency_key(request)
    try:
        async with job_request(request, services.settings.max_upload_bytes) as (source, image_filter, callback_url):
            if callback_url is not None:
                refusal = unsignable_callback(services.settings, principal.key_id, ("body", "callback_url"))
                if refusal is not None:
                    raise RequestValidationError([refusal])
            acceptance = await services.intake.submit(
                source, image_filter, idempotency_key, owner=principal.key_id, callback_url=callback_url
            )
    except UnsupportedMediaType as exc:
        return _problem(415, str(exc))
    except UploadsBusy as exc:
        services.metrics.refused(Refusal.UPLOADS_BUSY)
        return _problem(503, f"{exc}; retry in 1 s", headers={"Retry-After": "1"})
    except IdempotencyKeyReused as exc:
        # 409, not 422: the request is valid on its own; it conflicts with what the key already names.
        return _problem(409, str(exc))
    except BrokerUnavailable:
        services.metrics.refused(Refusal.BROKER_UNAVAILABLE)
        retry_after_s = services.settings.retry_after_s
        return _problem(
            503,
            f"the event log is unavailable; nothing was accepted, retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )
    job = acceptance.job
    body = JobAccepted(
        id=UUID(job.image_id),
        status=job.status,
        status_url=_status_path(job.image_id),
        result_url=_result_path(job.image_id),
    )
    headers = {"Location": body.status_url}
    if acceptance.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


@router.get("", responses=openapi.LIST_RESPONSES, summary="List jobs, newest first")
async def list_jobs(
    services: ServicesDep,
    principal: Reader,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    image_filter: Annotated[FilterName | None, Query(alias="filter", description="Only jobs of this filter.")] = None,
    q: Annotated[
        str | None, Query(pattern=r"^[0-9a-fA-F-]{1,36}$", description="Only jobs whose id starts with this.")
    ] = None,
    requested_after: Annotated[
        DateTimeParameter | None, Query(description="Only jobs requested at or after this time (with its zone).")
    ] = None,
    requested_before: Annotated[
        DateTimeParameter | None, Query(description="Only jobs requested before this time (with its zone).")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="The `next_cursor` of the page before, passed back unchanged."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Jobs per page.")] = 20,
) -> JobList:
    """The caller's jobs (an admin key's: everyone's), newest first, a page at a time.

    Pages follow each other by cursor, not by offset: a job accepted meanwhile does not shift the pages.
    """
    query = JobQuery(
        status=status,
        filter=image_filter.value if image_filter else None,
        owner=_listing_owner(principal),
        id_prefix=q,
        requested_after=requested_after,
        requested_before=requested_before,
    )
    try:
        page = await services.jobs.list_jobs(query, cursor=cursor, limit=limit)
    except MalformedCursor as exc:
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "cursor"), "msg": str(exc)}]) from None
    return JobList(items=await _views(services, page.jobs), next_cursor=page.next_cursor)


@router.get("/{image_id}", responses=openapi.STATUS_RESPONSES, summary="Read a job's status")
async def read_status(image_id: UUID, services: ServicesDep, principal: Reader) -> JobView:
    """The job's status; with its completion callback's attempts when it asked for one."""
    [view] = await _views(services, [await _visible_job(services, principal, image_id)])
    return view


@router.delete("/{image_id}", responses=openapi.CANCEL_RESPONSES, summary="Cancel a queued job")
async def cancel_job(image_id: UUID, services: ServicesDep, principal: Submitter) -> JobView:
    """Cancel a job no worker has started (like Celery's revoke): it ends ``cancelled`` and is never run.

    A job already processing, done or failed is a 409 naming its status: a running job is not interrupted, it
    finishes. Cancelling a cancelled job answers 200 again. The database decides a race with a worker
    (:meth:`core.jobs.JobStore.cancel`).
    """
    [view] = await _views(services, [await cancelled_job(services, principal, image_id)])
    return view


async def cancelled_job(services: Services, principal: Principal, image_id: UUID) -> Job:
    """The job, cancelled if it was queued (the console's Cancel button too); 404 or 409 as for ``DELETE``."""
    await _visible_job(services, principal, image_id)  # another key's job is not there, cancelled or not
    job = await services.jobs.cancel(str(image_id))
    if job is None:
        raise _not_found(image_id)
    if job.status is not JobStatus.CANCELLED:
        raise HTTPException(
            409, f"job {image_id} is {job.status.value}; only a queued job can be cancelled (a running one finishes)"
        )
    return job


@router.get(
    "/{image_id}/result",
    summary="Download the processed image",
    response_class=StreamingResponse,
    responses=openapi.RESULT_RESPONSES,
)
async def read_result(image_id: UUID, request: Request, services: ServicesDep, principal: Reader) -> Any:
    """The result, streamed from the blob store (or, with ``RESULT_DOWNLOAD=redirect``, a 307 to a signed URL).

    A re-run of the job replaces its result, so caches must revalidate: ``no-cache`` with an ``ETag``.
    """
    job = _files_kept(await _visible_job(services, principal, image_id))
    if job.status is not JobStatus.DONE or job.result_key is None:
        return _problem(409, f"job {image_id} is {job.status.value}; its result is served once it is done")
    settings = services.settings
    if settings.result_download == "redirect":
        url = await services.blobs.signed_url(job.result_key, settings.result_url_expiry_s)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    missing = HTTPException(404, f"the result of job {image_id} is no longer stored")
    return await blob_response(request, services.blobs, job.result_key, media_type="image/png", missing=missing)


@router.get(
    "/{image_id}/thumbnails/{kind}",
    summary="Download a thumbnail of the source or the result",
    response_class=StreamingResponse,
    responses=openapi.THUMBNAIL_RESPONSES,
)
async def read_thumbnail(
    image_id: UUID, kind: ThumbnailKind, request: Request, services: ServicesDep, principal: Reader
) -> Response:
    """The worker's WEBP thumbnail (at most 256 px a side) of the job's source or result, stored with the result."""
    job = _files_kept(await _visible_job(services, principal, image_id))
    key = services.blobs.thumbnail_key(job.image_id, kind)
    missing = _not_stored(job, f"{kind.value} thumbnail")
    return await blob_response(request, services.blobs, key, media_type=THUMBNAIL_MEDIA_TYPE, missing=missing)


@router.get(
    "/{image_id}/original",
    summary="Download the image the job started from",
    response_class=StreamingResponse,
    responses=openapi.ORIGINAL_RESPONSES,
)
async def read_original(image_id: UUID, request: Request, services: ServicesDep, principal: Reader) -> Response:
    """The uploaded image, or the one a worker downloaded for a URL job (stored once the job is done), as sent."""
    job = _files_kept(await _visible_job(services, principal, image_id))
    blobs = services.blobs
    # The upload's key is the job's own, never the row's blob_key: a forged event could have named another's.
    key = blobs.original_key(job.image_id) if job.blob_key is None else blobs.upload_key(job.image_id)
    return await blob_response(request, blobs, key, media_type=None, missing=_not_stored(job, "original image"))


async def _visible_job(services: Services, principal: Principal, image_id: UUID) -> Job:
    """The job, if the caller may see it; else 404 (another client's job is not there, as far as it knows), or 410
    when its row expired (to its owner only, by the same rule)."""
    job = await services.jobs.get(str(image_id))
    if job is not None and principal.may_see(job.owner):
        return job
    if job is None:  # only then: the tombstone look-up costs nothing on the way of a job that is there
        expired = await services.retention.expired_job(str(image_id))
        if expired is not None and principal.may_see(expired.owner):
            raise _gone(expired)
    raise _not_found(image_id)


def _files_kept(job: Job) -> Job:
    """The job, if its files are still kept; else 410 (they expired after ``RESULT_TTL``, the row is still there)."""
    if job.files_expired_at is not None:
        raise HTTPException(
            410, f"the files of job {job.image_id} expired at {job.files_expired_at.isoformat()} (RESULT_TTL)"
        )
    return job


def _gone(expired: ExpiredJob) -> HTTPException:
    return HTTPException(410, f"image job {expired.image_id} expired at {expired.expired_at.isoformat()} (JOB_TTL)")


def _not_stored(job: Job, what: str) -> HTTPException:
    """A job's image that is not stored: 409 while the job is not done (a worker stores it before it marks the job
    done, as with the result), 404 once it is (it finished before this image was kept, or was deleted since)."""
    if job.status is not JobStatus.DONE:
        return HTTPException(409, f"job {job.image_id} is {job.status.value}; its {what} is stored once it is done")
    return HTTPException(404, f"the {what} of job {job.image_id} is not stored")


def _listing_owner(principal: Principal) -> str | None:
    """Whose jobs the caller lists: an admin's key (or anyone with auth off) everyone's, any other key its own."""
    return None if Role.ADMIN in principal.roles else principal.key_id


def _not_found(image_id: UUID) -> HTTPException:
    return HTTPException(404, f"no image job {image_id}")


def _problem(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _status_path(image_id: str) -> str:
    return f"/images/{image_id}"


def _result_path(image_id: str) -> str:
    return f"/images/{image_id}/result"


async def _views(services: Services, jobs: Sequence[Job]) -> list[JobView]:
    """The jobs' views, their callbacks' attempts read with one statement."""
    with_callbacks = [job.image_id for job in jobs if job.callback_url is not None]
    attempts = await CallbackAttempts(services.jobs.engine).of_images(with_callbacks)
    return [_view(job, attempts.get(job.image_id, [])) for job in jobs]


def _callback_view(url: str, attempts: list[CallbackAttempt]) -> CallbackView:
    delivered = [attempt.attempted_at for attempt in attempts if attempt.delivered]
    return CallbackView(
        url=redact_url(url),
        attempts=[
            CallbackAttemptView(
                attempt=attempt.attempt,
                attempted_at=attempt.attempted_at,
                status_code=attempt.status_code,
                error=attempt.error,
                delivered=attempt.delivered,
            )
            for attempt in attempts
        ],
        delivered_at=delivered[0] if delivered else None,
    )


def _view(job: Job, callback_attempts: list[CallbackAttempt]) -> JobView:
    url = redact_url(job.source_url) if job.source_url else None
    source = JobSource(kind="url", url=url) if url else JobSource(kind="upload")
    done = job.status is JobStatus.DONE and job.files_expired_at is None  # an expired job's files are not served
    base = _status_path(job.image_id)
    kafka = None
    if job.kafka_topic is not None and job.kafka_partition is not None and job.kafka_offset is not None:
        kafka = KafkaCoordinates(
            topic=job.kafka_topic, partition=job.kafka_partition, offset=job.kafka_offset, key=job.image_id
        )
    return JobView(
        id=UUID(job.image_id),
        status=job.status,
        filter=job.filter,
        source=source,
        requested_at=job.requested_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        executions=job.executions,
        error=job.error,
        result_url=_result_path(job.image_id) if done else None,
        kafka=kafka,
        # Stored by the worker before it marks the job done; an upload is stored before the job is accepted.
        thumbnail_urls=ThumbnailUrls(
            source=f"{base}/thumbnails/source" if done else None, result=f"{base}/thumbnails/result" if done else None
        ),
        original_url=f"{base}/original"
        if done or (job.blob_key is not None and job.files_expired_at is None)
        else None,
        files_expired_at=job.files_expired_at,
        callback=None if job.callback_url is None else _callback_view(job.callback_url, callback_attempts),
    )
