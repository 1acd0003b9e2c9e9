"""``image-api``: serve the upload API with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

import uvicorn
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.config import LOGGING_CONFIG

from core import tracing
from core.clients import one_line
from core.logs import configure_logging
from core.schema import SchemaMismatch, require_current_at
from core.settings import InvalidSettings, Settings, load_settings
from producer.app import create_app
from producer.metrics_endpoint import in_multiprocess_mode, serve, serving_children
from producer.server import EnvironmentBoundedProtocol
from scripts.arguments import positive_int

# Longer than the idle timeout of the clients and load balancers in front (httpx 5 s, AWS ALB 60 s): a server
# that closes an idle connection first races the client reusing it, and the client sees its POST reset with no
# answer, which it cannot safely retry without an Idempotency-Key.
KEEP_ALIVE_TIMEOUT_S = 75
LOG_LEVEL_VARIABLE = "IMAGE_API_LOG_LEVEL"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="image-api",
        description=(
            "Serve the image-job API: POST /images appends an image_process event to Kafka and answers 202. "
            "Settings come from environment variables (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, ...; see README)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default: %(default)s)")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="processes serving the one port (default: %(default)s); a dead one is replaced",
    )
    parser.add_argument(
        "--metrics-port",
        type=positive_int,
        help="serve Prometheus /metrics on this port, on METRICS_HOST (env API_METRICS_PORT; default: off)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    if args.metrics_port is not None:
        os.environ["API_METRICS_PORT"] = str(args.metrics_port)  # the serving processes read the environment
    try:
        settings = load_settings()  # each process reads them again; this says what is wrong once, before any starts
    except InvalidSettings as exc:
        sys.exit(f"image-api: {exc}")
    configure_logging(args.log_level, log_format=settings.log_format)
    # Checked here as well as in the app's lifespan: a failed lifespan ends uvicorn with a traceback.
    try:
        asyncio.run(require_current_at(settings.database_url))
    except SchemaMismatch as exc:
        sys.exit(f"image-api: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        sys.exit(f"image-api: the job database: {one_line(exc)}")
    os.environ[LOG_LEVEL_VARIABLE] = args.log_level  # the worker processes' only way to hear it
    with contextlib.ExitStack() as stack:
        if settings.api_metrics_port is not None and args.workers > 1:
            try:
                stack.enter_context(serving_children(settings.metrics_host, settings.api_metrics_port))
            except OSError as exc:
                sys.exit(_metrics_port_unusable(settings, exc))
        _serve(args, settings)


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
        # Under json, uvicorn's loggers keep no handlers of their own and reach the root's JSON one; a spawned
        # serving process configures the root in app_from_environment, before uvicorn logs anything there.
        log_config=None if settings.log_format == "json" else LOGGING_CONFIG,
        http=f"{EnvironmentBoundedProtocol.__module__}:{EnvironmentBoundedProtocol.__name__}",
    )


def app_from_environment() -> FastAPI:
    """The app of one serving process, from the environment its parent checked (uvicorn imports this by name)."""
    settings = load_settings()
    if not logging.getLogger().handlers:  # a worker process, spawned afresh (a lone process configured already)
        configure_logging(os.environ.get(LOG_LEVEL_VARIABLE, "info"), log_format=settings.log_format)
    tracing.start(settings, "image-api")  # per serving process: an exporter's thread does not survive a fork
    app = create_app(settings)
    if settings.api_metrics_port is not None and not in_multiprocess_mode():  # one process: it serves its own
        try:
            serve(app.state.metrics.registry, settings.metrics_host, settings.api_metrics_port)
        except OSError as exc:
            sys.exit(_metrics_port_unusable(settings, exc))
    return app


def _metrics_port_unusable(settings: Settings, exc: OSError) -> str:
    return f"image-api: cannot serve metrics on {settings.metrics_host}:{settings.api_metrics_port}: {exc}"
