"""POSTing a completion callback to a client's URL under the same SSRF guard as image downloads.

The URL was checked at submit for literal addresses only; here its host is resolved again at every attempt and
**every** address must be public (unless ``ALLOW_PRIVATE_URLS``), and the POST goes to the address checked, with
the URL's host as ``Host`` and TLS SNI (:func:`consumer.download.checked_addresses`): a DNS answer that changed
since submit cannot aim the worker into the private network. No redirect is followed (a 3xx is a failed attempt:
a receiver that moved says so with its URL), the whole attempt has one deadline (``CALLBACK_TIMEOUT_S``) and at
most ``MAX_RESPONSE_BYTES`` of the answer are read, then dropped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import httpx

from consumer.download import (
    Resolver,
    ascii_host,
    checked_addresses,
    display_url,
    guarded_client,
    netloc,
    split_url,
    system_resolver,
    url_host,
)
from consumer.errors import TransientError, describe
from core.settings import Settings

MAX_RESPONSE_BYTES: Final = 64 * 1024
USER_AGENT: Final = "image-pipeline-callbacks/1"


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What one POST got: the receiver's status (None when no answer came), or why it failed."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class CallbackSender:
    """Sends callback POSTs; one shared httpx client without keep-alive, proxies or redirects.

    Raises :class:`consumer.download.InvalidUrl` or :class:`consumer.download.BlockedUrl` (permanent: the URL will
    never be allowed) before anything is sent; every other failure is a :class:`PostOutcome` with its error.
    ``resolver`` and ``transport`` are injectable for tests. Call :meth:`aclose` when done.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout_s = settings.callback_timeout_s
        self._allow_private = settings.allow_private_urls
        self._resolve = resolver or system_resolver
        self._client = guarded_client(self._timeout_s, transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostOutcome:
        """POST ``body`` (JSON) with ``headers`` to ``url`` once."""
        scheme, host, port, target = split_url(url)
        shown = display_url(url)
        try:
            async with asyncio.timeout(self._timeout_s):
                addresses = await checked_addresses(
                    url, host, port, resolve=self._resolve, allow_private=self._allow_private
                )
                request_headers = {
                    **headers,
                    "Host": netloc(ascii_host(host), port, scheme),
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    "Accept-Encoding": "identity",
                }
                extensions = {"sni_hostname": ascii_host(host)} if scheme == "https" else {}
                last_error: Exception | None = None
                for address in addresses:
                    request_url = f"{scheme}://{netloc(url_host(address), port, scheme)}{target}"
                    request = self._client.build_request(
                        "POST", request_url, content=body, headers=request_headers, extensions=extensions
                    )
                    try:
                        return await self._send(request)
                    except httpx.ConnectError as exc:
                        last_error = exc  # nothing was sent: the next checked address is safe to try
                assert last_error is not None, "checked_addresses returns at least one address"
                return PostOutcome(None, f"cannot connect to {shown}: {describe(last_error)}")
        except TimeoutError:
            return PostOutcome(None, f"no answer from {shown} within {self._timeout_s:g} s")
        except httpx.TransportError as exc:
            return PostOutcome(None, f"POST to {shown} failed: {describe(exc)}")
        except TransientError as exc:  # name resolution failed
            return PostOutcome(None, describe(exc))

    async def _send(self, request: httpx.Request) -> PostOutcome:
        response = await self._client.send(request, stream=True)
        try:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received >= MAX_RESPONSE_BYTES:
                    break  # the answer's body means nothing to us: enough is read to let the server finish
        finally:
            await response.aclose()
        status = response.status_code
        if 200 <= status < 300:
            return PostOutcome(status, None)
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if 300 <= status < 400:
            reason += " (redirects are not followed)"
        return PostOutcome(status, reason)
