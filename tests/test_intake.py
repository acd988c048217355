"""The link between the daemon and its HTTP front workers, both ends in one process over real socketpairs."""

from __future__ import annotations

import asyncio
import marshal
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.errors import (
    NotCancellable,
    QuotaExceeded,
    RecipientOptedOut,
    RequestError,
    ServiceUnavailable,
    SmsGatewayError,
    rebuild,
)
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.edge.http.statuses import http_status
from asterisk_sendsms.runtime.children import read_frame
from asterisk_sendsms.runtime.intake import ConnectionInbox, DaemonLink, WorkerLink, send_connection
from asterisk_sendsms.wire.ipc.framing import FrameReader, frame, pack
from asterisk_sendsms.wire.ipc.front import TO_WORKER, FailedLogin
from asterisk_sendsms.wire.ozeki import ozeki_code

from .waits import wait_until

values = st.recursive(st.none() | st.integers() | st.floats(allow_nan=False) | st.text(),
                      lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=12)


@given(st.lists(values, max_size=6), st.lists(st.integers(1, 40), max_size=20))
def test_frames_come_out_whole_however_the_stream_is_cut(sent: list[object], cuts: list[int]) -> None:
    stream = b"".join(frame(marshal.dumps(value)) for value in sent)
    reader = FrameReader()
    received: list[bytes] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        received.extend(reader.feed(stream[position:position + cut]))
        position += cut
    received.extend(reader.feed(stream[position:]))
    assert [marshal.loads(body) for body in received] == sent


def test_a_stream_out_of_step_is_refused() -> None:
    with pytest.raises(ValueError, match="out of step"):
        FrameReader().feed(b"\xff\xff\xff\xff" + b"x" * 8)


def message(number: int) -> NewMessage:
    return NewMessage(f"id-{number}", "alice", None, f"+3620{number:07d}", "héllo €", Coding.UCS2, 1, None,
                      1.5, 2.5)


class Link:
    def __init__(self) -> None:
        self.committed: list[list[NewMessage]] = []
        self.refuse = ""
        self.over_quota: set[str] = set()
        self.opted_out: set[str] = set()
        self.failures: list[tuple[str, float]] = []
        self.daemon: DaemonLink
        self.worker: WorkerLink

    async def commit(self, messages: list[NewMessage]) -> list[RequestError | None]:
        await asyncio.sleep(0)
        if self.refuse:
            raise ServiceUnavailable(self.refuse)
        self.committed.append([m for m in messages if m.recipient not in self.opted_out
                               and m.sms_id not in self.over_quota])
        return [RecipientOptedOut(m.recipient) if m.recipient in self.opted_out
                else QuotaExceeded(f"{m.sms_id} is over quota") if m.sms_id in self.over_quota else None
                for m in messages]


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    result = Link()
    _, result.daemon = await loop.create_unix_connection(lambda: DaemonLink(result.commit), sock=ours)
    _, result.worker = await loop.create_unix_connection(
        lambda: WorkerLink(lambda key, at: result.failures.append((key, at))), sock=theirs)
    yield result
    result.daemon.close()


async def test_messages_of_one_turn_are_committed_together_and_each_sender_learns_it(link: Link) -> None:
    await asyncio.gather(*(link.worker.accept(message(i)) for i in range(5)))
    await link.worker.accept(message(5))
    assert [[m.sms_id for m in batch] for batch in link.committed] == [[f"id-{i}" for i in range(5)], ["id-5"]]
    assert link.committed[0][0] == message(0)


async def test_a_refused_batch_fails_each_of_its_senders(link: Link) -> None:
    link.refuse = "message store error (x): disk full"
    results = await asyncio.gather(*(link.worker.accept(message(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ServiceUnavailable) and "disk full" in r.message for r in results)


async def test_a_message_refused_on_its_own_fails_its_sender_only_with_its_code(link: Link) -> None:
    link.opted_out, link.over_quota = {message(1).recipient}, {"id-3"}
    results = await asyncio.gather(*(link.worker.accept(message(i)) for i in range(4)), return_exceptions=True)
    assert results[0] is None and results[2] is None
    for refused, text in ((results[1], f"recipient opted out: {message(1).recipient}"),
                          (results[3], "id-3 is over quota")):
        assert isinstance(refused, RequestError) and (ozeki_code(refused), http_status(refused)) == (306, 403)
        assert refused.message == text
    assert [m.sms_id for m in link.committed[0]] == ["id-0", "id-2"]


async def test_failed_logins_reach_the_worker(link: Link) -> None:
    link.daemon.send(FailedLogin("address 192.0.2.1", 12.5))
    await wait_until(lambda: bool(link.failures))
    assert link.failures == [("address 192.0.2.1", 12.5)]


async def test_senders_waiting_when_the_daemon_goes_are_told(link: Link) -> None:
    link.committed.clear()
    reached = asyncio.Event()

    async def never(messages: list[NewMessage]) -> list[RequestError | None]:
        reached.set()
        await asyncio.Event().wait()
        return []
    link.daemon._commit = never
    waiting = asyncio.ensure_future(link.worker.accept(message(1)))
    await asyncio.wait_for(reached.wait(), 10)  # the daemon has the request
    link.daemon.close()
    with pytest.raises(ServiceUnavailable, match="went away"):
        await waiting
    with pytest.raises(ServiceUnavailable, match="not reachable"):
        await link.worker.accept(message(2))


async def test_a_connection_is_handed_over_with_the_bytes_read_from_it() -> None:
    """Through a seqpacket pair, as between a worker and the daemon: the TCP connection itself moves, with
    what was read from it (more than one packet's worth), and the client talks on to the new owner."""
    loop = asyncio.get_running_loop()
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    worker_end, daemon_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    adopted: asyncio.Future[tuple[socket.socket, bytes]] = loop.create_future()
    inbox = ConnectionInbox(daemon_end, lambda connection, data: adopted.set_result((connection, data)))
    read = b"".join(bytes([i % 251]) * 1000 for i in range(100))
    # In a thread: the sender blocks until the reader (this event loop) has taken the packets.
    await asyncio.to_thread(send_connection, worker_end, accepted.fileno(), read)
    accepted.close()
    connection, data = await asyncio.wait_for(adopted, 5)
    assert data == read
    client.sendall(b"still there")
    connection.settimeout(5)
    assert connection.recv(100) == b"still there"
    connection.sendall(b"yes")
    client.settimeout(5)
    assert client.recv(100) == b"yes"
    for sock in (connection, client, server, worker_end):
        sock.close()
    inbox.close()


def test_a_frame_read_from_a_blocking_socket_leaves_what_follows() -> None:
    ours, theirs = socket.socketpair()
    ours.sendall(frame(b"configuration") + pack([FailedLogin("user x", 1.0)]))
    assert read_frame(theirs) == b"configuration"
    assert [message for body in FrameReader().feed(theirs.recv(1000)) for message in TO_WORKER.unpack(body)] == [
        FailedLogin("user x", 1.0)]
    ours.close()
    with pytest.raises(EOFError):
        read_frame(theirs)
    theirs.close()


@pytest.mark.parametrize("kind", [QuotaExceeded, RecipientOptedOut, ServiceUnavailable, NotCancellable])
def test_a_refusal_crosses_the_link_as_its_kind(kind: type[SmsGatewayError]) -> None:
    error = rebuild(kind.__name__, "said by the daemon")
    assert type(error) is kind and error.message == "said by the daemon"
    assert (ozeki_code(error), http_status(error)) == (ozeki_code(kind.__new__(kind)), http_status(kind.__new__(kind)))


def test_a_refusal_of_a_kind_this_version_does_not_know_is_a_request_error() -> None:
    error = rebuild("SomethingNewer", "said by a newer daemon")
    assert type(error) is RequestError and (ozeki_code(error), http_status(error)) == (500, 400)
