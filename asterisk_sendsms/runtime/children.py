"""The daemon's child processes (HTTP front workers, SMPP links): how each is started, how its exit is told,
and the first frame of its link, which carries its configuration."""

from __future__ import annotations

import pickle
import socket
import sys
from typing import Any

from asterisk_sendsms.runtime.intake import frame, read_frame

__all__ = ["child_command", "exit_description", "hello_frame", "read_hello"]


def child_command(module: str, *args: str) -> list[str]:
    """How a child is started: this interpreter running `module` with the import path it was installed with.
    `-P` keeps the working directory off that path: a file in the daemon's directory must not stand in for one
    of the package's modules."""
    return [sys.executable, "-P", "-m", module, *args]


def exit_description(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


def hello_frame(hello: tuple[Any, ...]) -> bytes:
    """The first frame a child reads: pickled, as its configuration holds classes marshal cannot carry (a
    tuple: a child runs its module as __main__, where a class of that module would not be the same)."""
    return frame(pickle.dumps(hello))


def read_hello(link: socket.socket, child: str) -> Any:
    try:
        hello = read_frame(link)
    except EOFError:
        raise SystemExit(f"asterisk-sendsms {child}: the daemon closed the link before its configuration") from None
    return pickle.loads(hello)  # noqa: S301 - from the daemon, over a socketpair
