"""CPU cost of the HTTP fast lane per request, without sockets: the lane's protocol fed requests as a client
sends them (one per read, keep-alive; pipelined in batches; dribbled in small reads), its endpoint a stub that
answers at once, so what is measured is parsing, framing and the answer's bytes.

    .venv/bin/python bench/http_lane_bench.py [--requests 20000] [--rounds 5]

With --httptools (installed by hand: it is no dependency) the same request is also parsed by llhttp
(httptools' HttpRequestParser, collecting URL and headers in callbacks as uvicorn does), for comparison with the
lane's own grammar.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import time
from typing import Any

from asterisk_sendsms.config import HttpConfig
from asterisk_sendsms.edge.http.fast import FastLane

REQUEST = (b"GET /api?command=SendSms&username=HTTP_User_1&password=qwe123&sender=%2b3612345678"
           b"&recipient=%2b36201234567&message=Your+payment+of+42+EUR+was+received HTTP/1.1\r\n"
           b"Host: 127.0.0.1:9509\r\nUser-Agent: Python/3.11 aiohttp/3.9\r\nAccept: */*\r\n"
           b"Accept-Encoding: gzip, deflate\r\n\r\n")
# A request line near the limit (max_body_bytes, 64 KiB here), as an attacker dribbles it.
BIG_REQUEST = REQUEST.replace(b"&message=", b"&pad=" + b"x" * 60_000 + b"&message=")
REPLY = (b'<?xml version="1.0"?>\n<OzApi_CommandResult_SendSms><Code>200</Code><Message>Command successfully '
         b"executed</Message><SmsId>0123456789abcdef0123456789abcdef</SmsId></OzApi_CommandResult_SendSms>")


class StubEndpoint:
    async def answer(self, method: str, read_params: Any, authorization: str, client: str) -> tuple[int, bytes]:
        await read_params()
        return 200, REPLY


class NullTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def refuse(transport: asyncio.Transport, data: bytes) -> None:
    raise AssertionError(f"handed over: {data[:80]!r}")


async def lane_round(requests: int, batch: int, piece: int, request: bytes = REQUEST) -> float:
    """µs of CPU per request: `batch` requests per burst, each burst sent in reads of `piece` bytes."""
    if "http" in inspect.signature(FastLane).parameters:
        lane = FastLane(StubEndpoint(), refuse, HttpConfig(max_body_bytes=65536))  # type: ignore[arg-type]
    else:  # the lane before [http] timeouts, for a comparison on an older checkout
        lane = FastLane(StubEndpoint(), refuse, 65536, 65536)  # type: ignore[arg-type,call-arg]
    protocol = lane()
    transport = NullTransport()
    protocol.connection_made(transport)
    burst = request * batch
    reads = [burst[i:i + piece] for i in range(0, len(burst), piece)]
    started = time.process_time()
    for _ in range(requests // batch):
        for data in reads:
            protocol.data_received(data)
        while transport.written < batch:  # noqa: ASYNC110  # the lane's own turns are what is measured
            await asyncio.sleep(0)
        transport.written = 0
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


def httptools_round(requests: int) -> float:
    import httptools  # type: ignore[import-not-found,import-untyped,unused-ignore]  # not a dependency

    class Collect:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []
            self.complete = 0

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_message_complete(self) -> None:
            self.complete += 1

    collect = Collect()
    parser = httptools.HttpRequestParser(collect)
    started = time.process_time()
    for _ in range(requests):
        collect.url, collect.headers = b"", []
        parser.feed_data(REQUEST)
        httptools.parse_url(collect.url)
        parser.get_method()
        parser.should_keep_alive()
    elapsed = time.process_time() - started
    assert collect.complete == requests
    return elapsed / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--httptools", action="store_true")
    args = parser.parse_args()
    shapes = [("one request per read", 1, len(REQUEST)), ("16 pipelined per read", 16, 16 * len(REQUEST)),
              ("dribbled, 16-byte reads", 1, 16)]
    for label, batch, piece in shapes:
        count = args.requests // (8 if piece < 64 else 1)
        results = [await lane_round(count, batch, piece) for _ in range(args.rounds)]
        print(f"lane, {label:<26} median {statistics.median(results):6.2f} µs/request (min {min(results):.2f})")
    results = [await lane_round(20, 1, 128, BIG_REQUEST) for _ in range(args.rounds)]
    print(f"lane, 60 kB GET, 128-byte reads median {statistics.median(results):6.0f} µs/request "
          f"(min {min(results):.0f})")
    if args.httptools:
        results = [httptools_round(args.requests) for _ in range(args.rounds)]
        print(f"httptools parse only, one request   median {statistics.median(results):6.2f} µs/request "
              f"(min {min(results):.2f})")


if __name__ == "__main__":
    import uvloop
    uvloop.run(main())
