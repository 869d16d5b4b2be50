"""Replies from a helper's channel, read through the event loop (asyncio).

The message is decoded and its descriptor judged by the same code as the
gevent front (``gprocket._channel.fdpass.receive_now``: SCM_RIGHTS, close-on-exec from
the first instant, extra descriptors closed, truncation refused); only the
wait differs.
"""

from __future__ import annotations

import errno
import socket

from .._channel.fdpass import receive_now
from .._channel.wire import Reply
from ._wait import readable, writable

__all__ = ["receive_reply", "send_message"]


async def receive_reply(channel: socket.socket) -> tuple[Reply, int | None] | None:
    """Wait (without blocking the loop) for one reply; None at end of file."""
    while True:
        try:
            return receive_now(channel)
        except BlockingIOError:
            await readable(channel.fileno())


async def send_message(channel: socket.socket, message: bytes) -> None:
    """Send one SEQPACKET message: whole or not at all, waiting for room if needed."""
    while True:
        try:
            sent = channel.send(message)
        except BlockingIOError:
            await writable(channel.fileno())
            continue
        if sent != len(message):
            raise OSError(errno.EMSGSIZE,
                          f"short send on a SEQPACKET channel ({sent} of {len(message)})")
        return
