"""The API's request and response bodies (the event itself lives in ``schemas``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from core.addresses import literal_ip_blocked
from core.jobs import JobStatus
from schemas import FilterName
from schemas.events import ImageUrl

BLOCKED_CALLBACK_URL = "blocked_url"
"""The 422 error type of a callback URL whose host is a non-public literal address."""
ALLOW_PRIVATE_URLS_CONTEXT = "allow_private_urls"
"""Validation context key: true lets :class:`ImageJobRequest` accept URLs of non-public literal IP addresses."""


class ImageJobRequest(BaseModel):
    """Apply ``filter`` to the image at ``url`` (the original specification's contract).

    A URL whose host is a literal IP address that is not public (loopback, private, link-local, ...) is refused
    here, unless the validation context sets ``allow_private_urls`` (the API passes its ``ALLOW_PRIVATE_URLS``).
    Host names are left to the workers, which resolve them and check every address (``core.addresses``).
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"url": "https://example.com/cat.jpg", "filter": "grayscale"}]}
    )

    url: ImageUrl
    filter: FilterName
    callback_url: ImageUrl | None = Field(
        default=None,
        description="Where to POST a signed JSON callback once the job is done or failed (see the README's "
        "Completion callbacks). The same rules as `url`: http(s), public addresses only.",
    )

    @field_validator("url")
    @classmethod
    def _public_literal_address(cls, url: ImageUrl, info: ValidationInfo) -> ImageUrl:
        context = info.context if isinstance(info.context, dict) else {}
        if not context.get(ALLOW_PRIVATE_URLS_CONTEXT) and url.host is not None and literal_ip_blocked(url.host):
            raise ValueError(
                "URL host is a non-public IP address (loopback, private, link-local, shared or reserved); "
                "only public addresses are fetched"
            )
        return url

    @field_validator("callback_url")
    @classmethod
    def _public_callback_address(cls, url: ImageUrl | None, info: ValidationInfo) -> ImageUrl | None:
        return public_callback_url(url, info)


class CallbackTarget(BaseModel):
    """A ``callback_url`` on its own: the multipart form's field, checked as the JSON body's is."""

    model_config = ConfigDict(extra="forbid")

    callback_url: ImageUrl | None = None

    @field_validator("callback_url")
    @classmethod
    def _public_callback_address(cls, url: ImageUrl | None, info: ValidationInfo) -> ImageUrl | None:
        return public_callback_url(url, info)


def public_callback_url(url: ImageUrl | None, info: ValidationInfo) -> ImageUrl | None:
    """Refuse a callback URL whose host is a literal non-public address, as image URLs are (unless the context
    allows private URLs); host names are checked by the worker at each POST, against every address they resolve to.
    """
    context = info.context if isinstance(info.context, dict) else {}
    if url is None or context.get(ALLOW_PRIVATE_URLS_CONTEXT) or url.host is None:
        return url
    if literal_ip_blocked(url.host):
        raise PydanticCustomError(
            BLOCKED_CALLBACK_URL,
            "callback URL host is a non-public IP address (loopback, private, link-local, shared or reserved); "
            "callbacks go to public addresses only",
        )
    return url


MAX_BATCH_JOBS = 100
"""Jobs one ``POST /images:batch`` may carry: their events share one transaction, and one request stays small."""


class ImageBatchRequest(BaseModel):
    """Submit several jobs at once; each item is an :class:`ImageJobRequest`, checked on its own."""

    model_config = ConfigDict(extra="forbid")

    # Any, not ImageJobRequest: an invalid item is answered in its place, not by failing the whole batch.
    jobs: list[Any] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


class ItemError(BaseModel):
    """Why one item of a batch was not accepted, as a 422 would say it."""

    type: str
    loc: list[str | int]
    msg: str


class BatchItemAccepted(BaseModel):
    """The item's job is in the event log; poll ``status_url``."""

    index: int
    id: UUID
    status: JobStatus
    status_url: str


class BatchItemRejected(BaseModel):
    """The item was invalid: no job was made of it."""

    index: int
    error: ItemError


class BatchResult(BaseModel):
    """One entry per submitted item, in the order sent."""

    jobs: list[BatchItemAccepted | BatchItemRejected]


class JobAccepted(BaseModel):
    """The job is in the event log; poll ``status_url`` for progress."""

    id: UUID
    status: JobStatus
    status_url: str
    result_url: str


class JobSource(BaseModel):
    kind: Literal["url", "upload"]
    url: str | None = Field(
        default=None, description="The image's URL, for kind 'url', without user info and with query values masked."
    )


class KafkaCoordinates(BaseModel):
    """Where the record a worker last started the job from sits in Kafka (a redelivery or a redrive moves it)."""

    topic: str
    partition: int
    offset: int
    key: str = Field(description="The record's key: the job's id, which keeps one image's events in order.")


class ThumbnailUrls(BaseModel):
    """Where the job's WEBP thumbnails (at most 256 px a side) are served; each is null until the job is done."""

    source: str | None
    result: str | None


class CallbackAttemptView(BaseModel):
    """One POST of the job's callback."""

    attempt: int
    attempted_at: dt.datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None = Field(description="Why the attempt failed (a status that is not 2xx, a timeout, ...).")
    delivered: bool


class CallbackView(BaseModel):
    """The job's completion callback: where it goes and every attempt so far."""

    url: str = Field(description="The callback URL, without user info and with query values masked.")
    attempts: list[CallbackAttemptView]
    delivered_at: dt.datetime | None = Field(description="When a POST was answered 2xx; null until then.")


class JobView(BaseModel):
    """A job's progress as the workers report it."""

    id: UUID
    status: JobStatus
    filter: str
    source: JobSource
    requested_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int = Field(description="Tries within the latest execution (a failed try is retried with back-off).")
    executions: int = Field(
        description="How many times a worker started the job: above 1 when a worker died mid-job and another "
        "ran it again (the result is recorded once)."
    )
    error: str | None
    result_url: str | None = Field(description="Where the processed image is served, once done.")
    kafka: KafkaCoordinates | None = Field(description="The job's record in Kafka, once a worker has started it.")
    thumbnail_urls: ThumbnailUrls
    original_url: str | None = Field(
        description="Where the image the job started from is served at full size: an upload's at once, a URL's "
        "(as the worker downloaded it) once the job is done."
    )
    files_expired_at: dt.datetime | None = Field(
        default=None,
        description="When the job's files (result, thumbnails, original) were deleted after `RESULT_TTL`: its URLs "
        "are then null and those routes answer 410. The job itself is kept until `JOB_TTL`, then answers 410 too.",
    )
    callback: CallbackView | None = Field(
        default=None, description="The completion callback, when the job was submitted with a `callback_url`."
    )


class JobList(BaseModel):
    """A page of jobs, newest first."""

    items: list[JobView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page (the same filters); null on the last page."
    )


class Problem(BaseModel):
    """An error that is not a validation error: what went wrong, in one sentence."""

    detail: str


class Readiness(BaseModel):
    broker: str
    database: str
