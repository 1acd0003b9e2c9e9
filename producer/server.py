"""Bounds of the HTTP layer that uvicorn's httptools protocol lacks: header size, and how long a request may take
to arrive.

httptools buffers a header of any size and waits forever for the rest of a request, so one client could grow
the API by its header's size or hold sockets open without end. This protocol counts what arrives before a
request's headers are complete and answers ``431`` past ``MAX_HEADER_BYTES`` (without feeding the parser any
further); it closes a connection whose headers are not complete ``HEADER_TIMEOUT_S`` after its first byte (or
after it opened), and one whose body has not arrived ``BODY_TIMEOUT_S`` after its headers.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import Settings, load_settings

LINGER_S = 1.0
_TOO_LARGE_BODY = b'{"detail":"the request\'s headers are too large"}'
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


@functools.cache
def _environment_settings() -> Settings:
    return load_settings()


class _BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # what arrived since the last request's headers were complete
        self._head_tail = b""  # its last bytes: the blank line ending a head may span two reads
        self._in_head = True
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s)  # an idle new connection is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # what the client still sends after the 431 is dropped unread
        if self._in_head:
            if self._head_bytes + len(data) > self.max_header_bytes and not self._head_ends_within(data):
                self._refuse()
                return
            self._head_bytes += len(data)
            self._head_tail = data[-3:]
            if self._deadline is None:
                self._arm(self.header_timeout_s)
        super().data_received(data)

    def _head_ends_within(self, data: bytes) -> bool:
        """Whether the head ends within the bytes still allowed: one read often brings the head and some body."""
        allowed = self.max_header_bytes - self._head_bytes
        return b"\r\n\r\n" in self._head_tail + data[:allowed]

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._head_tail = False, 0, b""
        self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._in_head, self._head_bytes, self._head_tail = True, 0, b""  # the next request's head counts afresh
        super().on_response_complete()

    def _refuse(self) -> None:
        """Answer 431 and end our side, then drop whatever still arrives until closing: closing at once while the
        client is still sending would reset the connection, and the reset could discard the 431 unread."""
        self._refused = True
        self.transport.write(_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER_S)

    def _arm(self, timeout_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class EnvironmentBoundedProtocol(_BoundedHttpToolsProtocol):
    """The bounds of the settings in the environment, found by import name: what ``image-api`` hands uvicorn, whose
    worker processes (``--workers N``) can import a protocol but not receive a class made at run time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = _environment_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        super().__init__(*args, **kwargs)
