"""``image-api`` as a served process: how its HTTP server treats the connections clients keep."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.reliability.harness import free_port, wait_until_ready
from tests.support.processes import ApiProcess
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration

# httpx keeps an idle connection for 5 s, many clients and proxies for longer; uvicorn's own default is 5 s.
CLIENT_IDLE_S = 6.0

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"


async def test_an_idle_keep_alive_connection_outlives_the_clients_idle_timeout(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A server that closes idle connections as soon as clients reuse them resets some requests (seen in the
    broker-outage scenario as POSTs without an answer); image-api keeps them longer than its clients do."""
    api = ApiProcess(make_settings(kafka_bootstrap, tmp_path), tmp_path / "api.log", free_port())
    try:
        await wait_until_ready(api.base_url)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(api.base_url.rsplit(":", 1)[1]))
        try:
            writer.write(REQUEST)
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            await reader.readexactly(_content_length(first))
            await asyncio.sleep(CLIENT_IDLE_S)  # the idle time under test, not a wait for an event
            writer.write(REQUEST)
            second = await asyncio.wait_for(reader.read(4096), timeout=10)
        finally:
            writer.close()
    finally:
        api.stop()
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200"), "the server closed the idle connection"


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length in {head!r}")
