"""Operator data for the admin pages: the workers' consumer group, the dead letters, and redriving them.

Every route needs an admin key (401 without a key, 403 for a key without the admin role). Kafka is asked on each
request, within a deadline: when it does not answer, the route answers 503 with Retry-After, never a 500 or a
hang. The lag history is sampled by this process only while someone looks (core/lag_history.py).

A redrive runs the code of ``image-replay redrive`` (core/redrive.py): the same at-most-once guarantee per
progress group (<CONSUMER_GROUP>.redrive), a dry run unless the body says ``"dry_run": false``. One redrive runs
at a time in an API process (another gets 409). That lock does not reach other API processes or the CLI: there
the CLI's rule applies, run one redrive per progress group at a time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from core.api_keys import Role
from core.clients import KafkaUnavailable, kafka_deadline
from core.consumer_group import GroupReader
from core.dead_letter_overview import DeadLetterOverview, dead_letter_overview
from core.lag_history import LagHistory
from core.redrive import Report, redrive
from core.topics import TopicMissing, topic_partitions
from producer.admin_models import ConsumerGroupPage, LagHistoryView, RedriveReport, RedriveRequest
from producer.auth import Principal, RequireRole
from producer.deps import Services, ServicesDep
from producer.metrics import Refusal
from producer.models import Problem
from producer.openapi import RETRY_AFTER
from schemas import ErrorCode

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 10.0
REDRIVE_TIMEOUT_S = 120.0
MAX_DEAD_LETTERS = 500
_CUT_SHORT = " (a redrive cut short keeps what it redrove, at most once: run it again to finish)"

_ADMIN = RequireRole(Role.ADMIN)  # one instance: FastAPI solves it once per request for the router and a route
Admin = Annotated[Principal, Depends(_ADMIN)]

_UNAVAILABLE: dict[str, Any] = {
    "model": Problem,
    "description": "Kafka does not answer; retry after Retry-After.",
    "headers": RETRY_AFTER,
}
router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(_ADMIN)],
    responses={
        401: {"model": Problem, "description": "No valid API key."},
        403: {"model": Problem, "description": "The API key lacks the admin role."},
        429: {"model": Problem, "description": "The API key is over its rate limit.", "headers": RETRY_AFTER},
        503: _UNAVAILABLE,
    },
)


@router.get("/consumer-group", summary="The workers' consumer group and its lag", response_model=ConsumerGroupPage)
async def consumer_group(services: ServicesDep) -> ConsumerGroupPage:
    """The group's state, members and their partitions, the lag per partition, and the lag of the last minutes
    (sampled every few seconds while someone asks for this page)."""
    with _unavailable_is_503(services):
        overview = await services.group_reader.describe()
    history = services.lag_history
    history.record(overview)
    history.ensure_running()
    return ConsumerGroupPage(
        overview=overview,
        lag_history=LagHistoryView(interval_s=history.interval_s, window_s=history.window_s, samples=history.samples()),
    )


@router.get("/dead-letters", summary="Dead letters by error code, and the newest", response_model=DeadLetterOverview)
async def dead_letters(
    services: ServicesDep,
    error_code: Annotated[ErrorCode | None, Query(description="Only list dead letters with this code.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DEAD_LETTERS, description="How many dead letters to list.")] = 50,
) -> DeadLetterOverview:
    """Counts by stable error code over the last records of each DLQ partition (``truncated`` says when older ones
    were not read), and the newest ``limit`` dead letters with ``error_code``."""
    with _unavailable_is_503(services):
        return await dead_letter_overview(
            services.settings, error_code=None if error_code is None else error_code.value, limit=limit
        )


@router.post(
    "/dead-letters/redrive",
    summary="Redrive dead letters (dry run by default)",
    response_model=RedriveReport,
    responses={
        400: {"model": Problem, "description": "The body is not JSON."},
        409: {"model": Problem, "description": "A redrive is running in this API process."},
    },
)
async def redrive_dead_letters(body: RedriveRequest, services: ServicesDep, principal: Admin) -> RedriveReport:
    """Re-publish the dead letters that match to the main topic, as ``image-replay redrive`` does (each at most
    once per progress group); with ``dry_run`` (the default) only count them. Answers the counts by error code."""
    settings, lock, options = services.settings, services.redrive_lock, body.options()
    if lock.locked():
        raise HTTPException(409, "a redrive is running in this API process; retry once it is done")
    async with lock:
        with _unavailable_is_503(services, hint=_CUT_SHORT):
            try:
                # Fails fast when Kafka does not answer; the run's own bound is longer: it may have much to read.
                async with kafka_deadline(settings, CHECK_TIMEOUT_S, f"looking up topic {settings.dlq_topic}"):
                    await topic_partitions(settings, settings.dlq_topic)
            except TopicMissing:  # no worker ever started (they make the DLQ): no dead letter either
                return RedriveReport.of(Report(dry_run=body.dry_run, group=options.progress_group(settings)))
            async with kafka_deadline(settings, REDRIVE_TIMEOUT_S, "redriving dead letters"):
                report = await redrive(settings, options)
    logger.info(
        "redrive by API key %s (dry run: %s): %s",
        principal.key_id or "(auth off)",
        report.dry_run,
        report.as_dict()["totals"],
    )
    return RedriveReport.of(report)


@contextlib.contextmanager
def _unavailable_is_503(services: Services, hint: str = "") -> Iterator[None]:
    """Kafka not answering (or a topic not made yet) is a condition that passes: 503 with Retry-After."""
    settings = services.settings
    try:
        yield
    except (KafkaUnavailable, TopicMissing) as exc:
        logger.warning("admin request: %s", exc)
        services.metrics.refused(Refusal.BROKER_UNAVAILABLE)
        raise HTTPException(
            503,
            f"Kafka is unavailable: {exc}; retry in {settings.retry_after_s} s{hint}",
            {"Retry-After": str(settings.retry_after_s)},
        ) from exc


def lag_history(reader: GroupReader) -> LagHistory:
    """The lag history the lifespan keeps in Services: samples read by ``reader``, whose connections are closed
    when sampling stops for lack of interest."""
    return LagHistory(reader.describe, on_idle=reader.close)
