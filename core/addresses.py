"""Which IP addresses an untrusted URL may point at: one policy for the API (literal IPs, at accept time) and the
workers (every resolved address, at fetch time).

OWASP's SSRF list: loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved and documentation
ranges are refused, and so are IPv6 forms that embed such an IPv4 address (mapped, 6to4, Teredo, NAT64).
``ipaddress.is_global`` alone misses some (100.64/10 is neither private nor global), so the list is explicit and
``is_global`` is an extra check on top.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DENIED_NETWORKS: Final = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::/96",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
# The legacy IPv4 spellings getaddrinfo and browsers accept: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_LEGACY_IPV4: Final = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}", re.IGNORECASE)


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast address; embedded IPv4 (mapped, 6to4, Teredo, NAT64) is checked."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and not is_public_address(embedded):
            return False
        if address.ipv4_mapped is not None:
            return True  # the mapped address is all that matters, and it is public
    if any(address in network for network in _DENIED_NETWORKS):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` spells literally (``[::1]``, ``127.0.0.1``, ``2130706433``, ``0x7f.1``...), or None
    for a host name, which only DNS can turn into addresses. No name is ever resolved here."""
    text = host.strip().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" not in text and not _LEGACY_IPV4.fullmatch(text):
        return None  # a host name: checked first, as failing to parse one as an address is slow
    try:
        return ipaddress.ip_address(text.split("%", 1)[0] if ":" in text else text)
    except ValueError:
        pass
    if ":" in text:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None  # e.g. a component out of range: not an address, and no resolver will make it one


def literal_ip_blocked(host: str) -> bool:
    """Whether ``host`` is a literal IP address that is not public (a host name is never blocked here)."""
    address = literal_ip(host)
    return address is not None and not is_public_address(address)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
