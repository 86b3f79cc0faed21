"""The guard on outbound requests to URLs that tenants choose (job callbacks).

Three layers, each usable on its own:

1. `check_url(url, policy)`: syntax only, no DNS, so the API can refuse a bad callback URL
   at job creation with the reason (422) and delivery checks it again. http(s) only; no
   credentials; the host is an IP literal or a DNS name of letter-digit-hyphen labels of
   1-63 characters (at most 253 in all; a label that is too long or empty is what made the
   OS resolver raise `UnicodeError`); the port is in the allow-list; an IP literal must
   be a public address.
2. `vet(url, policy, resolver)`: `check_url`, then the name is resolved once and every
   address must be public (`forbidden_reason`), giving a `Target` that carries them.
3. `PinnedTransport(target)`: an httpx transport that connects only to the target's vetted
   addresses. The URL keeps its host name, so the `Host` header, the TLS server name (SNI)
   and certificate verification are all for the name, while no second DNS lookup happens
   between the check and the connect (DNS rebinding cannot swap the address in between).

`Policy` is the operator's allow-list: `VOC_CALLBACK_ALLOW_HOSTS` (host names, IPs or
CIDRs that may be called although not public, e.g. loopback receivers in tests; they may
use any port) and `VOC_CALLBACK_ALLOW_PORTS` (the ports other hosts may use).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = "80,443,8080,8443"
MAX_URL_CHARS = 2048
MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 63
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: v4 in the last 32 bits
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use, never public
SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: v4 in bits 16-48
V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 (deprecated): v4 in the last 32


class UrlRefused(ValueError):
    """The URL may not be called (bad syntax, port, or a non-public address); the message
    says why. Never worth retrying: the URL itself is the problem."""


@dataclass(frozen=True)
class Policy:
    """What may be called despite the guard (hosts, networks) and on which ports."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    ports: frozenset[int] = frozenset(int(p) for p in DEFAULT_PORTS.split(","))

    @classmethod
    def parse(cls, allow_hosts: str = "", allow_ports: str = DEFAULT_PORTS) -> Policy:
        """From the two settings: comma-separated names/IPs/CIDRs, and port numbers."""
        hosts: set[str] = set()
        nets: list[IPNetwork] = []
        for item in (x.strip() for x in allow_hosts.split(",")):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        ports: set[int] = set()
        for item in (x.strip() for x in allow_ports.split(",")):
            if not item:
                continue
            try:
                port = int(item)
            except ValueError:
                raise ValueError(f"VOC_CALLBACK_ALLOW_PORTS: {item!r} is not a number") from None
            if not 0 < port < 65536:
                raise ValueError(f"VOC_CALLBACK_ALLOW_PORTS: {port} is not a TCP port")
            ports.add(port)
        return cls(frozenset(hosts), tuple(nets), frozenset(ports))

    def allows_host(self, host: str) -> bool:
        """The host name itself is allow-listed."""
        return host.lower().rstrip(".") in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        """The address lies in an allow-listed network."""
        return any(ip.version == n.version and ip in n for n in self.networks)


def policy_from_env(environ: Mapping[str, str] | None = None) -> Policy:
    """The policy of `VOC_CALLBACK_ALLOW_HOSTS` / `VOC_CALLBACK_ALLOW_PORTS`.

    A malformed setting raises `RuntimeError` (the server's fault, not a `ValueError` that
    a request validator would blame on the client).
    """
    env = os.environ if environ is None else environ
    try:
        return _parsed(
            env.get("VOC_CALLBACK_ALLOW_HOSTS", ""),
            env.get("VOC_CALLBACK_ALLOW_PORTS", DEFAULT_PORTS),
        )
    except ValueError as exc:
        raise RuntimeError(f"bad callback allow-list setting: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _parsed(allow_hosts: str, allow_ports: str) -> Policy:
    return Policy.parse(allow_hosts, allow_ports)


# -- addresses ------------------------------------------------------------------------------


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be called (None if it is a public, global address).

    IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, NAT64) are judged by
    the address they carry: `2002:0a00:0001::` is 10.0.0.1 behind a 6to4 relay, and
    Python's `is_global` calls it global.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            form, v4 = embedded
            inner = forbidden_reason(v4)
            return None if inner is None else f"{inner} ({form} form of {v4})"
        if ip in NAT64_LOCAL:
            return "local-use NAT64"
        if ip.is_site_local:
            return "site-local"
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_unspecified", "unspecified"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return label
    if not ip.is_global:
        return "not globally routable"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in V4_COMPATIBLE and int(ip) > 1:  # not :: nor ::1
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


# -- URLs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, with the addresses it may be connected to."""

    url: str
    scheme: str
    host: str  # lower case, no trailing dot, IDNA (ASCII) form
    port: int
    addresses: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """`scheme://host:port`: what logs may show (paths can carry tokens)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def check_url(url: str, policy: Policy) -> Target:
    """The URL's parts if it may be called as far as syntax says (no DNS); else
    `UrlRefused` with the reason. An IP literal is vetted here already."""
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        raw_port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused(f"scheme {parts.scheme!r} is not allowed (http or https only)")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are not allowed")
    host = parts.hostname or ""
    if not host:
        raise UrlRefused("URL has no host")
    if raw_port == 0:
        raise UrlRefused("port 0 is not a valid port")
    port = raw_port or (443 if scheme == "https" else 80)
    literal = _ip_literal(host)
    if literal is None:
        host = _dns_name(host)
    allowed = policy.allows_host(host) or (literal is not None and policy.allows_ip(literal))
    if literal is not None and not allowed:
        reason = forbidden_reason(literal)
        if reason is not None:
            raise UrlRefused(f"{literal} is a {reason} address (not in VOC_CALLBACK_ALLOW_HOSTS)")
    if not allowed and port not in policy.ports:
        allowed_ports = ", ".join(str(p) for p in sorted(policy.ports))
        raise UrlRefused(f"port {port} is not allowed (allowed: {allowed_ports})")
    return Target(url=url, scheme=scheme, host=str(literal or host), port=port)


def _ip_literal(host: str) -> IPAddress | None:
    if "%" in host:
        raise UrlRefused("IPv6 zone ids are not allowed in the host")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _dns_name(host: str) -> str:
    """`host` as a checked, ASCII (IDNA) DNS name; `UrlRefused` says what is wrong."""
    name = host.lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise UrlRefused(f"host {host!r} is not a valid internationalised name") from None
    name = name.removesuffix(".")  # one trailing dot: an absolute name, the same host
    if len(name) > MAX_HOST_CHARS:
        raise UrlRefused(f"host is longer than {MAX_HOST_CHARS} characters")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise UrlRefused(f"host {host!r} has an empty label")
        if len(label) > MAX_LABEL_CHARS:
            raise UrlRefused(
                f"host label {label[:20]!r}... is longer than {MAX_LABEL_CHARS} characters"
            )
        if not _LABEL.match(label):
            raise UrlRefused(
                f"host label {label!r} may only hold letters, digits and inner hyphens"
            )
    if labels[-1].isdigit():
        # `127.1` or `2130706433`: resolvers read these as IPv4 shorthands.
        raise UrlRefused(f"host {host!r} is neither a dotted-quad IPv4 address nor a DNS name")
    return name


async def vet(url: str, policy: Policy, resolver: Resolver) -> Target:
    """`check_url`, then resolve once: every address must be allowed. The `Target` holds
    the addresses to connect to. Raises `UrlRefused`, or `OSError` if resolving failed."""
    target = check_url(url, policy)
    literal = _ip_literal(target.host)
    if literal is not None:
        return Target(target.url, target.scheme, target.host, target.port, (str(literal),))
    addresses = await resolver(target.host, target.port)
    if not addresses:
        raise UrlRefused(f"{target.host} resolves to no address")
    if not policy.allows_host(target.host):
        for raw in addresses:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
            reason = forbidden_reason(ip)
            if reason is not None and not policy.allows_ip(ip):
                raise UrlRefused(
                    f"{target.host} resolves to {ip}, a {reason} address "
                    "(not in VOC_CALLBACK_ALLOW_HOSTS)"
                )
    return Target(target.url, target.scheme, target.host, target.port, tuple(addresses))


class SystemResolver:
    """The OS resolver on threads of its own: a hanging lookup holds one of these, not
    the event loop's default executor that the rest of the process shares."""

    def __init__(self, max_workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="voc-dns")

    async def __call__(self, host: str, port: int) -> list[str]:
        """Every address of `host` (`OSError` if it cannot be resolved)."""
        infos = await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        )
        return sorted({str(info[4][0]) for info in infos})

    def close(self) -> None:
        """Stop the threads (a lookup still running is abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- connecting to what was vetted ----------------------------------------------------------


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the vetted addresses of one host, in order, and nowhere else."""

    def __init__(self, host: str, addresses: Iterable[str]) -> None:
        self.host = host
        self.addresses = tuple(addresses)
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to the first vetted address that answers (never a DNS lookup)."""
        if _normal_host(host) != _normal_host(self.host):
            raise httpcore.ConnectError(f"{host} is not the vetted host {self.host}")
        error: Exception = httpcore.ConnectError(f"{self.host} has no vetted address")
        for address in self.addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: callbacks go over TCP to a vetted address."""
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Delegated (httpcore's retry delays)."""
        await self._inner.sleep(seconds)


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport for one vetted `Target`: one connection, no keep-alive, TCP to
    the vetted addresses only; TLS (SNI and certificate) for the URL's host name."""

    def __init__(self, target: Target, ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=PinnedBackend(target.host, target.addresses),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` over the pinned pool (the mapping httpx's own transport does)."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        response = await self._pool.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close the connection."""
        await self._pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_stream():
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()
