"""A real HTTP server on loopback that serves test images and counts every request.

Counting requests per path is how tests count executions of the processing step (each execution fetches its
image once) across worker processes, without instrumenting the worker.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.images import png_bytes, truncated_png


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that were killed mid-response (crash tests) are expected


class ImageServer:
    """``/img/<seed>.png[?delay=S]`` serves ``png_bytes(seed=seed)``; ``/corrupt.png`` ``truncated_png()``;
    ``/hang`` never answers; ``/late/<seed>.png`` is 404 until :meth:`release_late` is called, then serves
    ``png_bytes(seed=seed)`` (a cause that gets fixed, for redrive tests); anything else is 404. ``hits`` counts
    requests per path, ``order`` lists them."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.order: list[str] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.late_released = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                with server._lock:
                    server.hits[parsed.path] += 1
                    server.order.append(parsed.path)
                query = urllib.parse.parse_qs(parsed.query)
                if "delay" in query:
                    server._closing.wait(float(query["delay"][0]))
                if parsed.path == "/hang":
                    server._closing.wait(3600)
                    return
                if parsed.path.startswith("/img/") and parsed.path.endswith(".png"):
                    self._send(png_bytes(seed=int(parsed.path[5:-4])))
                elif (
                    parsed.path.startswith("/late/") and parsed.path.endswith(".png") and server.late_released.is_set()
                ):
                    self._send(png_bytes(seed=int(parsed.path[6:-4])))
                elif parsed.path == "/corrupt.png":
                    self._send(truncated_png())
                else:
                    self.send_error(404)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def release_late(self) -> None:
        """From now on ``/late/<seed>.png`` serves its image."""
        self.late_released.set()

    async def wait_for_hits(self, path: str, count: int, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.hits[path] < count:
                await asyncio.sleep(0.02)

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    thread = threading.Thread(target=server._httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
