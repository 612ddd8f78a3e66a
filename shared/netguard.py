"""Which URLs the platform may call on a user's behalf (webhooks, render ``callback_url``): the SSRF guard.

Only ``https`` by default; ``http`` and private, loopback and CGNAT addresses only when private networks are
allowed (the default under ``APP_ENV=dev``). Every other range of the IANA IPv4 and IPv6 Special-Purpose Address
Registries that is not globally reachable is always refused (``SPECIAL_PURPOSE`` below, one entry per registry
row, with its RFC), and so are multicast and IPv6 outside global unicast. Addresses that embed an IPv4 address
(IPv4-mapped, NAT64, 6to4, Teredo) are judged by that address too. Hostnames are checked again on their resolved
addresses at delivery time (see ``check_address``).

Refusal messages say which kind of network was refused, never the address: the caller must not learn what an
internal name resolves to.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Kind(Enum):
    PRIVATE = "private"  # allowed only with private networks allowed (dev)
    RESERVED = "reserved"  # never allowed


PRIVATE_REASON = "the address is in a private network (private-use, loopback or shared CGNAT)"
RESERVED_REASON = "the address is in a reserved or special-purpose network (link-local, multicast, documentation ...)"


@dataclass(frozen=True, slots=True)
class Range:
    network: IPNetwork
    name: str
    reference: str
    kind: Kind = Kind.RESERVED


def _r(cidr: str, name: str, reference: str, kind: Kind = Kind.RESERVED) -> Range:
    return Range(ipaddress.ip_network(cidr), name, reference, kind)


SPECIAL_PURPOSE: tuple[Range, ...] = (
    # IANA IPv4 Special-Purpose Address Registry: every entry not globally reachable (192.0.0.0/24 whole: its
    # two globally reachable /32s are PCP and TURN anycast, never a webhook receiver).
    _r("0.0.0.0/8", '"This network"', "RFC 791 §3.2"),
    _r("10.0.0.0/8", "private-use", "RFC 1918", Kind.PRIVATE),
    _r("100.64.0.0/10", "shared address space (CGNAT)", "RFC 6598", Kind.PRIVATE),
    _r("127.0.0.0/8", "loopback", "RFC 1122 §3.2.1.3", Kind.PRIVATE),
    _r("169.254.0.0/16", "link-local", "RFC 3927"),
    _r("172.16.0.0/12", "private-use", "RFC 1918", Kind.PRIVATE),
    _r("192.0.0.0/24", "IETF protocol assignments", "RFC 6890 §2.1"),
    _r("192.0.0.0/29", "IPv4 service continuity prefix", "RFC 7335"),
    _r("192.0.0.8/32", "IPv4 dummy address", "RFC 7600"),
    _r("192.0.0.170/31", "NAT64/DNS64 discovery", "RFC 8880, RFC 7050 §2.2"),
    _r("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"),
    _r("192.88.99.0/24", "deprecated 6to4 relay anycast", "RFC 7526"),
    _r("192.168.0.0/16", "private-use", "RFC 1918", Kind.PRIVATE),
    _r("198.18.0.0/15", "benchmarking", "RFC 2544"),
    _r("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"),
    _r("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"),
    _r("224.0.0.0/4", "multicast", "RFC 5771"),
    _r("240.0.0.0/4", "reserved", "RFC 1112 §4"),
    _r("255.255.255.255/32", "limited broadcast", "RFC 8190, RFC 919 §7"),
    # IANA IPv6 Special-Purpose Address Registry: every entry not globally reachable.
    _r("::1/128", "loopback", "RFC 4291", Kind.PRIVATE),
    _r("::/128", "unspecified", "RFC 4291"),
    _r("::/96", "deprecated IPv4-compatible", "RFC 4291 §2.5.5.1"),
    _r("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", "RFC 8215"),
    _r("100::/64", "discard-only", "RFC 6666"),
    _r("100:0:0:1::/64", "dummy IPv6 prefix", "RFC 9780"),
    _r("2001:2::/48", "benchmarking", "RFC 5180"),
    _r("2001:10::/28", "deprecated ORCHID", "RFC 4843"),
    _r("2001:db8::/32", "documentation", "RFC 3849"),
    _r("3fff::/20", "documentation", "RFC 9637"),
    _r("5f00::/16", "segment routing SIDs", "RFC 9602"),
    _r("fc00::/7", "unique-local", "RFC 4193", Kind.PRIVATE),
    _r("fe80::/10", "link-local unicast", "RFC 4291"),
    _r("ff00::/8", "multicast", "RFC 4291 §2.7"),
)
"""Longest prefix wins (``192.0.0.0/29`` inside ``192.0.0.0/24``); IPv4-mapped ``::ffff:0:0/96`` (RFC 4291),
NAT64 ``64:ff9b::/96`` (RFC 6052), 6to4 ``2002::/16`` (RFC 3056) and Teredo ``2001::/32`` (RFC 4380) are judged
by the IPv4 address they embed (``embedded_ipv4``)."""

GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
"""RFC 4291 §2.4 / IANA IPv6 Address Space: the rest of the IPv6 space is reserved by the IETF."""
IETF_PROTOCOL_V6 = ipaddress.IPv6Network("2001::/23")
"""RFC 2928: not globally reachable as a block; its globally reachable sub-ranges are listed below."""
IETF_PROTOCOL_V6_GLOBAL = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001:1::1/128",
        "2001:1::2/128",
        "2001:1::3/128",
        "2001:3::/32",
        "2001:4:112::/48",
        "2001:20::/28",
        "2001:30::/28",
    )
)
"""PCP anycast (RFC 7723), TURN anycast (RFC 8155), DNS-SD SRP anycast (RFC 9665), AMT (RFC 7450), AS112-v6
(RFC 7535), ORCHIDv2 (RFC 7343), drone remote ID (RFC 9374)."""
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")

_BY_VERSION: dict[int, tuple[Range, ...]] = {
    version: tuple(
        sorted((r for r in SPECIAL_PURPOSE if r.network.version == version), key=lambda r: -r.network.prefixlen)
    )
    for version in (4, 6)
}


class UnsafeUrlError(ValueError):
    """The URL may not be called; the message says why (safe to show to the caller: it never names an address)."""


def special_range(ip: IPAddress) -> Range | None:
    """The most specific registry entry holding ``ip``, if any."""
    for entry in _BY_VERSION[ip.version]:
        if ip in entry.network:
            return entry
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries and would reach: mapped, NAT64, 6to4, Teredo server and client."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return ()


def _refuse(kind: Kind, allow_private: bool) -> None:
    if kind is Kind.RESERVED:
        raise UnsafeUrlError(RESERVED_REASON)
    if not allow_private:
        raise UnsafeUrlError(PRIVATE_REASON)


def _check_v4(ip: ipaddress.IPv4Address, *, allow_private: bool) -> None:
    entry = special_range(ip)
    if entry is not None:
        _refuse(entry.kind, allow_private)


def check_address(address: IPAddress | str, *, allow_private: bool) -> None:
    """Raise ``UnsafeUrlError`` for an address the platform must not connect to.

    IPv4-mapped addresses follow their IPv4 address's rule (the socket connects to it). Tunnelled forms (NAT64,
    6to4, Teredo) are refused whenever the embedded IPv4 address is not global, private networks allowed or not:
    a relay would carry the request to that address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        _check_v4(ip, allow_private=allow_private)
        return
    if ip.scope_id:
        raise UnsafeUrlError(RESERVED_REASON)
    if ip.ipv4_mapped is not None:
        _check_v4(ip.ipv4_mapped, allow_private=allow_private)
        return
    entry = special_range(ip)
    if entry is not None:
        _refuse(entry.kind, allow_private)
        return
    for inner in embedded_ipv4(ip):
        if special_range(inner) is not None:
            raise UnsafeUrlError(RESERVED_REASON)
    if ip in NAT64 or ip in TEREDO or ip in SIX_TO_FOUR:
        return
    if ip not in GLOBAL_UNICAST_V6:
        raise UnsafeUrlError(RESERVED_REASON)
    if ip in IETF_PROTOCOL_V6 and not any(ip in n for n in IETF_PROTOCOL_V6_GLOBAL):
        raise UnsafeUrlError(RESERVED_REASON)


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


_ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[\w.-]+)?|\d{1,3}(?:\.\d{1,3}){3}")
"""Candidates only: a token is redacted when it parses as an IP address (``12:30:05`` does not)."""


def _redacted(match: re.Match[str]) -> str:
    token = match.group(0)
    try:
        ipaddress.ip_address(token.split("%", 1)[0])
    except ValueError:
        return token
    return "<address>"


def redact_addresses(text: str) -> str:
    """``text`` with every IP address replaced: for messages about a connection (OS errors name the address
    connected to, which for a hostname is what it resolved to) that a caller will read."""
    return _ADDRESS_LIKE.sub(_redacted, text)
