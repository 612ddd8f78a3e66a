"""Which URLs the platform may call on a user's behalf (webhooks, render ``callback_url``): the SSRF guard.

Only ``https`` by default; ``http`` and private, loopback and CGNAT addresses only when private networks are
allowed (the default under ``APP_ENV=dev``). Link-local (cloud metadata lives there), multicast, unspecified and
other reserved addresses are always refused, IPv4 and IPv6 alike, IPv4-mapped IPv6 included. Hostnames are checked
again on their resolved addresses at delivery time (see ``check_address``).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

CGNAT = ipaddress.ip_network("100.64.0.0/10")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrlError(ValueError):
    """The URL may not be called; the message says why (safe to show to the caller)."""


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_address(address: IPAddress | str, *, allow_private: bool) -> None:
    """Raise ``UnsafeUrlError`` for an address the platform must not connect to."""
    ip = _unmapped(ipaddress.ip_address(address) if isinstance(address, str) else address)
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        raise UnsafeUrlError("link-local, multicast and unspecified addresses are never allowed")
    if ip.is_reserved and not ip.is_loopback:
        raise UnsafeUrlError("reserved addresses are never allowed")
    private = ip.is_private or ip.is_loopback or (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT)
    if private:
        if not allow_private:
            raise UnsafeUrlError("private, loopback and shared (CGNAT) addresses are not allowed")
        return
    if not ip.is_global:
        raise UnsafeUrlError("non-global addresses are never allowed")


def check_url(url: str, *, allow_private: bool) -> None:
    """Static checks of a URL before it is stored: scheme, credentials, literal addresses, local names."""
    parts = urlsplit(url)
    allowed_schemes = {"https", "http"} if allow_private else {"https"}
    if parts.scheme.lower() not in allowed_schemes:
        raise UnsafeUrlError("only https URLs are allowed" if not allow_private else "only http(s) URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("URLs must not carry credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeUrlError("the URL has no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if (host == "localhost" or host.endswith(".localhost")) and not allow_private:
            raise UnsafeUrlError("local host names are not allowed") from None
        return
    check_address(address, allow_private=allow_private)
