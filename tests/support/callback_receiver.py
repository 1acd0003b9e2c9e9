"""A real HTTP server on loopback that receives completion callbacks: it answers each POST with the next status of
a script (then 200) and keeps every request's headers and raw body, for the tests to verify."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedCallback:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    answered: int


class CallbackReceiver:
    """``answers`` are the statuses of the first POSTs, in order; every later one is answered 200."""

    def __init__(self, answers: list[int]) -> None:
        self.received: list[ReceivedCallback] = []
        self._answers = list(answers)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = receiver._answers.pop(0) if receiver._answers else 200
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.received.append(ReceivedCallback(self.path, headers, body, status))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url("/moved"))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def callback_receiver(answers: list[int] | None = None) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(answers or [])
    thread = threading.Thread(target=receiver._httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.close()
