"""The API's request and response bodies (the event itself lives in ``schemas``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from core.jobs import JobStatus
from schemas import FilterName
from schemas.events import ImageUrl


class ImageJobRequest(BaseModel):
    """Apply ``filter`` to the image at ``url`` (the original specification's contract)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"url": "https://example.com/cat.jpg", "filter": "grayscale"}]}
    )

    url: ImageUrl
    filter: FilterName


class JobAccepted(BaseModel):
    """The job is in the event log; poll ``status_url`` for progress."""

    id: UUID
    status: JobStatus
    status_url: str
    result_url: str


class JobSource(BaseModel):
    kind: Literal["url", "upload"]
    url: str | None = Field(default=None, description="The image's URL, for kind 'url'.")


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
    attempts: int
    error: str | None
    result_url: str | None = Field(description="Where the processed image is served, once done.")


class Problem(BaseModel):
    """An error that is not a validation error: what went wrong, in one sentence."""

    detail: str


class Readiness(BaseModel):
    broker: str
    database: str
