"""``image-worker``: one consumer-group member; start more processes with the same group for more throughput."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

from aiokafka.errors import KafkaError

from consumer.callbacks import CallbackConsumer
from consumer.handler import JobHandler
from consumer.metrics import WorkerMetrics
from consumer.probes import serve_probes
from consumer.retention import RetentionSweeper
from consumer.worker import Worker
from core import tracing
from core.blobs import open_blob_store
from core.clients import one_line
from core.imaging import limit_pixels
from core.jobs import JobStore
from core.logs import KAFKA_TROUBLE, configure_logging
from core.schema import SchemaMismatch, require_current
from core.settings import InvalidSettings, Settings, load_settings
from core.topics import ensure_topics

logger = logging.getLogger("consumer")

STARTUP_TIMEOUT_S = 60.0
TOPICS_TIMEOUT_MS = 3000
MAX_TOPICS_RETRY_S = 30.0
EXIT_ON_SECOND_SIGNAL = 130


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="image-worker",
        description=(
            "Join the consumer group on the images topic and process image jobs: fetch, filter with Pillow, store. "
            "Offsets are committed only after a job is finished. Settings come from environment variables "
            "(KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, ...; see README); the options below override them. "
            "SIGTERM/SIGINT: finish running jobs, commit, leave the group, exit 0; a second signal exits at once."
        ),
    )
    parser.add_argument("--concurrency", type=int, help="jobs in flight (env WORKER_CONCURRENCY, default 8)")
    parser.add_argument("--group", help="consumer group id (env CONSUMER_GROUP, default image-workers)")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics and /livez on this port (env METRICS_PORT)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    overrides = {
        name: value
        for name, value in {
            "worker_concurrency": args.concurrency,
            "consumer_group": args.group,
            "metrics_port": args.metrics_port,
        }.items()
        if value is not None
    }
    try:
        settings = load_settings(**overrides)
    except InvalidSettings as exc:
        sys.exit(f"image-worker: {exc}")
    configure_logging(args.log_level, log_format=settings.log_format)
    tracing.start(settings, "image-worker")
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        sys.exit(f"image-worker: {exc}")


class StartupError(Exception):
    """The worker cannot start (no broker, no database, a database at another schema); it exits non-zero with this
    message."""


async def serve(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    limit_pixels(settings.max_image_pixels)
    metrics = WorkerMetrics()
    async with _services(settings, metrics) as (handler, jobs, sweeper):
        worker = Worker(settings, handler, metrics=metrics, sweeper=sweeper)
        callbacks = CallbackConsumer(settings, jobs, metrics, worker_id=f"{worker.worker_id}:callbacks")
        worker.liveness.watch("callbacks", callbacks.liveness)
        _install_signal_handlers(worker, callbacks)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if settings.metrics_port is not None:
                    await stack.enter_async_context(serve_probes(worker, settings.metrics_port, settings.metrics_host))
                await run_side_by_side(worker, callbacks)
        finally:
            await callbacks.aclose()


async def run_side_by_side(worker: Worker, callbacks: CallbackConsumer) -> None:
    """Run the image lane and the callback consumer as two tasks; when one ends (stopped, or failed), stop the
    other too, so the process never lives on with half of its work."""
    tasks = [asyncio.create_task(worker.run(), name="images"), asyncio.create_task(callbacks.run(), name="callbacks")]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        worker.stop()
        callbacks.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@contextlib.asynccontextmanager
async def _services(
    settings: Settings, metrics: WorkerMetrics
) -> AsyncIterator[tuple[JobHandler, JobStore, RetentionSweeper]]:
    jobs = JobStore.from_url(settings.database_url)
    try:
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await require_current(jobs.engine)
        except TimeoutError as exc:
            raise StartupError(f"the database did not answer within {STARTUP_TIMEOUT_S:g} s") from exc
        except SchemaMismatch as exc:
            raise StartupError(str(exc)) from None
        await _ensure_topics_when_reachable(settings)
        blobs = open_blob_store(settings)
        handler = JobHandler(settings, jobs, blobs, metrics=metrics)
        try:
            yield handler, jobs, RetentionSweeper(settings, jobs, blobs, metrics)
        finally:
            await handler.aclose()
    finally:
        await jobs.close()


async def _ensure_topics_when_reachable(settings: Settings) -> None:
    """Create the topics once Kafka answers: say so within seconds when it does not, and keep trying."""
    delay_s = 1.0
    while True:
        try:
            await ensure_topics(settings, timeout_ms=TOPICS_TIMEOUT_MS)
        except (KafkaError, OSError) as exc:
            logger.warning(
                "Kafka at %s not reachable (%s); retrying in %.0f s",
                settings.kafka_bootstrap_servers,
                one_line(exc),
                delay_s,
                extra=KAFKA_TROUBLE,
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, MAX_TOPICS_RETRY_S)
        else:
            return


def _install_signal_handlers(worker: Worker, callbacks: CallbackConsumer) -> None:
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        if received > 1:
            logger.warning("second %s: exiting now; unfinished jobs are redelivered", signal.Signals(signum).name)
            os._exit(EXIT_ON_SECOND_SIGNAL)
        logger.info("%s: finishing running jobs, then leaving the group", signal.Signals(signum).name)
        worker.stop()
        callbacks.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
