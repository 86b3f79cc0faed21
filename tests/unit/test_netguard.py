"""The outbound-request guard: address classes, URL syntax, allow-lists, resolving once."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import httpcore
import pytest

from shared.netguard import (
    PinnedBackend,
    Policy,
    UrlRefused,
    check_url,
    forbidden_reason,
    policy_from_env,
    vet,
)

OPEN = Policy.parse("")


def _resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"cannot resolve {host}")
        return table[host]

    return resolve


# -- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.5", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback (IPv4-mapped form of 127.0.0.1)"),
        ("::ffff:169.254.169.254", "link-local (IPv4-mapped form of 169.254.169.254)"),
        # Forms the old guard let through: Python calls them global.
        ("fec0::1", "site-local"),
        ("2002:0a00:0001::1", "private (6to4 form of 10.0.0.1)"),
        ("2002:a9fe:a9fe::", "link-local (6to4 form of 169.254.169.254)"),
        ("64:ff9b::a00:1", "private (NAT64 form of 10.0.0.1)"),
        ("64:ff9b::7f00:1", "loopback (NAT64 form of 127.0.0.1)"),
        ("64:ff9b:1::5db8:d822", "local-use NAT64"),
        ("::a00:1", "private (IPv4-compatible form of 10.0.0.1)"),
    ],
)
def test_non_public_addresses_are_forbidden(ip: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(ip)) == reason


@pytest.mark.parametrize(
    "ip",
    [
        "93.184.216.34",
        "2606:4700::1111",
        "::ffff:93.184.216.34",
        # A public IPv4 host behind DNS64 (IPv6-only clusters) or a 6to4 relay stays callable.
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ],
)
def test_public_addresses_are_fine(ip: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(ip)) is None


# -- URL syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("http:///x", "URL has no host"),
        ("http://user:pw@example.com/", "credentials in the URL are not allowed"),
        (f"http://{'a' * 64}.example.com/h", "is longer than 63 characters"),
        ("http://a..example.com/h", "has an empty label"),
        ("http://.example.com/h", "has an empty label"),
        ("http://exa_mple.com/", "may only hold letters, digits and inner hyphens"),
        ("http://-bad.example.com/", "may only hold letters, digits and inner hyphens"),
        (f"http://{'a.' * 127}com/", "host is longer than 253 characters"),
        ("http://127.1/", "neither a dotted-quad IPv4 address nor a DNS name"),
        ("http://2130706433/", "neither a dotted-quad IPv4 address nor a DNS name"),
        ("http://example.com:22/", "port 22 is not allowed (allowed: 80, 443, 8080, 8443)"),
        ("http://example.com:0/", "port 0 is not a valid port"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("http://[::ffff:10.0.0.1]/", "is a private (IPv4-mapped form of 10.0.0.1) address"),
        ("http://[fe80::1%25eth0]/x", "IPv6 zone ids are not allowed"),
        ("http://169.254.169.254/latest/meta-data", "is a link-local address"),
        ("https://example.com/" + "x" * 2048, "URL is longer than 2048 characters"),
    ],
)
def test_check_url_refuses_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(UrlRefused, match=re.escape(message)):
        check_url(url, OPEN)


def test_check_url_accepts_names_idn_and_default_ports() -> None:
    t = check_url("https://Hooks.Example.COM./v1/x?token=abc", OPEN)
    assert (t.scheme, t.host, t.port) == ("https", "hooks.example.com", 443)
    assert t.origin == "https://hooks.example.com:443"
    assert check_url("http://bücher.example/h", OPEN).host == "xn--bcher-kva.example"
    assert check_url("http://example.com:8443/", OPEN).port == 8443
    assert check_url("http://[2606:4700::1111]/h", OPEN).host == "2606:4700::1111"


def test_allow_listed_hosts_and_networks_may_use_any_port() -> None:
    policy = Policy.parse("127.0.0.1, ::1, internal.corp", "443")
    assert check_url("http://127.0.0.1:39017/hook", policy).port == 39017
    assert check_url("http://[::1]:9000/hook", policy).port == 9000
    assert check_url("http://internal.corp:7000/hook", policy).port == 7000
    with pytest.raises(UrlRefused, match="port 80 is not allowed"):
        check_url("http://example.com/", policy)
    with pytest.raises(UrlRefused, match=r"127\.0\.0\.2 is a loopback address"):
        check_url("http://127.0.0.2:9000/", policy)


def test_policy_from_env_reads_both_settings_and_blames_the_server_for_typos() -> None:
    policy = policy_from_env(
        {"VOC_CALLBACK_ALLOW_HOSTS": "10.0.0.0/8", "VOC_CALLBACK_ALLOW_PORTS": "443"}
    )
    assert policy.ports == frozenset({443})
    assert policy.allows_ip(ipaddress.ip_address("10.2.3.4"))
    with pytest.raises(RuntimeError, match="'44x' is not a number"):
        policy_from_env({"VOC_CALLBACK_ALLOW_PORTS": "443,44x"})
    with pytest.raises(RuntimeError, match="70000 is not a TCP port"):
        policy_from_env({"VOC_CALLBACK_ALLOW_PORTS": "70000"})


# -- resolving once ---------------------------------------------------------------------------


async def test_vet_resolves_and_checks_every_address() -> None:
    ok = _resolver({"hooks.example.com": ["93.184.216.34", "2606:4700::1111"]})
    target = await vet("https://hooks.example.com/x", OPEN, ok)
    assert target.addresses == ("93.184.216.34", "2606:4700::1111")
    # One private address among public ones is enough to refuse (DNS tricks).
    mixed = _resolver({"hooks.example.com": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(UrlRefused, match=r"resolves to 10\.0\.0\.7, a private address"):
        await vet("https://hooks.example.com/x", OPEN, mixed)
    sixtofour = _resolver({"hooks.example.com": ["2002:0a00:0001::1"]})
    with pytest.raises(UrlRefused, match=r"6to4 form of 10\.0\.0\.1"):
        await vet("https://hooks.example.com/x", OPEN, sixtofour)
    with pytest.raises(OSError, match="cannot resolve"):
        await vet("https://nowhere.example.com/x", OPEN, ok)


async def test_vet_pins_literals_without_dns_and_allows_listed_addresses() -> None:
    def boom(host: str, port: int) -> Any:  # pragma: no cover - must not be called
        raise AssertionError("a literal address was resolved")

    target = await vet("http://93.184.216.34/h", OPEN, boom)
    assert target.addresses == ("93.184.216.34",)
    loopback = _resolver({"localhost": ["127.0.0.1"]})
    with pytest.raises(UrlRefused, match=r"localhost resolves to 127\.0\.0\.1, a loopback"):
        await vet("http://localhost/h", OPEN, loopback)
    allowed = await vet("http://localhost:9000/h", Policy.parse("127.0.0.0/8", "9000"), loopback)
    assert allowed.addresses == ("127.0.0.1",)


async def test_pinned_backend_connects_only_for_its_host() -> None:
    backend = PinnedBackend("hooks.example.com", ["93.184.216.34"])
    with pytest.raises(httpcore.ConnectError, match="is not the vetted host"):
        await backend.connect_tcp("other.example.com", 443)
    with pytest.raises(httpcore.ConnectError, match="unix sockets are not allowed"):
        await backend.connect_unix_socket("/var/run/docker.sock")
