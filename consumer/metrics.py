"""Prometheus metrics and the liveness rule of one worker process.

Each worker owns its registry (tests run several workers in one process). Liveness is not "the process is
up": a worker whose poll loop stalled, or that has been out of its consumer group too long, reports not alive
so an orchestrator restarts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    """The figures an operator watches: outcomes, retries, durations, in-flight jobs, lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "image_worker_records",
            "Records finished, by outcome (done, skipped_duplicate, skipped_cancelled, skipped_expired, "
            "dead_lettered).",
            ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter("image_worker_retries", "Attempts that failed and were retried.", registry=self.registry)
        self.reexecutions = Counter(
            "image_worker_reexecutions",
            "Jobs started again after an earlier execution never finished (a worker died or was cut off mid-job).",
            registry=self.registry,
        )
        self.processing_seconds = Histogram(
            "image_worker_processing_seconds",
            "Time from a record's first attempt to its outcome.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "image_worker_in_flight",
            "Records admitted and not finished (running or waiting behind their key).",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "image_worker_consumer_lag",
            "Records between the partition's end and this worker's committed offset.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.last_poll = Gauge(
            "image_worker_last_poll_timestamp_seconds", "When the poll loop last ran.", registry=self.registry
        )
        self.alive = Gauge(
            "image_worker_alive",
            "1 while /livez answers 200, 0 while it answers 503 (poll loop stalled, or out of the group too long).",
            registry=self.registry,
        )
        self.retention_removed = Counter(
            "image_retention_removed",
            "What the retention sweep deleted, by kind (result, thumbnail, upload, original, job, tombstone).",
            ["kind"],
            registry=self.registry,
        )
        self.retention_sweeps = Counter(
            "image_retention_sweeps",
            "Retention sweeps this worker ran (only the worker holding the retention lease sweeps).",
            registry=self.registry,
        )
        # Completion callbacks (consumer/callbacks.py): each POST that failed, each callback delivered or given up on.
        self.callbacks_delivered = Counter(
            "image_worker_callbacks_delivered", "Completion callbacks answered 2xx.", registry=self.registry
        )
        self.callback_failed_attempts = Counter(
            "image_worker_callback_failed_attempts",
            "Completion callback POSTs that got no 2xx answer (retried unless it was the last).",
            registry=self.registry,
        )
        self.callbacks_given_up = Counter(
            "image_worker_callbacks_given_up",
            "Completion callbacks given up on: CALLBACK_MAX_ATTEMPTS failed, or a URL no longer allowed.",
            registry=self.registry,
        )
        self._outcome_counters: dict[str, Counter] = {}

    def record_finished(self, outcome: str, seconds: float) -> None:
        """Count one record's outcome and its duration; per record, so the labelled counter is looked up once."""
        counter = self._outcome_counters.get(outcome)
        if counter is None:
            counter = self._outcome_counters[outcome] = self.records.labels(outcome=outcome)
        counter.inc()
        self.processing_seconds.observe(seconds)


class Liveness:
    """Alive while the poll loop runs and the worker is (or is briefly rejoining) a group member."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._last_poll = clock()
        self._out_of_group_since: float | None = clock()
        self._watched: dict[str, Liveness] = {}

    def polled(self) -> None:
        self._last_poll = self._clock()

    def joined(self) -> None:
        self._out_of_group_since = None

    def left(self) -> None:
        if self._out_of_group_since is None:
            self._out_of_group_since = self._clock()

    def watch(self, name: str, other: Liveness) -> None:
        """Count ``other``'s problems as this one's, named: a worker process is alive only while each of its
        consumers is (the image lane and the callback consumer), so /livez and ``image_worker_alive`` say so."""
        self._watched[name] = other

    def problems(self) -> list[str]:
        """Why the worker is not alive; empty when it is."""
        now = self._clock()
        problems = []
        if now - self._last_poll > self.timeout_s:
            problems.append(f"no poll for {now - self._last_poll:.0f} s")
        if self._out_of_group_since is not None and now - self._out_of_group_since > self.timeout_s:
            problems.append(f"not in the consumer group for {now - self._out_of_group_since:.0f} s")
        problems.extend(f"{name}: {problem}" for name, other in self._watched.items() for problem in other.problems())
        return problems
