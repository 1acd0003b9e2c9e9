"""Downloading a user-supplied image URL without becoming a proxy into the private network (SSRF).

The rules are OWASP's: only http and https; the host is resolved once and **every** address it resolves to must
be public; the request then goes to the address that was checked (the URL's host becomes the ``Host`` header and,
for https, the TLS SNI name that the certificate is verified against), so a second DNS answer cannot swap in a
private address (DNS rebinding). Redirects are followed here, not by httpx, and each hop is checked again. What
counts as public is ``core.addresses``, the one policy the API also applies to literal IP addresses.

httpx's timeouts apply per network operation, so a server trickling one byte at a time is never cut off by them:
the whole download runs under one ``asyncio.timeout`` and the byte limit is counted while streaming, never taken
from Content-Length.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import httpx

from consumer.errors import PermanentError, TransientError, describe
from core.addresses import IPAddress
from core.addresses import is_public_address as is_public_address  # re-exported: the workers' policy
from core.settings import Settings
from core.urls import redact_url
from schemas import ErrorCode

MAX_REDIRECTS: Final = 5
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class InvalidUrl(PermanentError):
    """The URL cannot be fetched at all: not http(s), no host, a bad port."""

    code = ErrorCode.INVALID_URL


class BlockedUrl(PermanentError):
    """The URL's host is, or resolves to, an address that is not public (loopback, private, metadata, ...)."""

    code = ErrorCode.BLOCKED_URL


class TooManyRedirects(PermanentError):
    """The server kept redirecting past ``MAX_REDIRECTS`` hops, or sent a redirect without a Location."""

    code = ErrorCode.TOO_MANY_REDIRECTS


class DownloadTooLarge(PermanentError):
    """The body is (or announces itself as) larger than ``max_download_bytes``."""

    code = ErrorCode.DOWNLOAD_TOO_LARGE


class HttpClientError(PermanentError):
    """The server answered 4xx (other than 429): asking again will not help."""

    code = ErrorCode.HTTP_4XX


class HttpServerError(TransientError):
    """The server answered 5xx or 429: it may answer later."""

    code = ErrorCode.HTTP_5XX


class DownloadTimeout(TransientError):
    """The download did not finish within ``fetch_timeout_s`` (total, not per operation)."""

    code = ErrorCode.DOWNLOAD_TIMEOUT


class DownloadNetworkError(TransientError):
    """Name resolution, connection or transfer failed."""

    code = ErrorCode.NETWORK_ERROR


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Turns a host name (or IP spelling) and port into the addresses it stands for, as strings."""


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The operating system's resolver (``getaddrinfo``), without blocking the event loop.

    It also reads IP spellings like ``2130706433``, ``0x7f000001`` or ``0177.0.0.1`` (all 127.0.0.1), so those
    are checked as the address they really are.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def display_url(url: str) -> str:
    """``url`` as error messages show it, which end up in job rows and DLQ headers: without credentials."""
    return redact_url(url)


def guarded_client(timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client for requests to untrusted URLs whose address the caller checked and connects to.

    No redirects (each hop is checked by the caller). No keep-alive: pooled connections are keyed by the IP we
    connect to, and reusing one that was verified for another host name (same CDN address) would skip that host's
    certificate check. trust_env=False: an environment proxy would resolve the name again on its side and undo the
    address check.
    """
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_keepalive_connections=0),
    )


class ImageDownloader:
    """Downloads images under the SSRF guard, a total deadline and a byte limit; one shared httpx client.

    ``resolver`` and ``transport`` are injectable for tests. Call :meth:`aclose` (or use ``async with``) when done.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout_s = settings.fetch_timeout_s
        self._max_bytes = settings.max_download_bytes
        self._allow_private = settings.allow_private_urls
        self._resolve = resolver or system_resolver
        self._client = guarded_client(self._timeout_s, transport)

    async def __aenter__(self) -> ImageDownloader:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def download(self, url: str) -> bytes:
        """The body of ``url`` after at most ``MAX_REDIRECTS`` checked redirects.

        Raises a :class:`PermanentError` or :class:`TransientError` subclass whose message names the URL.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                current = url
                for _hop in range(MAX_REDIRECTS + 1):
                    body, location = await self._get_once(current)
                    if location is None:
                        assert body is not None
                        return body
                    current = urllib.parse.urljoin(current, location)
        except TimeoutError as exc:
            raise DownloadTimeout(f"download of {display_url(url)} took longer than {self._timeout_s:g} s") from exc
        raise TooManyRedirects(f"{display_url(url)} redirected more than {MAX_REDIRECTS} times")

    async def _get_once(self, url: str) -> tuple[bytes | None, str | None]:
        """One request: the body, or the redirect target (``Location``) to go to next."""
        scheme, host, port, target = split_url(url)
        addresses = await self._checked_addresses(url, host, port)
        host_header = netloc(ascii_host(host), port, scheme)
        extensions = {"sni_hostname": ascii_host(host)} if scheme == "https" else {}
        headers = {"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity"}
        last_error: httpx.ConnectError | None = None
        for address in addresses:
            request_url = f"{scheme}://{netloc(url_host(address), port, scheme)}{target}"
            try:
                return await self._stream(url, request_url, headers, extensions)
            except httpx.ConnectError as exc:
                last_error = exc  # nothing was sent: the next checked address is safe to try
            except httpx.TimeoutException as exc:
                raise DownloadTimeout(f"download of {display_url(url)} timed out: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                raise DownloadNetworkError(f"download of {display_url(url)} failed: {describe(exc)}") from exc
        assert last_error is not None, "resolver returned at least one address"
        raise DownloadNetworkError(f"cannot connect to {display_url(url)}: {describe(last_error)}") from last_error

    async def _checked_addresses(self, url: str, host: str, port: int) -> list[IPAddress]:
        return await checked_addresses(url, host, port, resolve=self._resolve, allow_private=self._allow_private)

    async def _stream(
        self, url: str, request_url: str, headers: dict[str, str], extensions: dict[str, str]
    ) -> tuple[bytes | None, str | None]:
        shown = display_url(url)
        request = self._client.build_request("GET", request_url, headers=headers, extensions=extensions)
        response = await self._client.send(request, stream=True)
        try:
            status = response.status_code
            if status in _REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise TooManyRedirects(f"{shown} answered {status} without a Location header")
                return None, location
            if status == httpx.codes.TOO_MANY_REQUESTS or status >= httpx.codes.INTERNAL_SERVER_ERROR:
                raise HttpServerError(f"{shown} answered HTTP {status} {response.reason_phrase}".rstrip())
            if not httpx.codes.is_success(status):
                raise HttpClientError(f"{shown} answered HTTP {status} {response.reason_phrase}".rstrip())
            return await self._read_body(shown, response), None
        finally:
            await response.aclose()

    async def _read_body(self, shown: str, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise DownloadTooLarge(f"{shown} is {declared} bytes, more than the limit of {self._max_bytes}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # Decoding it could inflate a small body into a huge one; images are compressed already anyway.
            raise HttpClientError(f"{shown} was sent with Content-Encoding {encoding!r}; only identity is accepted")
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > self._max_bytes:
                raise DownloadTooLarge(f"{shown} is larger than the limit of {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


async def checked_addresses(
    url: str, host: str, port: int, *, resolve: Resolver, allow_private: bool
) -> list[IPAddress]:
    """Every address ``host`` resolves to, each checked to be public (unless ``allow_private``): what to connect
    to, so that no second DNS answer is ever used. Raises :class:`BlockedUrl` or :class:`DownloadNetworkError`.
    """
    try:
        resolved = await resolve(ascii_host(host), port)
    except (OSError, UnicodeError) as exc:
        raise DownloadNetworkError(f"cannot resolve the host of {display_url(url)}: {exc}") from exc
    addresses: list[IPAddress] = []
    for text in resolved:
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not allow_private and not is_public_address(address):
            raise BlockedUrl(f"{display_url(url)} is blocked: {host} resolves to non-public address {address}")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DownloadNetworkError(f"the host of {display_url(url)} resolved to no address")
    return addresses


def split_url(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and path+query of ``url``; anything but http(s) with a host is :class:`InvalidUrl`."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"cannot parse URL {display_url(url)!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidUrl(f"URL scheme {scheme or '(none)'!r} is not allowed, only http and https: {display_url(url)}")
    if not parts.hostname:
        raise InvalidUrl(f"URL has no host: {display_url(url)}")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], target


def ascii_host(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidUrl(f"host {host!r} is not a valid domain name") from exc


def url_host(address: IPAddress) -> str:
    return f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)


def netloc(host: str, port: int, scheme: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
