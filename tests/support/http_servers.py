"""Raw HTTP/1.1 servers on loopback for the fetch and handler tests: every byte and every delay is controlled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

Responder = Callable[["Hit", asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]


@dataclass
class RawHttpServer:
    """An HTTP/1.1 server on ``host`` whose ``responder`` writes each response byte by byte as it likes."""

    responder: Responder
    host: str = "127.0.0.1"
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/image.png") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            hit = Hit(path=request_line.split(" ")[1], headers=headers)
            self.hits.append(hit)
            await self.responder(hit, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up, as it should on over-long or endless bodies
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)


def respond(status: int = 200, body: bytes = b"image bytes", headers: Sequence[tuple[str, str]] = ()) -> Responder:
    """A plain response with a correct Content-Length unless ``headers`` gives one."""

    async def responder(_hit: Hit, writer: asyncio.StreamWriter) -> None:
        lines = [
            f"HTTP/1.1 {status} {httpx.codes.get_reason_phrase(status)}",
            "Connection: close",
            *map(": ".join, headers),
        ]
        if not any(name.lower() == "content-length" for name, _ in headers):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return responder


def redirect(location: str, status: int = 302) -> Responder:
    return respond(status, b"", [("Location", location)])


@contextlib.asynccontextmanager
async def serving(responder: Responder, host: str = "127.0.0.1") -> AsyncIterator[RawHttpServer]:
    server = RawHttpServer(responder, host=host)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
