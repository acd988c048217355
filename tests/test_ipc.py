"""The messages between the daemon and its children (wire/ipc): each kind comes back as it was sent, any bytes
at all, and any frame of marshal data, are read back as messages or refused with IpcError (never another
exception), a child of another protocol version is refused at the hello, and a malformed frame closes only its
link, with one log line."""

from __future__ import annotations

import asyncio
import logging
import marshal
import socket
import struct
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from asterisk_sendsms.core.encoding import Coding, EncodedMessage, Segment
from asterisk_sendsms.core.model import IncomingPart, NewMessage, OutboundMessage, PartOutcome, Receipt
from asterisk_sendsms.core.traffic import Priority
from asterisk_sendsms.runtime.intake import DaemonLink
from asterisk_sendsms.wire.ipc import framing
from asterisk_sendsms.wire.ipc.framing import (
    PROTOCOL_VERSION,
    FrameReader,
    IpcError,
    VersionMismatch,
    decode_hello,
    encode_hello,
    frame,
    pack,
)
from asterisk_sendsms.wire.ipc.front import FROM_WORKER, TO_WORKER, Batch, FailedLogin, Outcome, Refusal
from asterisk_sendsms.wire.ipc.smpp import (
    FROM_CHILD,
    TO_CHILD,
    Cancel,
    Failed,
    Health,
    Incoming,
    ReceiptHeard,
    Stop,
    Stored,
    Submit,
    Submitted,
)

CODECS = (FROM_WORKER, TO_WORKER, FROM_CHILD, TO_CHILD)

text = st.text(max_size=30)
number = st.integers(-(2 ** 70), 2 ** 70)
moment = st.floats(allow_nan=False)
optional_text = st.none() | text
new_messages = st.builds(NewMessage, text, text, optional_text, text, text, st.sampled_from(Coding),
                         st.integers(1, 255), optional_text, moment, moment, st.sampled_from(Priority),
                         st.none() | moment, st.none() | moment)
outbound = st.builds(OutboundMessage, text, optional_text, text, text, number, moment, st.sampled_from(Priority),
                     number, st.booleans())
encoded = st.builds(EncodedMessage, st.sampled_from(Coding),
                    st.lists(st.builds(Segment, text, st.binary(max_size=140)), max_size=4).map(tuple))

TO_WORKER_MESSAGES = st.one_of(
    st.builds(Outcome, number, optional_text,
              st.lists(st.builds(Refusal, number, text, text), max_size=4).map(tuple)),
    st.builds(FailedLogin, text, moment))
FROM_WORKER_MESSAGES = st.builds(Batch, number, st.lists(new_messages, max_size=4).map(tuple))
TO_CHILD_MESSAGES = st.one_of(st.builds(Submit, number, outbound, encoded), st.builds(Cancel, number),
                              st.builds(Stored, number, optional_text), st.just(Stop()))
FROM_CHILD_MESSAGES = st.one_of(
    st.builds(Submitted, number, st.lists(text, max_size=4).map(tuple)),
    st.builds(Failed, number, st.booleans(), text, text),
    st.builds(Health, st.booleans(), text, text, number),
    st.builds(ReceiptHeard, number, st.builds(Receipt, text, text, st.sampled_from(PartOutcome), text, moment)),
    st.builds(Incoming, number, st.builds(IncomingPart, text, text, text, text, moment, number, number, number)))


def read_back(codec: framing.Codec, stream: bytes) -> list[Any]:
    return [message for body in FrameReader().feed(stream) for message in codec.unpack(body)]


@pytest.mark.parametrize(("codec", "messages"), [(FROM_WORKER, FROM_WORKER_MESSAGES), (TO_WORKER, TO_WORKER_MESSAGES),
                                                 (FROM_CHILD, FROM_CHILD_MESSAGES), (TO_CHILD, TO_CHILD_MESSAGES)],
                         ids=["from worker", "to worker", "from SMPP child", "to SMPP child"])
@given(data=st.data())
def test_every_message_comes_back_as_it_was_sent(codec: framing.Codec, messages: st.SearchStrategy[Any],
                                                 data: st.DataObject) -> None:
    sent = data.draw(st.lists(messages, min_size=1, max_size=5))
    assert read_back(codec, pack(sent)) == sent


def test_each_kind_is_read_by_the_end_it_goes_to_only() -> None:
    with pytest.raises(IpcError, match="known tag"):
        read_back(FROM_WORKER, pack([FailedLogin("user x", 1.0)]))
    with pytest.raises(IpcError, match="known tag"):
        read_back(FROM_CHILD, pack([Submit(1, OutboundMessage("a", None, "1", "t", 0, 1.0),
                                           EncodedMessage(Coding.GSM7, ()))]))


def refused_or_read(stream: bytes) -> None:
    """Each end reads `stream` as messages or refuses it with IpcError; nothing else."""
    for codec in CODECS:
        try:
            messages = read_back(codec, stream)
        except IpcError:
            continue
        assert isinstance(messages, list)
    try:
        bodies = FrameReader().feed(stream)
    except IpcError:
        return
    for body in bodies:
        with pytest.raises(IpcError):
            decode_hello(body)


@given(st.binary(max_size=200))
# A list of 2,063,597,569 items as marshal would read it (all of them allocated before the first is read),
# with a checksum that does not match: a body is read only as `pack` wrote it.
@example(struct.pack("!II", 5, 0) + b"\x5b\x01\x00\x00\x7b")
def test_any_bytes_are_read_as_messages_or_refused(stream: bytes) -> None:
    refused_or_read(stream)


marshal_values = st.recursive(
    st.none() | st.booleans() | number | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=14).map(tuple), max_leaves=40)
tags = st.sampled_from(["batch", "outcome", "failed-login", "submit", "cancel", "stored", "stop", "done", "failed",
                        "health", "receipt", "incoming"])


@given(st.lists(marshal_values | st.tuples(tags).flatmap(lambda tag: st.lists(marshal_values, max_size=14).map(
    lambda fields: (*tag, *fields))), max_size=3) | marshal_values)
@example([("batch", 1, [("x",) * 13])])
@example([("batch", 1, [("id", "u", None, "1", "t", "gsm7", 1, None, 1.0, 2.0, "urgent", None, None)])])
@example([("outcome", 1, None, [(0, 1, 2)])])
@example([("submit", 1, "id", None, "1", "t", 0, 1.0, "nope", 0, False, "gsm7", [])])
@example([("done", 1, [b"not text"])])
@example([(b"batch",)])
@example([()])
def test_well_formed_frames_of_any_shape_are_read_as_messages_or_refused(value: Any) -> None:
    refused_or_read(frame(marshal.dumps(value)))


@given(st.lists(st.one_of(FROM_WORKER_MESSAGES, TO_WORKER_MESSAGES, FROM_CHILD_MESSAGES, TO_CHILD_MESSAGES),
                min_size=1, max_size=3), st.data())
def test_cut_or_altered_frames_are_refused(messages: list[Any], data: st.DataObject) -> None:
    stream = pack(messages)
    cut = data.draw(st.integers(0, len(stream) - 1))
    assert FrameReader().feed(stream[:cut]) == []  # the rest is awaited
    position = data.draw(st.integers(framing.HEADER.size, len(stream) - 1))
    altered = stream[:position] + bytes([stream[position] ^ data.draw(st.integers(1, 255))]) + stream[position + 1:]
    with pytest.raises(IpcError, match="checksum"):
        FrameReader().feed(altered)


def test_a_frame_longer_than_allowed_puts_the_stream_out_of_step() -> None:
    with pytest.raises(IpcError, match="out of step"):
        FrameReader().feed(struct.pack("!II", framing.MAX_FRAME + 1, 0))
    with pytest.raises(IpcError, match="out of step"):
        framing.frame_length(struct.pack("!II", framing.MAX_FRAME + 1, 0))


def test_the_hello_carries_its_body_and_refuses_another_version() -> None:
    (body,) = FrameReader().feed(encode_hello(b"configuration"))
    assert decode_hello(body) == b"configuration"
    other = marshal.dumps(("asterisk-sendsms ipc", PROTOCOL_VERSION + 1, b""))
    with pytest.raises(VersionMismatch, match=f"protocol version {PROTOCOL_VERSION + 1}, this one {PROTOCOL_VERSION}"):
        decode_hello(other)
    # What a daemon of before the protocol had a version sent: its configuration, pickled, as the first frame.
    with pytest.raises(VersionMismatch, match="no hello"):
        decode_hello(marshal.dumps(b"\x80\x04pickled configuration"))


async def daemon_end(first: bytes) -> tuple[list[list[NewMessage]], bool]:
    """What a daemon's end of a worker link commits when `first` comes before a good batch, and whether it
    closed the link."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    committed: list[list[NewMessage]] = []

    async def commit(messages: list[NewMessage]) -> list[Any]:
        committed.append(messages)
        return [None] * len(messages)
    await loop.create_unix_connection(lambda: DaemonLink(commit, "HTTP front worker 1"), sock=ours)
    message = NewMessage("id-1", "alice", None, "+36201234567", "hi", Coding.GSM7, 1, None, 1.0, 2.0)
    theirs.sendall(first + pack([Batch(1, (message,))]))
    theirs.setblocking(False)
    reader = asyncio.StreamReader()
    await loop.connect_accepted_socket(lambda: asyncio.StreamReaderProtocol(reader), sock=theirs)
    answer = await reader.read(1000)
    theirs.close()
    return committed, answer == b""


async def test_a_worker_that_greets_is_served() -> None:
    committed, closed = await daemon_end(encode_hello(b""))
    assert [[m.sms_id for m in batch] for batch in committed] == [["id-1"]] and not closed


@pytest.mark.parametrize("first", [
    frame(marshal.dumps(("asterisk-sendsms ipc", PROTOCOL_VERSION + 1, b""))),
    b"",  # no hello: a worker of before the protocol had a version
    encode_hello(b"") + frame(b"\xff garbage"),
], ids=["another version", "no hello", "garbage"])
async def test_a_worker_of_another_version_or_sending_garbage_is_refused_with_one_log_line(
        caplog: pytest.LogCaptureFixture, first: bytes) -> None:
    with caplog.at_level(logging.ERROR):
        committed, closed = await daemon_end(first)
    assert committed == [] and closed
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("HTTP front worker 1 link: ")
    assert record.getMessage().endswith("; closing it")
