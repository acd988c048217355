"""The URL policy's pure rules: which URLs, hosts and addresses a user may name (`check_url`, `check_host`,
`address_allowed`), an address in every spelling a resolver reads (`literal_address`), and which networks are
internal (`is_internal`). No I/O: this host's own addresses come in from the caller (`app/urlpolicy.py` reads
them, and resolves names at connect)."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["MAX_URL_LENGTH", "IpAddress", "Network", "UrlRejected", "address_allowed", "check_host", "check_url",
           "is_internal", "literal_address", "url_host"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
OwnAddresses = Callable[[], frozenset[IpAddress]]

MAX_URL_LENGTH = 2048
# What glibc's inet_aton reads as an IPv4 address (and so getaddrinfo does): 1 to 4 parts, each decimal,
# octal (leading 0) or hexadecimal (0x); `127.1` and `2130706433` are 127.0.0.1.
_IPV4_LEGACY = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRejected(ValueError):
    """A URL the policy does not accept; the text says why in the user's terms."""


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


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """glibc's inet_aton on a host `_IPV4_LEGACY` matched: each part read as strtoul reads it in base 0, every
    part but the last one byte, the last one the bytes left; None where inet_aton fails."""
    values: list[int] = []
    for part in host.split("."):
        if part[:2] in ("0x", "0X"):
            digits, base = part[2:], 16
        elif part.startswith("0"):
            digits, base = part, 8
        else:
            digits, base = part, 10
        if not digits:
            return None  # "0x" alone: strtoul reads the 0 and stops at the x
        try:
            values.append(int(digits, base))
        except ValueError:
            return None  # an 8 or 9 in an octal part
    *leading, last = values
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def literal_address(host: str) -> IpAddress | None:
    """The address a URL's host names literally, in any spelling a resolver accepts; None for a name."""
    host = host.rstrip(".")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return None
    if _IPV4_LEGACY.fullmatch(host):  # dotted quads too: inet_aton reads them as ip_address would
        return _inet_aton(host)
    return None


def url_host(url: str) -> str:
    """The host a URL's requests go to, as fairness between receivers counts it (never empty)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return (host or "?").rstrip(".")[:255] or "?"


def _none() -> frozenset[IpAddress]:
    return frozenset()


def check_url(url: str, allowed_hosts: tuple[str, ...] = (), allowed_networks: tuple[Network, ...] = (),
              own: OwnAddresses = _none) -> str:
    """The URL stripped of surrounding blanks, if it may be accepted; else `UrlRejected`. Literal addresses are
    checked here; names are checked when the client connects."""
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
    check_host(host, allowed_hosts, allowed_networks, own)
    return url


def check_host(host: str, allowed_hosts: tuple[str, ...] = (), allowed_networks: tuple[Network, ...] = (),
               own: OwnAddresses = _none) -> None:
    """Refuses (`UrlRejected`) a host outside `allowed_hosts`, or one that names an internal address
    literally; a name (`localhost` too) is checked where it resolves to, at connect."""
    host = host.lower()
    if allowed_hosts:
        if host.rstrip(".") not in allowed_hosts:
            raise UrlRejected(f"host {host} is not in the callback allow-list")
        return
    address = literal_address(host)
    if address is not None:
        if not address_allowed(address, allowed_networks, own):
            raise UrlRejected(f"{host} is an internal address ({address}); allow-list it to use it")
        return
    try:
        ascii_host = host.rstrip(".") if host.isascii() else host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    if not _HOST_NAME.fullmatch(ascii_host):
        raise UrlRejected(f"{host[:80]} is not a host name")


def address_allowed(address: IpAddress, allowed_networks: tuple[Network, ...] = (),
                    own: OwnAddresses = _none) -> bool:
    """Whether the client may connect to `address`: in `allowed_networks` (an IPv4-mapped IPv6 address as its
    IPv4 one), or neither internal nor one of this host's own addresses."""
    if any(address in network for network in allowed_networks if network.version == address.version):
        return True
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None and any(mapped in n for n in allowed_networks if n.version == 4):
        return True
    return not is_internal(address) and address not in own() and (mapped is None or mapped not in own())
