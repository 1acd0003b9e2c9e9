"""Bodies of the admin routes (producer/admin.py): the redrive request and report, the consumer group page.

The overviews themselves are core's models (core.consumer_group, core.dead_letter_overview, core.lag_history),
so the console pages and the JSON answers show the same fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, field_validator

from core.consumer_group import GroupOverview
from core.lag_history import LagSample
from core.redrive import RedriveOptions, Report
from schemas import ErrorCode


class RedriveRequest(BaseModel):
    """What to redrive: the filters of ``image-replay redrive``, combined with AND; a dry run unless
    ``dry_run`` is false."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_code: ErrorCode | None = Field(default=None, description="Only dead letters with this stable error code.")
    error_class: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="Only dead letters whose dlq.error.class is this, in full or by its last dotted part "
        "(HttpClientError). Prefer error_code: classes move with the code.",
    )
    failed_after: AwareDatetime | None = Field(
        default=None, description="Only dead letters that last failed at or after this time (ISO-8601 with zone)."
    )
    failed_before: AwareDatetime | None = Field(
        default=None, description="Only dead letters that last failed before this time."
    )
    max_redrives: int = Field(
        default=3, ge=1, le=1000, description="Dead letters redriven this often already are left (over the cap)."
    )
    limit: int | None = Field(default=None, ge=1, description="Redrive at most this many, then stop.")
    dry_run: StrictBool = Field(default=True, description="Only count what would be redriven; false re-publishes.")

    @field_validator("failed_after", "failed_before", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        # Lax validation would take a number as a Unix time: the schema promises an ISO-8601 string.
        if value is not None and not isinstance(value, str):
            raise ValueError("expected an ISO-8601 date-time with zone, e.g. 2026-11-27T10:00:00Z")
        return value

    @field_validator("max_redrives", "limit", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        # Lax validation would take "3" or true: the schema promises a JSON integer (3.0 is one).
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("expected an integer")
        return value

    def options(self) -> RedriveOptions:
        """The same options ``image-replay redrive`` builds from its arguments (default progress group)."""
        return RedriveOptions(
            execute=not self.dry_run,
            error_codes=() if self.error_code is None else (self.error_code.value,),
            error_classes=() if self.error_class is None else (self.error_class,),
            since=self.failed_after,
            until=self.failed_before,
            limit=self.limit,
            max_redrives=self.max_redrives,
        )


class VerdictCounts(BaseModel):
    """Dead letters by what the redrive did with them."""

    redrive: int = Field(description="Redriven (a dry run: would be).")
    over_cap: int = Field(description="Left: redriven max_redrives times already.")
    filtered_out: int = Field(description="Left: not matching the filters.")
    already_redriven: int = Field(description="Skipped: an earlier run of the progress group redrove them.")


class RedriveReport(BaseModel):
    """The counts of one redrive by error code: what ``image-replay redrive --json`` prints."""

    dry_run: bool
    group: str = Field(description="The progress group: <CONSUMER_GROUP>.redrive.")
    examined: int
    totals: VerdictCounts
    by_error_code: dict[str, VerdictCounts]
    committed: dict[str, int] = Field(
        description="The progress group's offset per DLQ partition afterwards (empty for a dry run)."
    )

    @classmethod
    def of(cls, report: Report) -> RedriveReport:
        return cls.model_validate(report.as_dict())


class LagHistoryView(BaseModel):
    """The workers' lag sampled by this API process, oldest first."""

    interval_s: float
    window_s: float
    samples: list[LagSample]


class ConsumerGroupPage(BaseModel):
    """The workers' group now, and its lag over the last minutes."""

    overview: GroupOverview
    lag_history: LagHistoryView
