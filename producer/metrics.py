"""Prometheus metrics of one API app: requests, refusals, publishing and job-row writes.

Each app owns its registry (tests run several apps in one process), as each worker does (consumer/metrics.py).
Labelled children are looked up once and kept: a ``labels()`` call takes a lock and builds a key tuple, which on
the accept path would cost more than the observation itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

# Seconds: the accept path answers in 10-40 ms under load, reads in a few ms; 503s come at SEND_TIMEOUT_S (5 s).
LATENCY_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500)  # up to MAX_EVENTS_PER_TRANSACTION / MAX_ROWS_...
# Methods a client may send are any token; these bound the method label (anything else is "other").
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE: Final = "unmatched"


class Refusal(StrEnum):
    """Why a request was answered 429 or 503: the ``reason`` label of ``image_api_refusals_total``."""

    RATE_LIMITED = "rate_limited"  # 429: the key is over RATE_LIMIT
    BROKER_UNAVAILABLE = "broker_unavailable"  # 503: the event's transaction did not commit (or Kafka did not answer)
    UPLOADS_BUSY = "uploads_busy"  # 503: MAX_CONCURRENT_UPLOADS uploads are being read
    STORE_UNAVAILABLE = "store_unavailable"  # 503: the job database or the blob store failed
    NOT_READY = "not_ready"  # 503 from /readyz


class Outcome(StrEnum):
    """How a publish or a job-row write ended: the ``outcome`` label."""

    COMMITTED = "committed"
    FAILED = "failed"


class ApiMetrics:
    """The figures of one API process an operator watches; :attr:`registry` is what ``/metrics`` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "image_api_requests",
            "Requests answered, by method, route template (never the raw path) and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "image_api_request_seconds",
            "Time from a request's arrival at the app to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.refusals = Counter(
            "image_api_refusals",
            "Requests answered 429 or 503, by reason (rate_limited, broker_unavailable, uploads_busy, "
            "store_unavailable, not_ready).",
            ["reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "image_api_publish_seconds",
            "Time from a request's events being handed to the publisher until their Kafka transaction committed "
            "(outcome committed) or was given up (failed: answered 503).",
            ["outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.transaction_events = Histogram(
            "image_api_transaction_events",
            "Events per committed Kafka transaction (the requests waiting at one moment share one).",
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.job_row_write_seconds = Histogram(
            "image_api_job_row_write_seconds",
            "Time of one database transaction writing accepted jobs' rows, by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.job_row_batch_rows = Histogram(
            "image_api_job_row_batch_rows",
            "Accepted jobs' rows written per database transaction.",
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._request_timers: dict[tuple[str, str], Histogram] = {}
        self._refusal_counters = {reason: self.refusals.labels(reason=reason.value) for reason in Refusal}
        self._publish_timers = {outcome: self.publish_seconds.labels(outcome=outcome.value) for outcome in Outcome}
        self._row_write_timers = {
            outcome: self.job_row_write_seconds.labels(outcome=outcome.value) for outcome in Outcome
        }

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration (``route`` is a template or :data:`UNMATCHED_ROUTE`)."""
        if method not in KNOWN_METHODS:
            method = "other"
        counter = self._request_counters.get((method, route, status))
        if counter is None:
            counter = self._request_counters[method, route, status] = self.requests.labels(method, route, str(status))
        counter.inc()
        timer = self._request_timers.get((method, route))
        if timer is None:
            timer = self._request_timers[method, route] = self.request_seconds.labels(method, route)
        timer.observe(seconds)

    def refused(self, reason: Refusal) -> None:
        """Count one request answered 429 or 503 for ``reason``."""
        self._refusal_counters[reason].inc()

    def published(self, outcome: Outcome, seconds: float) -> None:
        """One request's events committed (or given up) ``seconds`` after they were handed over."""
        self._publish_timers[outcome].observe(seconds)

    def job_rows_written(self, outcome: Outcome, rows: int, seconds: float) -> None:
        """One transaction of ``rows`` accepted jobs' rows ended after ``seconds``."""
        self._row_write_timers[outcome].observe(seconds)
        self.job_row_batch_rows.observe(rows)
