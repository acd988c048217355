"""The API's TCP socket against hostile clients, on the daemon as users run it (alone, and with an HTTP front
worker): dribbled, huge and unfinished heads, trickled bodies, bare LF, HTTP/1.0 keep-alive, pipelining, clients
leaving mid-body, broken Content-Length and chunk sizes, control characters and secrets in parameters, hostile
traffic classes and validity periods, bytes that are not UTF-8. After each case the daemon is up and serves a
normal request; at the end every accepted message is delivered, the log has no traceback, every log line is one
line, and no password or message text is in it."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from .conftest import Daemon, basic_auth, gateway_config, start_daemon, wait_final
from .waits import unread_by, wait_until

TIMEOUTS = "head_timeout = 1\nbody_timeout = 1\nidle_timeout = 60\n"
PASSWORD = "Pw-n0t-in-logs"  # alice's password in this module's daemons
SECRET_TEXT = "SecretMessageText"  # a message text that must never reach the log
SEND = (f"command=SendSms&Username=alice&Password={PASSWORD}&Recipient=%2b36201234567&Message=hello").encode()
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
# What the daemon prints at start-up, before logging starts.
BANNER = re.compile(r"asterisk-sendsms listening on |  (store|transports|control socket|FastAGI|ARI|demo user): ")


def start(daemon_factory: list[Daemon], tmp_path: Path, workers: int) -> Daemon:
    from asterisk_sendsms.core.passwords import hash_password
    config = gateway_config(tmp_path / "hostile.toml", "simulator?receipt_delay=0.05",
                            f"[http]\n{TIMEOUTS}workers = {workers}\n")
    # alice's password is this module's own, so that the log can be searched for it.
    config.write_text(config.read_text().replace(
        next(line for line in config.read_text().splitlines() if line.startswith("password_hash")),
        f'password_hash = "{hash_password(PASSWORD)}"'))
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))


class Client:
    """A raw TCP connection to the daemon, for bytes no HTTP client library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, daemon: Daemon) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port, limit=1 << 20)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, data: bytes) -> bool:
        """Whether the bytes went out (a server that refused the request may have closed already)."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            return False
        return True

    async def response(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("content-length", "0"))), timeout)
        return int(lines[0].split()[1]), headers, body

    async def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection (reading past anything it still sends)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def get(query: bytes, version: bytes = b"1.1", headers: bytes = b"Host: x\r\n") -> bytes:
    return b"GET /api?" + query + b" HTTP/" + version + b"\r\n" + headers + b"\r\n"


def form_post(body: bytes, length: int | None = None) -> bytes:
    return (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body) if length is None else length, body))


def rss_kib(daemon: Daemon) -> int:
    """The resident memory of the daemon and its front workers."""
    assert daemon.process is not None
    pids = [daemon.process.pid, *map(int, Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children")
                                     .read_text().split())]
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


class Hostile:
    """The cases, against one daemon; `accepted` collects the SmsIds to check for delivery at the end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.accepted: list[str] = []

    async def still_serving(self) -> None:
        assert self.daemon.process is not None and self.daemon.process.poll() is None, self.daemon.output()
        client = await Client.connect(self.daemon)
        await client.send(get(SEND))
        status, _, body = await client.response()
        client.close()
        assert status == 200, body
        self.accepted.append(re.search(rb"<SmsId>([^<]+)</SmsId>", body).group(1).decode())  # type: ignore[union-attr]

    async def one(self, data: bytes, pieces: int = 0) -> tuple[int, dict[str, str], bytes]:
        """The answer to `data` (sent in pieces of `pieces` bytes, if given) on a connection of its own."""
        client = await Client.connect(self.daemon)
        step = pieces or len(data)
        for start in range(0, len(data), step):
            if not await client.send(data[start:start + step]):
                break
        try:
            return await client.response()
        finally:
            client.close()

    # ------------------------------------------------------------ the cases

    async def dribbled_head(self) -> None:
        client = await Client.connect(self.daemon)
        request = get(SEND)
        for start in range(0, len(request), 3):  # one segment each (TCP_NODELAY), well within head_timeout
            await client.send(request[start:start + 3])
        status, _, body = await client.response()
        assert status == 200 and b"<SmsId>" in body
        self.accepted.append(re.search(rb"<SmsId>([^<]+)</SmsId>", body).group(1).decode())  # type: ignore[union-attr]
        # A head that is still not complete after head_timeout: 408, closed.
        await client.send(b"GET /api?command=SendSms")
        status, headers, _ = await client.response()
        assert status == 408 and headers["connection"] == "close"
        assert await client.closed()
        client.close()

    async def silent_connections(self) -> None:
        # Connected, and not a byte: closed after head_timeout (idle_timeout, 60 s here, is for keep-alive).
        clients = [await Client.connect(self.daemon) for _ in range(20)]
        for client in clients:
            assert await client.closed(timeout=10)
            client.close()

    async def huge_heads(self) -> None:
        status, _, _ = await self.one(b"GET /api?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 414
        status, _, _ = await self.one(b"GET /api HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 9_000 + b"\r\n\r\n")
        assert status == 431
        status, _, _ = await self.one(b"GET /api HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 40 + b"\r\n")
        assert status == 431
        # 800 kB of head: refused at the limit, whatever is still coming.
        status, _, _ = await self.one(b"GET /api?" + b"a" * 800_000, pieces=65536)
        assert status == 414

    async def many_unfinished_heads(self) -> None:
        before = rss_kib(self.daemon)
        clients = [await Client.connect(self.daemon) for _ in range(200)]
        for client in clients:
            await client.send(b"GET /api?" + b"a" * 60_000)  # under the request line limit, and never finished
        await wait_until(lambda: unread_by(self.daemon.port) == 0)  # they are read (the daemon says nothing yet)
        grown = rss_kib(self.daemon) - before
        # 200 x 60 kB is 12 MB of buffers; before the limits 200 heads of 800 kB took 157 MB.
        assert grown < 48 * 1024, f"RSS grew by {grown} KiB"
        answers = await asyncio.gather(*(client.response() for client in clients))
        assert {status for status, _, _ in answers} == {408}
        for client in clients:
            assert await client.closed()
            client.close()

    async def trickled_bodies(self) -> None:
        for request in (form_post(SEND, length=len(SEND) + 100),
                        b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 200\r\n\r\n{"):  # the JSON API: aiohttp's, reading under body_timeout
            client = await Client.connect(self.daemon)
            await client.send(request)

            async def trickle(client: Client = client) -> None:
                while await client.send(b" "):
                    await asyncio.sleep(0.2)

            trickling = asyncio.ensure_future(trickle())
            status, _, _ = await client.response()
            assert status == 408
            assert await client.closed()
            trickling.cancel()
            client.close()

    async def bare_lf(self) -> None:
        status, _, body = await self.one(b"GET /api?" + SEND + b" HTTP/1.1\nHost: x\n\n")
        assert status == 400 and b"bare LF" in body  # at once: after head_timeout it would be 408
        status, _, _ = await self.one(b"GET /api?" + SEND + b" HTTP/1.1\r\nHost: x\n\r\n")
        assert status == 400

    async def http10_keep_alive(self) -> None:
        client = await Client.connect(self.daemon)
        for request in (get(SEND, b"1.0", b"Connection: Keep-Alive\r\n"),
                        get(SEND, b"1.0", b"Connection: keep-alive\r\n"),
                        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"):
            await client.send(request)
            status, headers, _ = await client.response()
            assert status == 200 and headers.get("connection", "").lower() == "keep-alive", headers
        await client.send(get(SEND, b"1.0"))  # without keep-alive: answered, then closed (HTTP/1.0's default)
        status, headers, _ = await client.response()
        assert status == 200 and headers.get("connection", "close").lower() == "close"
        assert await client.closed()
        client.close()

    async def pipelined(self) -> None:
        client = await Client.connect(self.daemon)
        await client.send(get(SEND) * 3 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + form_post(SEND) + get(SEND))
        answers = [await client.response() for _ in range(6)]
        assert [status for status, _, _ in answers] == [200] * 6
        assert answers[3][1]["content-type"].startswith("application/json")
        for _, _, body in answers[:3] + answers[4:]:
            self.accepted.append(re.search(rb"<SmsId>([^<]+)</SmsId>", body).group(1).decode())  # type: ignore[union-attr]
        client.close()

    async def leave_mid_body(self) -> None:
        for request in (form_post(SEND, length=1000),
                        b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"recipient\"",
                        b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: 1000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"command\"\r\n"):
            clients = [await Client.connect(self.daemon) for _ in range(30)]
            for client in clients:
                await client.send(request)
            await asyncio.sleep(0.1)
            for client in clients:
                client.writer.transport.abort()  # a reset, as a client that crashes

    async def broken_lengths(self) -> None:
        for length, expected in ((b"-1", 400), (b"99999999999999999999999", 400), (b"1x", 400),
                                 (b"10\r\nContent-Length: 12", 400), (b"100000", 413)):
            status, _, _ = await self.one(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                                          b"x-www-form-urlencoded\r\nContent-Length: " + length + b"\r\n\r\n" + SEND)
            assert status == expected, (length, status)

    async def broken_chunks(self) -> None:
        for chunks in (b"-5\r\nabc\r\n0\r\n\r\n", b"zz\r\nabc\r\n0\r\n\r\n",
                       b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"):
            status, _, _ = await self.one(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                                          b"x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
            assert status == 400, chunks

    async def escapes_and_secrets(self) -> None:
        secrets = f"&Password={PASSWORD}&Message={SECRET_TEXT}".encode()
        forged = b"%0d%0a2026-01-01 00:00:00,000 ERROR forged: line%1b[31mred%e2%80%a8"
        cases = [
            get(b"command=SendSms" + forged + secrets),  # an unknown command
            get(b"command=Nope" + forged + secrets),
            get(b"command=SendSms&Username=alice&x" + forged + b"=1&x" + forged + b"=2" + secrets),  # a name twice
            get(b"command=SendSms&Username=alice&Recipient=" + forged + secrets),  # a bad recipient
            get(b"command=SendSms&Username=alice&Password=wrong&Message=" + SECRET_TEXT.encode()
                + b"&Recipient=%2b36201234567"),  # a failed login
            b"GET /api?command=SendSms" + secrets + b" HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",  # refused
            b"GET /api?command=SendSms" + secrets + b" HTTP/1.1\r\nHost: x\r\n\x1b[2J: x\r\n\r\n",
        ]
        for request in cases:
            status, _, _ = await self.one(request)
            assert 400 <= status < 500, request
        # A malformed request on a connection aiohttp serves (after a request handed over): aiohttp's parser
        # refuses it, and its log line must not quote the request.
        client = await Client.connect(self.daemon)
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response())[0] == 200
        await client.send(b"GET /api/messages?Password=" + PASSWORD.encode() + b"&m=" + SECRET_TEXT.encode()
                          + b" HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
        assert (await client.response())[0] == 400
        client.close()

    async def traffic_options(self) -> None:
        """Priority and ValidityPeriod as nobody should send them: refused with 302 naming the parameter, nothing
        accepted; in JSON likewise with 400."""
        forged = b"%0d%0a2026-01-01%2000:00:00,000%20ERROR%20forged:%20line%1b[31m"
        for option in (b"Priority=%00", b"Priority=urgent" + forged, b"Priority=" + b"x" * 5000,
                       b"Priority=%c4%b0nteractive", b"ValidityPeriod=" + b"9" * 5000,
                       b"ValidityPeriod=P99999999999999999999D", b"ValidityPeriod=1e309", b"ValidityPeriod=nan",
                       b"ValidityPeriod=%00", b"ValidityPeriod=PT-5M", b"ValidityPeriod=%ef%bc%91%ef%bc%92",
                       b"ValidityPeriod=PT5M" + forged):
            status, _, body = await self.one(get(SEND + b"&" + option))
            assert status == 400 and b"<Code>302</Code>" in body, (option, body)
            name = option.split(b"=")[0]
            assert b"'" + name + b"'" in body, body
        async with aiohttp.ClientSession() as session:
            for field, value in (("priority", "\u0000"), ("priority", "x" * 5000), ("validity_period", "1e999"),
                                 ("validity_period", "-1"), ("validity_period", "P" + "9" * 40 + "D")):
                async with session.post(f"{self.daemon.base}/api/messages", headers=basic_auth("alice", PASSWORD),
                                        json={"recipient": "+36201234567", "text": "x", field: value}) as response:
                    assert response.status == 400 and f"'{field}'" in (await response.json())["error"], value

    async def not_utf8(self) -> None:
        status, _, body = await self.one(get(b"command=SendSms&Username=alice&Password=" + PASSWORD.encode()
                                             + b"&Recipient=%2b36201234567&Message=%ff%fe"))
        assert status == 400 and b"<Code>300</Code>" in body
        status, _, _ = await self.one(b"GET /api?command=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 400
        status, _, _ = await self.one(get(SEND, headers=b"Host: x\r\nUser-Agent: \xff\xfe\r\n"))
        assert status == 200  # obs-text in a field aiohttp accepts: handed over and served
        status, _, _ = await self.one(form_post(b"command=SendSms&Message=\xff\xfe"))
        assert status == 400

    async def follower_leaves(self) -> None:
        client = await Client.connect(self.daemon)
        await client.send(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Basic b3BzOnB3\r\n\r\n")  # ops:pw
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        client.writer.transport.abort()
        await self.still_serving()  # an event for the follower that left: its stream ends without a traceback
        await self.still_serving()

    async def health_without_login(self) -> None:
        async with aiohttp.ClientSession() as session, session.get(f"{self.daemon.base}/healthz") as response:
            health = await response.json()
        assert response.status == 200 and set(health) == {"status", "store", "transports"}
        assert health["store"] == {"ready": True} and all(set(t) == {"name", "ready"} for t in health["transports"])


CASES: list[Callable[[Hostile], Awaitable[None]]] = [
    Hostile.dribbled_head, Hostile.silent_connections, Hostile.huge_heads, Hostile.many_unfinished_heads,
    Hostile.trickled_bodies, Hostile.bare_lf, Hostile.http10_keep_alive, Hostile.pipelined, Hostile.leave_mid_body,
    Hostile.broken_lengths, Hostile.broken_chunks, Hostile.escapes_and_secrets, Hostile.traffic_options,
    Hostile.not_utf8,
    Hostile.follower_leaves, Hostile.health_without_login,
]


@pytest.mark.parametrize("workers", [0, 1])
async def test_hostile_clients_do_not_hurt_the_daemon(daemon_factory: list[Daemon], tmp_path: Path,
                                                      workers: int) -> None:
    daemon = start(daemon_factory, tmp_path, workers)
    hostile = Hostile(daemon)
    await hostile.still_serving()
    for case in CASES:
        await case(hostile)
        await hostile.still_serving()
    async with aiohttp.ClientSession() as session:
        for sms_id in hostile.accepted:
            data = await wait_final(session, daemon, sms_id, 30, user="alice", password=PASSWORD)
            assert data["state"] == "delivered", data
    assert daemon.stop() == 0
    log = daemon.output()
    assert "Traceback" not in log and " ERROR " not in log, log[-5000:]
    assert PASSWORD not in log and SECRET_TEXT not in log
    assert "\x1b" not in log and "\u2028" not in log
    for line in log.splitlines():
        assert LOG_LINE.match(line) or BANNER.match(line), f"not a log line of its own: {line!r}"

