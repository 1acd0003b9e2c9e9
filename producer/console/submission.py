"""Reading the console's submit form: a file or a URL, a filter, the CSRF token and the form's own id.

The form is multipart so that a browser without JavaScript can post a file. It goes through the same bounded
reader and the same checks as ``POST /images`` (:mod:`producer.body`); only its fields differ. Each rendering of
the form carries a random id that becomes the job's ``Idempotency-Key``: posting the same form twice (a double
click, a reload) names one job.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile

from producer.body import bounded_form, checked_upload, form_filter, reject, url_job
from producer.console.session import CSRF_FIELD, check_csrf
from producer.deps import get_services
from producer.intake import Upload
from schemas import FilterName

FIELDS = frozenset({"file", "url", "filter", CSRF_FIELD, "submission"})
SUBMISSION_ID_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class Submission:
    source: str | Upload
    image_filter: FilterName
    submission_id: str | None


@contextlib.asynccontextmanager
async def submitted_job(request: Request) -> AsyncIterator[Submission]:
    """The job the form asks for, for the block (an upload stays open until it ends); 422 naming the field, or
    :class:`~producer.console.session.CsrfRejected`."""
    settings = get_services(request).settings
    async with bounded_form(request, settings.max_upload_bytes, max_fields=len(FIELDS)) as form:
        token = form.get(CSRF_FIELD)
        check_csrf(request, token if isinstance(token, str) else None)
        for name in form:
            if name not in FIELDS:
                reject(name, "Extra inputs are not permitted", "extra_forbidden")
        image_filter = form_filter(form.get("filter"))
        upload = form.get("file")
        url = form.get("url")
        url = url.strip() if isinstance(url, str) else ""
        # A browser sends an empty file part when no file was chosen.
        chosen = isinstance(upload, UploadFile) and bool(upload.filename) and bool(upload.size)
        if chosen and url:
            reject("url", "give a file or a URL, not both")
        source: str | Upload
        if isinstance(upload, UploadFile) and chosen:
            source = await checked_upload(upload, settings.max_upload_bytes)
        elif url:
            source = url_job(url, image_filter, allow_private_urls=settings.allow_private_urls)
        else:
            reject("file", "choose an image file or paste the URL of one")
        submission = form.get("submission")
        valid_id = (
            isinstance(submission, str)
            and 0 < len(submission) <= SUBMISSION_ID_MAX_CHARS
            and submission.isascii()
            and submission.isprintable()
        )
        yield Submission(source, image_filter, f"console:{submission}" if valid_id else None)
