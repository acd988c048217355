"""The daemon's child processes (HTTP front workers, SMPP links): how each is started, how its exit is told,
the first frame of its link (the protocol version and its configuration), and what both ends of a link share."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import sys
from typing import Any

from asterisk_sendsms.wire.ipc.framing import (
    HEADER,
    Codec,
    FrameReader,
    IpcError,
    Message,
    decode_hello,
    encode_hello,
    frame_length,
    pack,
)

__all__ = ["LinkEnd", "child_command", "exit_description", "hello_frame", "read_frame", "read_hello"]

log = logging.getLogger(__name__)


def child_command(module: str, *args: str) -> list[str]:
    """How a child is started: this interpreter running `module` with the import path it was installed with.
    `-P` keeps the working directory off that path: a file in the daemon's directory must not stand in for one
    of the package's modules."""
    return [sys.executable, "-P", "-m", module, *args]


def exit_description(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


def hello_frame(hello: tuple[Any, ...]) -> bytes:
    """The first frame a child reads: the protocol version, and `hello` pickled, as the configuration holds
    classes marshal cannot carry (a tuple: a child runs its module as __main__, where a class of that module
    would not be the same)."""
    return encode_hello(pickle.dumps(hello))


def read_frame(sock: socket.socket) -> bytes:
    """The body of one frame from a blocking socket, and not a byte past it: what follows belongs to the
    protocol that takes the socket over. EOFError if the stream ends first, IpcError if it is out of step."""
    header = sock.recv(HEADER.size, socket.MSG_WAITALL)
    if len(header) == HEADER.size:
        length = frame_length(header)
        body = sock.recv(length, socket.MSG_WAITALL)
        if len(body) == length:
            (checked,) = FrameReader().feed(header + body)
            return checked
    raise EOFError("the stream ended within a frame")


def read_hello(link: socket.socket, child: str) -> Any:
    """The daemon's hello, read by a child before anything else; a child of another protocol version refuses
    it and exits, rather than misread its configuration."""
    try:
        hello = decode_hello(read_frame(link))
    except EOFError:
        raise SystemExit(f"asterisk-sendsms {child}: the daemon closed the link before its configuration") from None
    except IpcError as exc:
        raise SystemExit(f"asterisk-sendsms {child}: refused the daemon's link: {exc}; a daemon and its children "
                         "must come from one installation (restart the daemon)") from None
    return pickle.loads(hello)  # noqa: S301 - from the daemon, over a socketpair


class LinkEnd(asyncio.Protocol):
    """What both ends share: frames in, read by `codec`, after the other end's hello unless it was read
    already (`greeted`); anything malformed closes the link with one log line (`name` says which)."""

    def __init__(self, codec: Codec, name: str, greeted: bool) -> None:
        self._codec = codec
        self._name = name
        self._greeted = greeted
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def _received(self, data: bytes) -> list[Any]:
        try:
            bodies = self._reader.feed(data)
            if bodies and not self._greeted:
                decode_hello(bodies.pop(0))
                self._greeted = True
            return [message for body in bodies for message in self._codec.unpack(body)]
        except IpcError as exc:
            log.error("%s link: %s; closing it", self._name, exc)
            self.close()
            return []

    def send(self, *messages: Message) -> None:
        self.send_frame(pack(messages))

    def send_frame(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
