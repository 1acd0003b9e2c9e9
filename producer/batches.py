"""``POST /images:batch``: many URL jobs in one request, answered item by item, published in one transaction.

Each item is checked on its own: an invalid one is answered in its place with the error a single ``POST /images``
would have got, and the valid ones are accepted. The valid items' events share one Kafka transaction, so the broker
takes all of them or none: a 503 means that no item of the batch will ever be processed, as for a single job.

The answer is 200, not 207 Multi-Status: 207 is WebDAV's, defined with an XML body, while this one is JSON that
lists each item's outcome; a client reads the items either way. A batch counts as one request for the rate limit
(``MAX_BATCH_JOBS`` bounds what one request can do). An ``Idempotency-Key`` is refused: a retry after a 503 is
safe without one, since nothing of the batch was accepted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from core.api_keys import Role
from producer import idempotency_header, openapi
from producer.allow import AllowEveryMethodRoute
from producer.auth import require
from producer.body import bounded_json
from producer.callback_rules import unsignable_callback
from producer.deps import get_services
from producer.metrics import Refusal
from producer.models import (
    ALLOW_PRIVATE_URLS_CONTEXT,
    BatchItemAccepted,
    BatchItemRejected,
    BatchResult,
    ImageBatchRequest,
    ImageJobRequest,
    ItemError,
)
from producer.publisher import BrokerUnavailable
from schemas import FilterName

MAX_BATCH_JSON_BYTES = 256 * 1024  # room for MAX_BATCH_JOBS items with long URLs; MAX_JSON_BYTES is for one

router = APIRouter(tags=["images"], route_class=AllowEveryMethodRoute)


@router.post(
    "/images:batch",
    summary="Submit several image jobs at once",
    openapi_extra={**openapi.BATCH_BODY, **openapi.BEARER},
    responses=openapi.BATCH_RESPONSES,
)
async def submit_batch(request: Request) -> JSONResponse:
    """Accept every valid item in one transaction; answer each item in order with its job or its error."""
    principal = await require(request, Role.SUBMIT)
    services = get_services(request)
    if request.headers.get(idempotency_header.HEADER) is not None:
        raise RequestValidationError(
            [
                {
                    "type": "not_supported",
                    "loc": ("header", idempotency_header.HEADER),
                    "msg": "Idempotency-Key is not supported on a batch: after a 503 nothing was accepted, so a "
                    "plain retry is safe",
                }
            ]
        )
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in ("application/json", "") and not media_type.endswith("+json"):
        return JSONResponse({"detail": f"unsupported content type {media_type!r}; send JSON"}, status_code=415)
    body = await bounded_json(request, MAX_BATCH_JSON_BYTES)
    try:
        batch = ImageBatchRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_input=False)]
        ) from exc

    context = {ALLOW_PRIVATE_URLS_CONTEXT: services.settings.allow_private_urls}
    valid: list[tuple[int, str, FilterName, str | None]] = []
    answers: dict[int, BatchItemAccepted | BatchItemRejected] = {}
    for index, item in enumerate(batch.jobs):
        try:
            job = ImageJobRequest.model_validate(item, context=context)
        except ValidationError as exc:
            answers[index] = BatchItemRejected(index=index, error=_item_error(index, exc.errors(include_input=False)))
        else:
            callback_url = None if job.callback_url is None else str(job.callback_url)
            location = ("body", "jobs", index, "callback_url")
            refusal = None
            if callback_url is not None:
                refusal = unsignable_callback(services.settings, principal.key_id, location)
            if refusal is not None:
                answers[index] = BatchItemRejected(index=index, error=ItemError(**refusal))
            else:
                valid.append((index, str(job.url), job.filter, callback_url))

    if valid:
        try:
            jobs = await services.intake.submit_urls(
                [(url, image_filter, callback_url) for _, url, image_filter, callback_url in valid],
                owner=principal.key_id,
            )
        except BrokerUnavailable:
            services.metrics.refused(Refusal.BROKER_UNAVAILABLE)
            retry_after_s = services.settings.retry_after_s
            detail = f"the event log is unavailable; no job of the batch was accepted, retry in {retry_after_s} s"
            return JSONResponse(
                {"detail": detail},
                status_code=503,
                headers={"Retry-After": str(retry_after_s)},
            )
        for (index, *_), accepted in zip(valid, jobs, strict=True):
            answers[index] = BatchItemAccepted(
                index=index, id=accepted.image_id, status=accepted.status, status_url=f"/images/{accepted.image_id}"
            )
    result = BatchResult(jobs=[answers[index] for index in range(len(batch.jobs))])
    return JSONResponse(result.model_dump(mode="json"))


def _item_error(index: int, errors: list[Any]) -> ItemError:
    """The item's first problem, located in the whole body as a 422 would locate it."""
    first = errors[0]
    return ItemError(type=first["type"], loc=["body", "jobs", index, *first["loc"]], msg=first["msg"])
