"""The SSRF guard's matrix: every refused range, IPv6 and IPv4-mapped IPv6, with and without private networks."""

import ipaddress

import pytest

from shared.netguard import (
    SPECIAL_PURPOSE,
    Kind,
    Range,
    UnsafeUrlError,
    check_address,
    check_url,
    embedded_ipv4,
    redact_addresses,
)

ALWAYS_REFUSED = [
    "169.254.169.254",  # link-local: cloud metadata
    "169.254.0.1",
    "fe80::1",
    "224.0.0.1",  # multicast
    "ff02::1",
    "0.0.0.0",  # unspecified
    "::",
    "240.0.0.1",  # reserved
    "::ffff:169.254.169.254",  # IPv4-mapped IPv6 of link-local
    # Ranges of the IANA special-purpose registries that are not globally reachable, one or more per range.
    "0.1.2.3",  # "this network"
    "192.0.0.1",  # IETF protocol assignments
    "192.0.0.9",
    "192.0.0.170",  # NAT64 discovery
    "192.0.2.10",  # TEST-NET-1
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "198.18.0.1",  # benchmarking
    "198.19.255.254",
    "198.51.100.7",  # TEST-NET-2
    "203.0.113.9",  # TEST-NET-3
    "255.255.255.255",  # limited broadcast
    "250.1.2.3",
    "2001:db8::1",  # documentation
    "2001:db8:ffff::1",
    "3fff::1",
    "fe80::1",
    "febf::1",
    "fec0::1",  # deprecated site-local: outside global unicast
    "100::1",  # discard-only
    "64:ff9b:1::1",  # local-use translation
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "2001:100::1",  # IETF protocol assignments
    "5f00::1",  # SRv6 SIDs
    "4000::1",  # outside global unicast
    "::10.0.0.1",  # deprecated IPv4-compatible
    "::8.8.8.8",
    "ff0e::1",
    # Tunnelled IPv4 that is not global: refused even where private networks are allowed.
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:0:a00:1::1",  # Teredo, server 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "::ffff:192.0.0.1",
    "::ffff:198.18.0.1",
]
PRIVATE = [
    "10.0.0.1",
    "172.16.5.4",
    "172.31.255.255",
    "192.168.1.1",
    "127.0.0.1",
    "127.255.0.1",
    "::1",
    "100.64.0.1",
    "100.127.255.254",
    "fd00::1",
    "fc00::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
]
PUBLIC = [
    "93.184.216.34",
    "2606:2800:220:1:248:1893:25c8:1946",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.1",  # just above
    "172.32.0.1",
    "192.0.3.1",
    "192.31.196.1",  # AS112: globally reachable
    "198.17.255.255",
    "198.20.0.1",
    "223.255.255.254",
    "2a00:1450:4001:81c::200e",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "::ffff:8.8.8.8",
    "2001:4:112::1",  # AS112-v6
    "2001:20::1",  # ORCHIDv2
]


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
@pytest.mark.parametrize("allow_private", [True, False])
def test_always_refused(address: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeUrlError):
        check_address(address, allow_private=allow_private)


@pytest.mark.parametrize("address", PRIVATE)
def test_private_only_when_allowed(address: str) -> None:
    check_address(address, allow_private=True)
    with pytest.raises(UnsafeUrlError):
        check_address(address, allow_private=False)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    check_address(address, allow_private=False)


@pytest.mark.parametrize(
    ("url", "allow_private", "ok"),
    [
        ("https://hooks.example.com/render", False, True),
        ("http://hooks.example.com/render", False, False),
        ("http://hooks.example.com/render", True, True),
        ("ftp://hooks.example.com/render", True, False),
        ("https://user:pw@hooks.example.com/", False, False),
        ("https://[::ffff:169.254.169.254]/", True, False),
        ("https://169.254.169.254/latest/meta-data", True, False),
        ("https://127.0.0.1:8080/", False, False),
        ("https://127.0.0.1:8080/", True, True),
        ("https://localhost/", False, False),
        ("https://api.localhost/", False, False),
        ("https://[fe80::1]/", True, False),
        ("https:///nohost", True, False),
    ],
)
def test_urls(url: str, allow_private: bool, ok: bool) -> None:
    if ok:
        check_url(url, allow_private=allow_private)
    else:
        with pytest.raises(UnsafeUrlError):
            check_url(url, allow_private=allow_private)


@pytest.mark.parametrize("entry", SPECIAL_PURPOSE, ids=lambda e: str(e.network))
def test_every_registry_range_is_refused_at_both_ends(entry: Range) -> None:
    """The first and last address of every table entry: reserved ones always, private ones outside dev."""
    for ip in (entry.network[0], entry.network[-1]):
        with pytest.raises(UnsafeUrlError):
            check_address(ip, allow_private=False)
        if entry.kind is Kind.RESERVED:
            with pytest.raises(UnsafeUrlError):
                check_address(ip, allow_private=True)
        else:
            check_address(ip, allow_private=True)


def test_every_entry_names_its_rfc() -> None:
    assert all(entry.reference.startswith("RFC ") and entry.name for entry in SPECIAL_PURPOSE)


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:127.0.0.1", ["127.0.0.1"]),
        ("64:ff9b::a00:1", ["10.0.0.1"]),
        ("2002:7f00:1::", ["127.0.0.1"]),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", ["65.54.227.120", "10.0.0.1"]),
        ("2606:2800:220:1:248:1893:25c8:1946", []),
    ],
)
def test_embedded_ipv4(address: str, embedded: list[str]) -> None:
    assert [str(ip) for ip in embedded_ipv4(ipaddress.IPv6Address(address))] == embedded


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "2002:7f00:1::", "fe80::1", "192.0.0.1"])
@pytest.mark.parametrize("allow_private", [True, False])
def test_refusals_never_name_the_address(address: str, allow_private: bool) -> None:
    try:
        check_address(address, allow_private=allow_private)
    except UnsafeUrlError as exc:
        message = str(exc)
    else:
        return
    assert "network" in message
    assert address not in message
    assert str(ipaddress.ip_address(address)) not in message


def test_redact_addresses() -> None:
    text = "Connect call failed ('10.1.2.3', 443), [Errno 111] Connect call failed ('fe80::1%eth0', 443, 0, 7)"
    redacted = redact_addresses(text + " at 12:30:05")
    assert "10.1.2.3" not in redacted
    assert "fe80::1" not in redacted
    assert redacted.endswith("at 12:30:05")
    assert "Connect call failed" in redacted
