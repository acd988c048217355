"""The URL policy: internal addresses in every spelling refused at accept (Ozeki 302 naming the parameter),
names checked at connect on every address they resolve to, the allow-lists, and the client connecting only to
the address checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asterisk_sendsms.app.notifier import validate_callback_url
from asterisk_sendsms.app.urlpolicy import AddressRefused, UrlPolicy, UrlRejected, is_internal, literal_address
from asterisk_sendsms.config import CallbackConfig
from asterisk_sendsms.core.errors import InvalidParameter
from asterisk_sendsms.edge.http.client import HttpClient, HttpRefused
from asterisk_sendsms.wire.ozeki import ozeki_code

INTERNAL_HOSTS = ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]",
                  "[::ffff:7f00:1]", "2130706433", "0x7f000001", "0x7F.1", "0177.0.0.1", "0.0.0.0", "0", "127.1",
                  "10.0.0.1", "172.16.3.4", "192.168.1.1", "169.254.169.254", "[fe80::1]", "[fe80::1%25eth0]",
                  "[fd00::2]", "224.0.0.1", "[ff02::1]", "100.64.0.1", "240.0.0.1", "255.255.255.255", "[::]",
                  "192.0.2.2", "[64:ff9b::a00:1]", "[2002:7f00:1::]", "127.0.0.1.", "017700000001"]


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
def test_internal_hosts_are_refused_at_accept_in_every_spelling(host: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        validate_callback_url(f"http://{host}:8080/dlr", CallbackConfig())
    assert ozeki_code(caught.value) == 302
    assert str(caught.value).startswith("Missing or invalid parameter 'DeliveryReportURL' for command 'SendSms'")
    with pytest.raises(InvalidParameter, match="parameter 'Url' for command 'Call'"):
        validate_callback_url(f"https://{host}/script", CallbackConfig(), "Url", "Call")


@pytest.mark.parametrize("url", ["http://example.com/dlr", "https://8.8.8.8/x?a=1", "http://[2001:4860::8888]:81/",
                                 "http://bücher.example/", "  http://example.com/  "])
def test_public_urls_are_accepted(url: str) -> None:
    assert validate_callback_url(url, CallbackConfig()) == url.strip()


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///x", "http://exa mple.com/", "http://example.com/\r\nX:",
                                 "http://example.com:99999/", "http://a..b/", "javascript:alert(1)",
                                 "http://example.com/" + "a" * 3000])
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidParameter):
        validate_callback_url(url, CallbackConfig())


def test_allow_lists() -> None:
    networks = CallbackConfig(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),
                                                ipaddress.ip_network("10.1.0.0/16")))
    assert validate_callback_url("http://127.0.0.1:9/x", networks)
    assert validate_callback_url("http://[::ffff:127.0.0.1]:9/x", networks)  # the same address, mapped
    assert validate_callback_url("http://10.1.2.3/x", networks)
    with pytest.raises(InvalidParameter):
        validate_callback_url("http://10.2.0.1/x", networks)
    # A name is checked where it leads, when the client connects.
    assert validate_callback_url("http://localhost/x", CallbackConfig())
    hosts = CallbackConfig(allowed_hosts=("localhost", "hooks.example"))
    assert validate_callback_url("http://LOCALHOST:9/x", hosts)  # named, so trusted
    assert validate_callback_url("http://hooks.example/x", hosts)
    with pytest.raises(InvalidParameter, match="not in the callback allow-list"):
        validate_callback_url("http://example.com/x", hosts)


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["dotted", "decimal", "hex", "octal", "short"]))
def test_every_spelling_reads_as_the_resolver_reads_it(value: int, form: str) -> None:
    address = ipaddress.IPv4Address(value)
    a, b, c, d = address.packed
    text = {"dotted": str(address), "decimal": str(value), "hex": hex(value), "octal": "0" + oct(value)[2:],
            "short": f"{a}.{(b << 16) | (c << 8) | d}"}[form]
    assert literal_address(text) == address
    internal = is_internal(address)
    if internal:
        with pytest.raises(UrlRejected):
            UrlPolicy().check_url(f"http://{text}/")
    elif address not in UrlPolicy().own_addresses():
        assert UrlPolicy().check_url(f"http://{text}/")


async def test_a_name_is_checked_on_every_address_at_connect() -> None:
    policy = UrlPolicy()
    for name in ("localhost", "LocalHost.", "foo.localhost"):
        with pytest.raises(AddressRefused, match="names this host"):
            await policy.resolve(name, 80)
    with pytest.raises(AddressRefused, match="resolves to an internal address"):
        await policy.resolve(socket.gethostname(), 80)  # /etc/hosts maps it to a loopback or own address
    with pytest.raises(AddressRefused, match="resolves to an internal address"):
        await policy.resolve("127.0.0.1", 80)
    # Trusted by name, so its (loopback) addresses may be used.
    addresses = await UrlPolicy(allowed_hosts=("localhost",)).resolve("localhost", 80)
    assert addresses and all(a.is_loopback for a in addresses)


async def test_the_client_sends_nothing_to_a_refused_address() -> None:
    hits: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(await reader.read(100))
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for url in (f"http://localhost:{port}/", f"http://127.0.0.1:{port}/", f"http://0x7f000001:{port}/",
                    f"http://127.1:{port}/", f"http://[::ffff:127.0.0.1]:{port}/"):
            with pytest.raises(HttpRefused):
                await HttpClient(UrlPolicy(), 5).post_form(url, b"a=1")
        # A connection of ours after them: the server has taken every earlier one once it has this one.
        _, probe = await asyncio.open_connection("127.0.0.1", port)
        probe.write(b"probe")
        await probe.drain()
        probe.close()
        deadline = time.monotonic() + 10
        while not hits:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert hits == [b"probe"]
    finally:
        server.close()


def test_the_peer_being_this_host_is_refused_after_connect() -> None:
    policy = UrlPolicy()
    here = ipaddress.ip_address("203.0.113.9")
    with pytest.raises(AddressRefused, match="is this host"):
        policy.check_connected("mirror.example", here, here)
    policy.check_connected("other.example", here, ipaddress.ip_address("198.51.100.1"))
    UrlPolicy(allowed_hosts=("mirror.example",)).check_connected("mirror.example", here, here)


def _resolver_reads(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


@settings(max_examples=300)
@given(st.from_regex(r"(?:0[xX][0-9a-fA-F]{0,9}|[0-9]{1,11})(?:\.(?:0[xX][0-9a-fA-F]{0,9}|[0-9]{1,11})){0,3}",
                     fullmatch=True))
def test_the_pure_reading_of_ipv4_spellings_is_the_resolvers(text: str) -> None:
    # core/urlrules reads the legacy spellings itself (the core opens no socket): exactly as inet_aton does.
    assert literal_address(text) == _resolver_reads(text)


@pytest.mark.parametrize("text", ["0x", "0x.1", "08", "1.2.3.256", "1.256.3", "4294967296", "0x100000000", "00",
                                  "0X7F.1", "1.2.65535", "1.2.65536", "09.1", "0.0.0.0"])
def test_legacy_spellings_at_the_edges(text: str) -> None:
    assert literal_address(text) == _resolver_reads(text)
