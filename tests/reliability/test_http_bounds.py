"""Scenario 14: the API's HTTP layer is bounded: header size, how long a request may take to arrive, uploads
read at once.

A real ``image-api`` process (the bounds live in its server protocol); no broker is needed for any of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.harness import FIGURES, free_port
from tests.reliability.hostile import memory_of
from tests.support.images import png_bytes
from tests.support.processes import ApiProcess
from tests.support.settings import make_settings

NO_BROKER = "127.0.0.1:9"
HEADER_TIMEOUT_S = 1.0
IDLE_SOCKETS = 300


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiProcess]:
    settings = make_settings(
        NO_BROKER, tmp_path, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=2.0, max_concurrent_uploads=1
    )
    process = ApiProcess(settings, tmp_path / "api.log", free_port())
    try:
        yield process
    finally:
        process.stop()


async def _healthy(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.base_url) as client, asyncio.timeout(30):
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


def _port(api: ApiProcess) -> int:
    return int(api.base_url.rsplit(":", 1)[1])


async def test_a_50_mb_header_gets_431_at_once_and_costs_no_memory(api: ApiProcess) -> None:
    await _healthy(api)
    before = memory_of(api.process.pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(api))
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: api\r\nx-huge: ")
    try:
        for _ in range(50):
            writer.write(b"a" * 2**20)
            await writer.drain()
    except ConnectionError:
        pass  # the server hung up: what it had to say is in the reader's buffer
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    elapsed_s = time.monotonic() - started
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert elapsed_s < 1.0
    growth_mib = (memory_of(api.process.pid).peak_rss_kib - before.rss_kib) / 1024
    line = (
        f"http-header-50mb: status={answer[9:12].decode()} answered_s={elapsed_s:.2f} rss_growth_mib={growth_mib:.1f}"
    )
    FIGURES.append(line)
    assert growth_mib < 4, line


async def test_idle_and_trickling_connections_are_closed_after_the_header_timeout(api: ApiProcess) -> None:
    await _healthy(api)
    opened = time.monotonic()
    idle = [await asyncio.open_connection("127.0.0.1", _port(api)) for _ in range(IDLE_SOCKETS)]
    trickle_reader, trickle_writer = await asyncio.open_connection("127.0.0.1", _port(api))

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nhost: api\r\n\r\n":
            trickle_writer.write(bytes([byte]))
            await asyncio.sleep(0.2)  # the slow client's pace

    trickling = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(HEADER_TIMEOUT_S + 5):
            closed = await asyncio.gather(*(reader.read() for reader, _ in idle))
            assert await _cut_off(trickle_reader), "the trickling client got an answer instead of being cut off"
    finally:
        trickling.cancel()
        for _, writer in [*idle, (trickle_reader, trickle_writer)]:
            writer.close()
    closed_s = time.monotonic() - opened
    FIGURES.append(
        f"http-idle-sockets: sockets={IDLE_SOCKETS} header_timeout_s={HEADER_TIMEOUT_S} all_closed_s={closed_s:.1f}"
    )
    assert closed == [b""] * IDLE_SOCKETS


async def _cut_off(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection without answering: an end of stream, or a reset when the client's
    next byte reached a socket the server had already closed (which of the two depends on timing)."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_uploads_are_capped_and_a_client_leaving_mid_body_is_no_traceback(api: ApiProcess) -> None:
    await _healthy(api)
    upload = png_bytes((64, 64), noise=True)
    boundary = "x" * 16
    head = (
        f"POST /images HTTP/1.1\r\nhost: api\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n"
        f"content-length: {len(upload) + 400}\r\n\r\n--{boundary}\r\n"
        'content-disposition: form-data; name="file"; filename="a.png"\r\ncontent-type: image/png\r\n\r\n'
    ).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", _port(api))
    writer.write(head + upload[:1000])  # an upload in progress holds the only upload slot
    await writer.drain()
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        busy = await _post_until(client, upload, lambda answer: "uploads are being read" in answer.text)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"

        writer.close()  # the first client leaves mid-body: its slot is freed
        await writer.wait_closed()
        after = await _post_until(client, upload, lambda answer: "uploads are being read" not in answer.text)
    assert after.status_code == 503, after.text  # no broker here: the event log's 503, past the upload cap
    assert "event log" in after.text
    assert "Traceback" not in api.log(), api.log()


async def _post_until(
    client: httpx.AsyncClient, upload: bytes, wanted: Callable[[httpx.Response], bool]
) -> httpx.Response:
    async with asyncio.timeout(10):
        while True:
            answer = await client.post(
                "/images", files={"file": ("b.png", upload, "image/png")}, data={"filter": "blur"}
            )
            if wanted(answer):
                return answer
            await asyncio.sleep(0.1)  # a client's pace between tries


UPLOADS_AT_ONCE = 8
UPLOAD_MIB = 9


async def test_uploads_are_streamed_to_the_store_not_held_in_memory(tmp_path: Path) -> None:
    settings = make_settings(
        NO_BROKER, tmp_path, max_concurrent_uploads=UPLOADS_AT_ONCE, max_upload_bytes=(UPLOAD_MIB + 1) * 2**20
    )
    api = ApiProcess(settings, tmp_path / "api.log", free_port())
    try:
        await _healthy(api)
        before = memory_of(api.process.pid)
        upload = png_bytes() + bytes(UPLOAD_MIB * 2**20)  # a valid PNG head: the API checks only that much
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/images", files={"file": ("a.png", upload, "image/png")}, data={"filter": "blur"})
                    for _ in range(UPLOADS_AT_ONCE)
                )
            )
        growth_mib = (memory_of(api.process.pid).peak_rss_kib - before.rss_kib) / 1024
    finally:
        api.stop()
    # Each upload was read, checked and stored; with no broker the event log's 503 follows (and the upload goes).
    assert [answer.status_code for answer in answers] == [503] * UPLOADS_AT_ONCE
    assert all("event log" in answer.text for answer in answers), answers[0].text
    line = f"http-uploads: uploads={UPLOADS_AT_ONCE} upload_mib={UPLOAD_MIB} rss_growth_mib={growth_mib:.1f}"
    FIGURES.append(line)
    assert growth_mib < UPLOADS_AT_ONCE * UPLOAD_MIB / 4, line  # spooled to files: far less than the bodies


async def test_a_head_arriving_with_much_of_its_body_is_no_oversized_head(api: ApiProcess) -> None:
    """One read often brings a request's head and the first few hundred KiB of its body: only the head counts."""
    await _healthy(api)
    boundary = "x" * 16
    body = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="filter"\r\n\r\nblur\r\n--{boundary}\r\n'
        'content-disposition: form-data; name="file"; filename="a.png"\r\ncontent-type: image/png\r\n\r\n'
    ).encode()
    body += png_bytes() + bytes(200_000) + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /images HTTP/1.1\r\nhost: api\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(api))
    writer.write(head.encode() + body)  # one write: most often one read on the other side
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]  # read whole; then no broker: the event log's 503
