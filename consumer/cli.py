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

from consumer.handler import JobHandler
from consumer.probes import serve_probes
from consumer.worker import Worker
from core.blobs import BlobStore
from core.jobs import JobStore
from core.settings import InvalidSettings, Settings, load_settings
from core.topics import ensure_topics

logger = logging.getLogger("consumer")

STARTUP_TIMEOUT_S = 60.0
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

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        sys.exit(f"image-worker: {exc}")


class StartupError(Exception):
    """The worker cannot start (no broker, no database); it exits non-zero with this message."""


async def serve(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT."""
    async with _services(settings) as handler:
        worker = Worker(settings, handler)
        _install_signal_handlers(worker)
        async with contextlib.AsyncExitStack() as stack:
            if settings.metrics_port is not None:
                await stack.enter_async_context(serve_probes(worker, settings.metrics_port))
            await worker.run()


@contextlib.asynccontextmanager
async def _services(settings: Settings) -> AsyncIterator[JobHandler]:
    jobs = JobStore.from_url(settings.database_url)
    try:
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await jobs.create_schema()
                await _ensure_topics_when_reachable(settings)
        except TimeoutError as exc:
            raise StartupError(
                f"Kafka at {settings.kafka_bootstrap_servers} or the database did not answer within "
                f"{STARTUP_TIMEOUT_S:g} s"
            ) from exc
        handler = JobHandler(settings, jobs, BlobStore(settings.storage_dir))
        try:
            yield handler
        finally:
            await handler.aclose()
    finally:
        await jobs.close()


async def _ensure_topics_when_reachable(settings: Settings) -> None:
    while True:
        try:
            await ensure_topics(settings)
        except (KafkaError, OSError) as exc:
            logger.warning("Kafka not reachable yet (%r); retrying", exc)
            await asyncio.sleep(1.0)
        else:
            return


def _install_signal_handlers(worker: Worker) -> None:
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

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
