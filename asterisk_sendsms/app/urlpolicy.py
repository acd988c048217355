"""The policy for every URL a user supplies (DeliveryReportURL, the incoming-SMS URL, OzML fetches of every kind,
the Call command's Url): which URLs are accepted, and which addresses the HTTP client may connect to.

Internal targets (loopback, private, link-local, multicast, unspecified, reserved, shared and this host's own
addresses) are refused in every spelling an address can take (`127.1`, `2130706433`, `0x7f000001`,
`0177.0.0.1`, `[::ffff:127.0.0.1]`, `localhost`), unless `allowed_hosts` names the host or
`allowed_networks` holds the address. A literal address is refused when the URL is accepted; a host name is
resolved when the client connects, every address it resolves to is checked, and the client connects to the
address checked (so a name cannot resolve to a public address for the check and an internal one for the
connection).

The rules are pure, in `core/urlrules.py` (the configuration checks [incoming] url with them at load); this
module adds this host's own addresses, resolves names and checks the connected peer."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from asterisk_sendsms.core.urlrules import (
    MAX_URL_LENGTH,
    IpAddress,
    Network,
    UrlRejected,
    address_allowed,
    check_url,
    is_internal,
    literal_address,
    url_host,
)

__all__ = ["MAX_URL_LENGTH", "AddressRefused", "IpAddress", "UrlPolicy", "UrlRejected", "is_internal",
           "literal_address", "url_host"]

_OWN_REFRESH = 60.0  # this host's addresses are read again after this long (DHCP, interfaces coming up)


class AddressRefused(Exception):
    """A host resolves to an address the policy refuses. The text names the host, never whether the address
    would have answered."""


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
        """`urlrules.check_url` with this policy's lists and this host's addresses."""
        return check_url(url, self.allowed_hosts, self.allowed_networks, self.own_addresses)

    def address_allowed(self, address: IpAddress) -> bool:
        return address_allowed(address, self.allowed_networks, self.own_addresses)

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
