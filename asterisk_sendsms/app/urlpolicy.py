"""The policy for every URL a user supplies (DeliveryReportURL, the incoming-SMS URL, OzML fetches of every kind,
the Call command's Url): which URLs are accepted, and which addresses the HTTP client may connect to.

Internal targets (loopback, private, link-local, multicast, unspecified, reserved, shared and this host's own
addresses) are refused in every spelling an address can take (`127.1`, `2130706433`, `0x7f000001`,
`0177.0.0.1`, `[::ffff:127.0.0.1]`, `localhost`), unless `allowed_hosts` names the host or
`allowed_networks` holds the address. A literal address is refused when the URL is accepted; a host name is
resolved when the client connects, every address it resolves to is checked, and the client connects to the
address checked (so a name cannot resolve to a public address for the check and an internal one for the
connection)."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["MAX_URL_LENGTH", "AddressRefused", "IpAddress", "UrlPolicy", "UrlRejected", "is_internal", "url_host"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
_OWN_REFRESH = 60.0  # this host's addresses are read again after this long (DHCP, interfaces coming up)
# What glibc's inet_aton reads as an IPv4 address (and so getaddrinfo does): 1 to 4 parts, each decimal,
# octal (leading 0) or hexadecimal (0x); `127.1` and `2130706433` are 127.0.0.1.
_IPV4_LEGACY = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRejected(ValueError):
    """A URL the policy does not accept; the text says why in the user's terms."""


class AddressRefused(Exception):
    """A host resolves to an address the policy refuses. The text names the host, never whether the address
    would have answered."""


@functools.lru_cache(maxsize=4096)  # ipaddress's properties test lists of networks; receivers' addresses repeat
def is_internal(address: IpAddress) -> bool:
    """Whether `address` belongs to an internal network (not reachable on the public internet), including
    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(is_internal(inner) for inner in embedded):
            return True
    return (not address.is_global or address.is_multicast or address.is_private or address.is_loopback
            or address.is_link_local or address.is_unspecified or address.is_reserved)


def literal_address(host: str) -> IpAddress | None:
    """The address a URL's host names literally, in any spelling a resolver accepts; None for a name."""
    host = host.rstrip(".")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return None
    if _IPV4_LEGACY.fullmatch(host):  # dotted quads too: inet_aton reads them as ip_address would
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None  # e.g. a part above 255: no resolver reads it as an address either
    return None


def url_host(url: str) -> str:
    """The host a URL's requests go to, as fairness between receivers counts it (never empty)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return (host or "?").rstrip(".")[:255] or "?"


def _is_loopback_name(host: str) -> bool:
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost") or host in ("localhost.localdomain", "ip6-localhost",
                                                                         "ip6-loopback")


def _own_addresses() -> frozenset[IpAddress]:
    """This host's addresses (Linux: the kernel's local routes and IPv6 interface addresses)."""
    found: set[IpAddress] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in itertools.pairwise(lines):
        if line.strip().startswith("/32 host LOCAL"):
            text = previous.strip().removeprefix("|-- ")
            try:
                found.add(ipaddress.IPv4Address(text))
            except ValueError:
                pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            try:
                found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
            except (ValueError, IndexError):
                pass
    except OSError:
        pass
    return frozenset(found)


@dataclass(slots=True)
class UrlPolicy:
    """`allowed_hosts`: if non-empty, only these hosts (lower case, as in URLs), each trusted even if it is
    internal. `allowed_networks`: internal addresses that may still be connected to."""

    allowed_hosts: tuple[str, ...] = ()
    allowed_networks: tuple[Network, ...] = ()
    _own: frozenset[IpAddress] = field(default_factory=frozenset, init=False, repr=False)
    _own_read_at: float = field(default=float("-inf"), init=False, repr=False)

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(allowed_hosts: tuple[str, ...], allowed_networks: tuple[Network, ...]) -> UrlPolicy:
        """One policy per configuration, shared by every check (it keeps this host's addresses)."""
        return UrlPolicy(allowed_hosts, allowed_networks)

    def check_url(self, url: str) -> str:
        """The URL stripped of surrounding blanks, if it may be accepted; else `UrlRejected`. Literal
        addresses are checked here; names are checked when the client connects."""
        url = url.strip()
        if len(url) > MAX_URL_LENGTH:
            raise UrlRejected(f"the URL is longer than {MAX_URL_LENGTH} characters")
        if _UNSAFE.search(url):
            raise UrlRejected("the URL holds spaces or control characters (percent-encode them)")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise UrlRejected("the URL cannot be parsed") from None
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise UrlRejected("only http:// and https:// URLs with a host are supported")
        self.check_host(host)
        return url

    def check_host(self, host: str) -> None:
        """Refuses (`UrlRejected`) a host outside `allowed_hosts`, or one that names an internal address
        literally; a name (`localhost` too) is checked where it resolves to, at connect."""
        host = host.lower()
        if self.allowed_hosts:
            if host.rstrip(".") not in self.allowed_hosts:
                raise UrlRejected(f"host {host} is not in the callback allow-list")
            return
        address = literal_address(host)
        if address is not None:
            if not self.address_allowed(address):
                raise UrlRejected(f"{host} is an internal address ({address}); allow-list it to use it")
            return
        try:
            ascii_host = host.rstrip(".") if host.isascii() else host.rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            ascii_host = ""
        if not _HOST_NAME.fullmatch(ascii_host):
            raise UrlRejected(f"{host[:80]} is not a host name")

    def address_allowed(self, address: IpAddress) -> bool:
        if any(address in network for network in self.allowed_networks if network.version == address.version):
            return True
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if mapped is not None and any(mapped in n for n in self.allowed_networks if n.version == 4):
            return True
        return not is_internal(address) and address not in self.own_addresses() and (
            mapped is None or mapped not in self.own_addresses())

    def own_addresses(self) -> frozenset[IpAddress]:
        now = time.monotonic()
        if now - self._own_read_at > _OWN_REFRESH:
            self._own, self._own_read_at = _own_addresses(), now
        return self._own

    async def resolve(self, host: str, port: int) -> list[IpAddress]:
        """The addresses the client may connect to for `host`, every one checked; `AddressRefused` if any
        address the name resolves to is refused (a name with one internal address is not half trusted)."""
        host = host.lower().rstrip(".") or host
        trusted = bool(self.allowed_hosts) and host in self.allowed_hosts
        if self.allowed_hosts and not trusted:
            raise AddressRefused(f"host {host} is not in the callback allow-list")
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            if not trusted and _is_loopback_name(host):
                raise AddressRefused(f"{host} names this host, which is not allowed")
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                     proto=socket.IPPROTO_TCP)
            except socket.gaierror as exc:
                raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
            addresses = _unique(ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos)
        if not trusted and not all(self.address_allowed(a) for a in addresses):
            raise AddressRefused(f"{host} resolves to an internal address, which is not allowed")
        return addresses

    def check_connected(self, host: str, local: IpAddress, peer: IpAddress) -> None:
        """After connecting: a peer whose address is the local end's is this host, even if the list of own
        addresses missed it (an interface that came up since); allow-listed hosts and networks excepted."""
        host = host.lower().rstrip(".")
        if self.allowed_hosts and host in self.allowed_hosts:
            return
        if local == peer and not any(peer in n for n in self.allowed_networks if n.version == peer.version):
            raise AddressRefused(f"{host} is this host, which is not allowed")


def _unique(addresses: Iterable[IpAddress]) -> list[IpAddress]:
    return list(dict.fromkeys(addresses))
