"""The SSRF-guarded downloader against real HTTP servers on loopback (raw asyncio, so every byte is controlled)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from consumer import download
from consumer.download import (
    MAX_REDIRECTS,
    BlockedUrl,
    DownloadNetworkError,
    DownloadTimeout,
    DownloadTooLarge,
    HttpClientError,
    HttpServerError,
    ImageDownloader,
    InvalidUrl,
    TooManyRedirects,
    display_url,
    is_public_address,
)
from consumer.errors import PermanentError, TransientError
from core.settings import Settings
from tests.support.http_servers import Hit, RawHttpServer, redirect, respond, serving
from tests.support.settings import make_settings


def fetch_settings(tmp_path: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {"allow_private_urls": True, "fetch_timeout_s": 5.0, "max_download_bytes": 1000}
    fields.update(overrides)
    return make_settings("localhost:9092", tmp_path, **fields)


@contextlib.asynccontextmanager
async def downloader_for(
    tmp_path: Path, *, resolver: download.Resolver | None = None, **overrides: object
) -> AsyncIterator[ImageDownloader]:
    async with ImageDownloader(fetch_settings(tmp_path, **overrides), resolver=resolver) as downloader:
        yield downloader


def static_resolver(table: dict[str, list[str]]) -> download.Resolver:
    """Resolves only the names in ``table``; anything else does not exist."""

    async def resolve(host: str, _port: int) -> Sequence[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, f"unknown host {host}")
        return table[host]

    return resolve


# --- positive cases (guard off: the servers are on loopback) ----------------------------------------------------------


async def test_downloads_the_body(tmp_path: Path) -> None:
    async with serving(respond(body=b"\x89PNG fake")) as server, downloader_for(tmp_path) as downloader:
        assert await downloader.download(server.url()) == b"\x89PNG fake"
    assert [hit.path for hit in server.hits] == ["/image.png"]


async def test_connects_to_the_checked_address_and_sends_the_host_name(tmp_path: Path) -> None:
    """The name is resolved once (by the injected resolver, which the system's cannot replace) and pinned."""
    async with serving(respond()) as server:
        resolver = static_resolver({"images.example.test": ["127.0.0.1"]})
        async with downloader_for(tmp_path, resolver=resolver) as downloader:
            await downloader.download(f"http://images.example.test:{server.port}/a.png?size=2")
    assert server.hits[0].headers["host"] == f"images.example.test:{server.port}"
    assert server.hits[0].path == "/a.png?size=2"


async def test_https_sends_sni_and_host_of_the_name_to_the_checked_ip(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

    resolver = static_resolver({"images.example.com": ["93.184.216.34"]})
    settings = fetch_settings(tmp_path, allow_private_urls=False)
    async with ImageDownloader(settings, resolver=resolver, transport=httpx.MockTransport(handler)) as downloader:
        assert await downloader.download("https://images.example.com/cat.png") == b"ok"
    assert seen[0].url == httpx.URL("https://93.184.216.34/cat.png")
    assert seen[0].headers["host"] == "images.example.com"
    assert seen[0].extensions["sni_hostname"] == "images.example.com"


async def test_follows_a_relative_redirect(tmp_path: Path) -> None:
    async def responder(hit: Hit, writer: asyncio.StreamWriter) -> None:
        await (redirect("/final.png") if hit.path == "/image.png" else respond(body=b"final"))(hit, writer)

    async with serving(responder) as server, downloader_for(tmp_path) as downloader:
        assert await downloader.download(server.url()) == b"final"
    assert [hit.path for hit in server.hits] == ["/image.png", "/final.png"]


async def test_endless_redirects_stop_at_the_hop_limit(tmp_path: Path) -> None:
    async with serving(redirect("/image.png", status=307)) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(TooManyRedirects, match=f"more than {MAX_REDIRECTS} times"):
            await downloader.download(server.url())
    assert len(server.hits) == MAX_REDIRECTS + 1


async def test_falls_back_to_the_next_checked_address(tmp_path: Path) -> None:
    async with serving(respond(body=b"second")) as server:
        resolver = static_resolver({"two.test": ["127.0.0.3", "127.0.0.1"]})  # nothing listens on .3
        async with downloader_for(tmp_path, resolver=resolver) as downloader:
            assert await downloader.download(f"http://two.test:{server.port}/") == b"second"


# --- HTTP errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, HttpClientError), (403, HttpClientError), (503, HttpServerError), (429, HttpServerError)],
)
async def test_http_errors_are_classified(tmp_path: Path, status: int, error: type[Exception]) -> None:
    async with serving(respond(status, b"nope")) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(error, match=f"answered HTTP {status}"):
            await downloader.download(server.url())
    assert issubclass(error, TransientError if status in (429, 503) else PermanentError)


async def test_redirect_without_location_is_permanent(tmp_path: Path) -> None:
    async with serving(respond(302, b"")) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(PermanentError, match="without a Location"):
            await downloader.download(server.url())


async def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with downloader_for(tmp_path) as downloader:
        with pytest.raises(DownloadNetworkError, match="cannot connect"):
            await downloader.download(f"http://127.0.0.1:{port}/x.png")


async def test_unknown_host_is_transient(tmp_path: Path) -> None:
    async with downloader_for(tmp_path, resolver=static_resolver({})) as downloader:
        with pytest.raises(DownloadNetworkError, match="cannot resolve"):
            await downloader.download("http://nowhere.test/x.png")


async def test_compressed_bodies_are_refused(tmp_path: Path) -> None:
    gzipped = respond(body=b"\x1f\x8b", headers=[("Content-Encoding", "gzip")])
    async with serving(gzipped) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(PermanentError, match="Content-Encoding 'gzip'"):
            await downloader.download(server.url())


# --- size and time limits ---------------------------------------------------------------------------------------------


async def test_announced_size_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    async with serving(respond(body=b"x" * 5000)) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(DownloadTooLarge, match="5000 bytes, more than the limit of 1000"):
            await downloader.download(server.url())


async def test_unannounced_body_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    """No Content-Length: the body runs until the server closes, and only the running count can stop it."""

    async def responder(_hit: Hit, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000)

    async with serving(responder) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(DownloadTooLarge, match="larger than the limit of 1000 bytes"):
            await downloader.download(server.url())


async def test_lying_content_length_gets_no_more_than_it_announced(tmp_path: Path) -> None:
    """Content-Length says 10, the server sends 5000: the framing ends the body at 10 bytes, nothing more is read."""
    lying = respond(body=b"y" * 5000, headers=[("Content-Length", "10")])
    async with serving(lying) as server, downloader_for(tmp_path) as downloader:
        assert await downloader.download(server.url()) == b"y" * 10


async def test_endless_chunked_body_is_cut_off(tmp_path: Path) -> None:
    sent: list[int] = []

    async def responder(_hit: Hit, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"100\r\n" + b"z" * 256 + b"\r\n")
            sent.append(256)
            await writer.drain()

    async with serving(responder) as server, downloader_for(tmp_path, fetch_timeout_s=10.0) as downloader:
        with pytest.raises(DownloadTooLarge):
            await downloader.download(server.url())
    assert sent, "the server did stream"


async def test_trickling_server_hits_the_total_deadline(tmp_path: Path) -> None:
    """One byte per 0.2 s never trips httpx's per-read timeout; the total deadline of 1 s does."""

    async def responder(_hit: Hit, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
        for _ in range(500):
            writer.write(b"t")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with serving(responder) as server, downloader_for(tmp_path, fetch_timeout_s=1.0) as downloader:
        started = time.monotonic()
        with pytest.raises(DownloadTimeout, match="longer than 1 s"):
            await downloader.download(server.url())
        elapsed_s = time.monotonic() - started
    assert 0.9 < elapsed_s < 3.0
    assert issubclass(DownloadTimeout, TransientError)


# --- the SSRF guard ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def canary() -> AsyncIterator[RawHttpServer]:
    """A loopback server that must never be reached while the guard is on."""
    async with serving(respond(body=b"secret")) as server:
        yield server
    assert server.hits == [], "the guard let a request through to loopback"


BLOCKED_TARGETS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://0.0.0.0:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f000001:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://127.1:{port}/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::a00:1]/",
]


@pytest.mark.parametrize("template", BLOCKED_TARGETS)
async def test_guard_blocks_non_public_targets(tmp_path: Path, canary: RawHttpServer, template: str) -> None:
    async with downloader_for(tmp_path, allow_private_urls=False, fetch_timeout_s=2.0) as downloader:
        with pytest.raises(BlockedUrl, match="non-public address"):
            await downloader.download(template.format(port=canary.port))


async def test_every_resolved_address_must_be_public(tmp_path: Path, canary: RawHttpServer) -> None:
    resolver = static_resolver({"mixed.example.com": ["93.184.216.34", "10.0.0.7"]})
    async with downloader_for(tmp_path, allow_private_urls=False, resolver=resolver) as downloader:
        with pytest.raises(BlockedUrl, match=r"resolves to non-public address 10\.0\.0\.7"):
            await downloader.download("http://mixed.example.com/a.png")


async def test_a_name_resolving_to_loopback_is_blocked(tmp_path: Path, canary: RawHttpServer) -> None:
    resolver = static_resolver({"rebind.example.com": ["127.0.0.1"]})
    async with downloader_for(tmp_path, allow_private_urls=False, resolver=resolver) as downloader:
        with pytest.raises(BlockedUrl):
            await downloader.download(f"http://rebind.example.com:{canary.port}/")


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:{port}/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:{port}/"],
)
async def test_redirect_to_a_private_address_is_blocked(
    tmp_path: Path, canary: RawHttpServer, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    """The first server counts as public for this test (127.0.0.2 only); where it redirects to is checked again."""
    real_check = download.is_public_address
    monkeypatch.setattr(
        download,
        "is_public_address",
        lambda address: address == ipaddress.ip_address("127.0.0.2") or real_check(address),
    )
    async with (
        serving(redirect(location.format(port=canary.port)), host="127.0.0.2") as allowed,
        downloader_for(tmp_path, allow_private_urls=False) as downloader,
    ):
        with pytest.raises(BlockedUrl):
            await downloader.download(allowed.url())
    assert len(allowed.hits) == 1


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://example.com/a.png", "dict://127.0.0.1:11211/", "//x/y"],
)
async def test_only_http_and_https_are_fetched(tmp_path: Path, url: str) -> None:
    async with downloader_for(tmp_path, allow_private_urls=False) as downloader:
        with pytest.raises(InvalidUrl, match="only http and https"):
            await downloader.download(url)


async def test_redirect_to_another_scheme_is_refused(tmp_path: Path) -> None:
    async with serving(redirect("file:///etc/passwd")) as server, downloader_for(tmp_path) as downloader:
        with pytest.raises(InvalidUrl, match="'file' is not allowed"):
            await downloader.download(server.url())


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("8.8.8.8", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("::ffff:93.184.216.34", True),
        ("100.64.0.1", False),
        ("100.127.255.255", False),
        ("198.18.0.1", False),
        ("192.0.2.1", False),
        ("240.0.0.1", False),
        ("::", False),
        ("ff02::1", False),
        ("2001:db8::1", False),
        ("64:ff9b::7f00:1", False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo client 127.0.0.1
    ],
)
def test_public_address_policy(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_error_messages_do_not_leak_credentials() -> None:
    assert display_url("https://user:secret@example.com/a.png") == "https://example.com/a.png"
