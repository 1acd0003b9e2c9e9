"""``/images``: submit a job, read its status, fetch its result."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from core.api_keys import Role
from core.blobs import BlobMissing
from core.jobs import Job, JobStatus
from core.urls import redact_url
from producer import idempotency_header, openapi
from producer.auth import Reader, require
from producer.body import UnsupportedMediaType, UploadsBusy, job_request
from producer.deps import ServicesDep, get_services
from producer.intake import IdempotencyKeyReused
from producer.models import JobAccepted, JobSource, JobView
from producer.publisher import BrokerUnavailable

router = APIRouter(prefix="/images", tags=["images"])


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
        async with job_request(request, services.settings.max_upload_bytes) as (source, image_filter):
            acceptance = await services.intake.submit(source, image_filter, idempotency_key, owner=principal.key_id)
    except UnsupportedMediaType as exc:
        return _problem(415, str(exc))
    except UploadsBusy as exc:
        return _problem(503, f"{exc}; retry in 1 s", headers={"Retry-After": "1"})
    except IdempotencyKeyReused as exc:
        # 409, not 422: the request is valid on its own; it conflicts with what the key already names.
        return _problem(409, str(exc))
    except BrokerUnavailable:
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


@router.get("/{image_id}", responses=openapi.STATUS_RESPONSES, summary="Read a job's status")
async def read_status(image_id: UUID, services: ServicesDep, principal: Reader) -> JobView:
    job = await services.jobs.get(str(image_id))
    if job is None or not principal.may_see(job.owner):  # another client's job is not there, as far as you know
        raise _not_found(image_id)
    return _view(job)


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
    job = await services.jobs.get(str(image_id))
    if job is None or not principal.may_see(job.owner):
        raise _not_found(image_id)
    if job.status is not JobStatus.DONE or job.result_key is None:
        return _problem(409, f"job {image_id} is {job.status.value}; its result is served once it is done")
    settings = services.settings
    if settings.result_download == "redirect":
        url = await services.blobs.signed_url(job.result_key, settings.result_url_expiry_s)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    try:
        blob = await services.blobs.open(job.result_key)
    except BlobMissing:
        return _problem(404, f"the result of job {image_id} is no longer stored")
    headers = {"ETag": blob.etag, "Cache-Control": "private, no-cache"}
    if blob.etag in request.headers.get("if-none-match", ""):
        await blob.aclose()
        return Response(status_code=304, headers=headers)
    headers["Content-Length"] = str(blob.size_bytes)
    return StreamingResponse(blob.chunks, media_type="image/png", headers=headers)


def _not_found(image_id: UUID) -> HTTPException:
    return HTTPException(404, f"no image job {image_id}")


def _problem(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _status_path(image_id: str) -> str:
    return f"/images/{image_id}"


def _result_path(image_id: str) -> str:
    return f"/images/{image_id}/result"


def _view(job: Job) -> JobView:
    url = redact_url(job.source_url) if job.source_url else None
    source = JobSource(kind="url", url=url) if url else JobSource(kind="upload")
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
        result_url=_result_path(job.image_id) if job.status is JobStatus.DONE else None,
    )
