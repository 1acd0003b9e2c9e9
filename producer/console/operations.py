"""The console's operator pages (admin keys only): the workers' group and its lag, and the dead letters.

They run the admin API's own route functions (:mod:`producer.admin`), so a page shows exactly what
``GET /admin/...`` answers, and a redrive from here is the one ``POST /admin/dead-letters/redrive`` runs: the
code of ``image-replay redrive``, with its at-most-once guarantee and its dry run first.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import Response

from core.api_keys import Role
from core.jobs import JobStatus
from producer import admin
from producer.admin_models import RedriveRequest
from producer.console import charts
from producer.console.access import ConsoleRoute, viewer
from producer.console.rendering import render
from producer.console.session import check_csrf
from producer.deps import get_services
from schemas import ErrorCode

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

RATE_WINDOW = dt.timedelta(minutes=15)
RATE_BUCKET_S = 60
REFRESH_S = 10
DEAD_LETTERS_SHOWN = 50


@router.get("/workers")
async def workers(request: Request) -> Response:
    user = await viewer(request, Role.ADMIN)
    services = get_services(request)
    group = await admin.consumer_group(services)
    now = dt.datetime.now(dt.UTC)
    buckets = await services.jobs.finished_counts(now - RATE_WINDOW, RATE_BUCKET_S)
    per_minute = [(bucket.start.strftime("%H:%M"), bucket.done, bucket.failed) for bucket in buckets]
    last_five = buckets[-5:]
    seconds = max(len(last_five), 1) * RATE_BUCKET_S
    owners = {member.member_id: member.client_id for member in group.overview.members}
    context = {
        "title": "Workers",
        "user": user,
        "group": group.overview,
        "owners": owners,
        "samples": len(group.lag_history.samples),
        "lag_chart": charts.line_chart([sample.total_lag for sample in group.lag_history.samples]),
        "rate_chart": charts.stacked_bars(per_minute),
        "done_per_s": sum(bucket.done for bucket in last_five) / seconds,
        "failed_per_s": sum(bucket.failed for bucket in last_five) / seconds,
        "status_counts": await services.jobs.status_counts(None),
        "statuses": list(JobStatus),
        "size": {"width": charts.WIDTH, "height": charts.HEIGHT},
        "refresh_s": REFRESH_S,
    }
    return render(request, "workers.html", context)


@router.get("/dead-letters")
async def dead_letters(request: Request, error_code: Annotated[ErrorCode | None, Query()] = None) -> Response:
    user = await viewer(request, Role.ADMIN)
    overview = await admin.dead_letters(get_services(request), error_code=error_code, limit=DEAD_LETTERS_SHOWN)
    context = {
        "title": "Dead letters",
        "user": user,
        "overview": overview,
        "chosen": error_code.value if error_code else "",
        "codes": list(ErrorCode),
    }
    return render(request, "dead_letters.html", context)


@router.post("/dead-letters/redrive")
async def redrive(
    request: Request,
    csrf: Annotated[str, Form(max_length=128)] = "",
    error_code: Annotated[str, Form(max_length=64)] = "",
    mode: Annotated[str, Form(max_length=16)] = "preview",
) -> Response:
    """A dry run first (``mode=preview``) showing what would be redriven; its page's button runs it for real."""
    user = await viewer(request, Role.ADMIN)
    check_csrf(request, csrf)
    code = _error_code(error_code)
    execute = mode == "execute"
    body = RedriveRequest(error_code=code, dry_run=not execute)
    report = await admin.redrive_dead_letters(body, get_services(request), user)
    context = {
        "title": "Redrive" if execute else "Redrive preview",
        "user": user,
        "report": report,
        "error_code": code.value if code else "",
        "executed": execute,
    }
    return render(request, "redrive.html", context)


def _error_code(text: str) -> ErrorCode | None:
    """The form's error code: none chosen means every dead letter."""
    if not text:
        return None
    try:
        return ErrorCode(text)
    except ValueError:
        raise HTTPException(422, f"there is no error code {text[:64]!r}") from None
