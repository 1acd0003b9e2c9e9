"""``image-worker`` as a module, optionally with ONE loopback address standing in for a public one.

A real worker process with the SSRF guard on can fetch nothing on loopback, so a redirect from a "public" server
to a private address could never be tried end to end. With ``STAND_IN_PUBLIC_ADDRESS=127.0.0.2`` the guard counts
that one address as public (and nothing else changes): a server there can redirect, and the worker must check
the next hop. Without the variable this is the plain ``image-worker``.
"""

from __future__ import annotations

import ipaddress
import os

from consumer import download
from consumer.cli import main
from core.addresses import IPAddress


def install_stand_in(text: str) -> None:
    stand_in = ipaddress.ip_address(text)
    policy = download.is_public_address

    def is_public_or_stand_in(address: IPAddress) -> bool:
        return address == stand_in or policy(address)

    download.is_public_address = is_public_or_stand_in


if __name__ == "__main__":
    if stand_in := os.environ.get("STAND_IN_PUBLIC_ADDRESS"):
        install_stand_in(stand_in)
    main()
