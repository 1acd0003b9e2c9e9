"""Where ``image-api`` serves its Prometheus metrics: ``/metrics`` on a port of its own, ``API_METRICS_PORT``.

A port of its own, as the worker's (``METRICS_PORT``), on ``METRICS_HOST`` (loopback unless chosen otherwise), and
off until set: the figures never reach the API's clients, Prometheus needs no API key, and a scrape never counts
against a rate limit or waits behind the accept path's event loop (the server is prometheus_client's, in a thread).

With ``--workers N`` the N serving processes are uvicorn's children and a scrape of one would see a share of the
traffic. Then prometheus_client's multiprocess mode: each child writes its figures to files in a fresh folder
(``PROMETHEUS_MULTIPROC_DIR``, set before the children start, so their prometheus_client reads it at import) and
the parent serves their sum. Counters and histograms of a child that died and was replaced stay in the sum, as
Prometheus expects of counters. With one process the app's own registry is served from that process.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

MULTIPROCESS_FOLDER_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


def in_multiprocess_mode() -> bool:
    """Whether this process writes its figures for a parent to serve (see :func:`serving_children`)."""
    return MULTIPROCESS_FOLDER_VARIABLE in os.environ


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread, for as long as the process lives."""
    start_http_server(port, host, registry=registry)


@contextlib.contextmanager
def serving_children(host: str, port: int) -> Iterator[None]:
    """Serve the sum of the figures of the processes started within the block, which write them to a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="image-api-metrics-") as folder:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        server, thread = start_http_server(port, host, registry=registry)
        os.environ[MULTIPROCESS_FOLDER_VARIABLE] = folder
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            del os.environ[MULTIPROCESS_FOLDER_VARIABLE]
