"""The fast lane's request reader and protocol against arbitrary byte streams split at arbitrary points: every
stream is answered, handed over with exactly the bytes not answered, or refused and closed; nothing raises,
and no complete request is left unanswered. Plus the grammar's corner cases, with literals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asterisk_sendsms.config import HttpConfig
from asterisk_sendsms.edge.http.fast import FastLane
from asterisk_sendsms.wire.http1 import BadRequest, NotOurs, Request, RequestReader, Stage

MAX_BODY = 2048
HTTP = HttpConfig(max_body_bytes=MAX_BODY)
REPLY = b"<reply/>"


def read_all(data: bytes, cuts: list[int]) -> list[Request | str]:
    """What the reader makes of `data` fed in pieces: requests (each finished at once), then how it ends."""
    reader = RequestReader(8190, MAX_BODY)
    out: list[Request | str] = []
    start = 0
    for end in [*sorted(cuts), len(data)]:
        reader.feed(data[start:end])
        start = max(start, end)
        while True:
            try:
                request = reader.next_request()
            except NotOurs:
                return [*out, "not ours"]
            except BadRequest as exc:
                return [*out, f"bad {exc.http_status}"]
            if request is None:
                break
            out.append(request)
            reader.finish()
    return [*out, reader.stage.value]


GET = b"GET /api?command=SendSms&recipient=%2b3620&message=hi HTTP/1.1\r\nHost: x\r\n\r\n"


def test_requests_in_any_pieces_are_read_alike() -> None:
    post = (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 11\r\n\r\ncommand=abc")
    whole = read_all(GET + post + GET[:10], [])
    assert [r.method if isinstance(r, Request) else r for r in whole] == ["GET", "POST", "head"]
    assert isinstance(whole[1], Request) and whole[1].body == b"command=abc"
    for cut in range(1, len(GET + post)):
        assert read_all(GET + post + GET[:10], [cut]) == whole


@pytest.mark.parametrize(("data", "outcome"), [
    (b"GET /api?x HTTP/1.1\nHost: x\n\n", "bad 400"),  # bare LF: refused at once, not held
    (b"GET /api?x HTTP/1.1\r\nHost: x\n", "bad 400"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "bad 400"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "bad 400"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "not ours"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", "bad 400"),
    (b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "not ours"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", "bad 400"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", "bad 400"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa1\r\n\r\n", "not ours"),  # obs-text: aiohttp refuses
    (b"GET /api HTTP/1.1\r\nHost: x\r\nUser-Agent: \xc3\xa9\r\n\r\n", "not ours"),  # obs-text: aiohttp decides
    (b"GET /api HTTP/1.1\r\nHost: a\x1b[2Jb\r\n\r\n", "bad 400"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "bad 400"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "bad 400"),  # TLS to the plain port
    (b"GET /api?" + b"a" * 9000 + b" HTTP/1.1\r\n", "bad 414"),
    (b"GET /api HTTP/1.1\r\nX: " + b"a" * 20000, "bad 431"),
    (b"GET /api HTTP/1.1\r\n" + b"X: y\r\n" * 40 + b"\r\n", "bad 431"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "not ours"),
    (b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "not ours"),
    (b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", "not ours"),
    (b"GET /api HTTP/1.1\r\n\r\n", "not ours"),  # no Host: aiohttp answers 400 in its terms
    (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n", "bad 413"),  # refused before it comes
    (b"GET /api?%ff HTTP/1.1\r\nHost: x\r\n\r\n", "GET"),  # decoded (and refused) by the endpoint
])
def test_grammar_corner_cases(data: bytes, outcome: str) -> None:
    result = read_all(data, [])
    assert (result[0].method if isinstance(result[0], Request) else result[0]) == outcome, result


def test_http10_keep_alive_is_read() -> None:
    [request, _] = read_all(b"GET /api HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", [])
    assert isinstance(request, Request) and request.keep_alive and request.http10
    [request, _] = read_all(b"GET /api HTTP/1.0\r\n\r\n", [])
    assert isinstance(request, Request) and not request.keep_alive


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_any_bytes_end_in_a_known_way(data: bytes, cuts: list[int]) -> None:
    result = read_all(data, cuts)
    assert isinstance(result[-1], str)
    assert result == read_all(data, [])  # the pieces never change the outcome


# ---------------------------------------------------------------- the protocol, without sockets


class StubEndpoint:
    async def answer(self, method: str, read_params: Any, authorization: str, client: str) -> tuple[int, bytes]:
        try:
            await read_params()
        except Exception:
            return 400, b"<refused/>"
        return 200, REPLY


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.handed: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof and not self.closed
        self.written += data

    def is_closing(self) -> bool:
        return self.closed or self.eof

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def hand_off(transport: asyncio.Transport, data: bytes) -> None:
    assert isinstance(transport, Recorder) and transport.handed is None
    transport.handed = data


OURS = st.sampled_from([
    GET,
    b"GET /api?command=x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\ncommand=x",
    b"GET /api?a=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
])
OTHERS = st.sampled_from([
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(OURS, max_size=4), st.one_of(st.none(), OTHERS), st.binary(max_size=80),
       st.lists(st.integers(0, 600), max_size=8))
async def test_the_lane_answers_hands_over_or_closes(ours: list[bytes], other: bytes | None, tail: bytes,
                                                      cuts: list[int]) -> None:
    stream = b"".join(ours) + (other or b"") + tail
    lane = FastLane(StubEndpoint(), hand_off, HTTP)  # type: ignore[arg-type]
    protocol = lane()
    transport = Recorder()
    protocol.connection_made(transport)
    start = 0
    for end in [*sorted(cuts), len(stream)]:
        if start < end and not transport.is_closing() and transport.handed is None:
            protocol.data_received(stream[start:end])
            start = end
        for _ in range(20):
            await asyncio.sleep(0)
    answers = transport.written.count(b"HTTP/1.1 ")
    if transport.handed is not None:
        # Exactly the bytes after the requests answered, which are the lane's, in order.
        assert answers == len(ours)
        assert transport.handed == stream[sum(len(r) for r in ours):start]  # (none is sent after a hand-over)
    elif transport.is_closing():
        # An answer with Connection: close (a refused request, or HTTP/1.0 without keep-alive).
        assert b"Connection: close\r\n" in transport.written or b"Connection: close" in stream
    else:
        # Still open: every request it was sent is answered, and what is left is an unfinished request.
        assert answers == len(ours) and other is None
        assert b"\r\n\r\n" not in tail or protocol._reader.stage is Stage.BODY  # type: ignore[attr-defined]
    protocol.connection_lost(None)
