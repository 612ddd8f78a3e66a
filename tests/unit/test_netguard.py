"""The SSRF guard's matrix: every refused range, IPv6 and IPv4-mapped IPv6, with and without private networks."""

import pytest

from shared.netguard import UnsafeUrlError, check_address, check_url

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
]
PRIVATE = ["10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "::1", "100.64.0.1", "fd00::1", "::ffff:10.0.0.1"]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"]


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
