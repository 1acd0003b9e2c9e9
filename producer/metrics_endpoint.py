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
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

MULTIPROCESS_FOLDER_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


def in_multiprocess_mode() -> bool:
    """Whether this process writes its figures for a parent to serve (see :func:`serving_children`)."""
    return MULTIPROCESS_FOLDER_VARIABLE in os.environ


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """prometheus_client's HTTP server in its daemon thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a thread (a daemon: it ends with the process)."""
    return MetricsServer(*start_http_server(port, host, registry=registry))


@contextlib.contextmanager
def serving_children(host: str, port: int) -> Iterator[None]:
    """Serve the sum of the figures of the processes started within the block, which write them to a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="image-api-metrics-") as folder:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        server = serve(registry, host, port)
        os.environ[MULTIPROCESS_FOLDER_VARIABLE] = folder
        try:
            yield
        finally:
            server.close()
            del os.environ[MULTIPROCESS_FOLDER_VARIABLE]
