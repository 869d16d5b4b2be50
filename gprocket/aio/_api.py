"""``await open``, ``await open_fd``, ``await acquire``: the ladder for asyncio."""

from __future__ import annotations

import os
import socket
from typing import Unpack

from .._api import Acquired, HelperPath, Strategies, check_request
from .._spec import Request, SocketOptions, socket_request
from ._ladder import run

__all__ = ["Socket", "acquire", "open", "open_fd"]


class Socket(socket.socket):
    """A non-blocking stdlib socket around a gprocket descriptor.

    ``rung`` names the ladder rung that provided it ("plain",
    "capabilities", "broker", "helper", "sudo", "inherited"); "" for sockets
    made from it. It drops straight into ``asyncio.start_server(sock=...)``,
    ``loop.create_datagram_endpoint(sock=...)`` and ``loop.sock_*``.
    """

    __slots__ = ("rung",)

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None, rung: str = "") -> None:
        super().__init__(family, type, proto, fileno)
        self.rung = rung
        self.setblocking(False)

    def __repr__(self) -> str:
        text = super().__repr__()
        return f"{text[:-1]}, rung={self.rung!r}>" if self.rung else text


async def acquire(request: Request, *, strategies: Strategies = None,
                  helper: HelperPath = None) -> Acquired:
    """Walk the privilege ladder for ``request`` without blocking the loop.

    As gprocket.acquire: the descriptor is close-on-exec and the caller's;
    raises PrivilegeError (``.attempts``, ``.fix``), OSError with the
    kernel's errno, HelperError, ValueError. Cancelled, it leaves no
    descriptor and no helper process behind.
    """
    check_request(request)
    fd, rung, attempts = await run(request, strategies, helper)
    return Acquired(fd, rung, attempts)


async def open_fd(
    port: int = 0,
    *,
    strategies: Strategies = None,
    helper: HelperPath = None,
    **options: Unpack[SocketOptions],
) -> int:
    """A bound (for stream sockets, listening) socket descriptor, as gprocket.open_fd.

    The options (SocketOptions says what each means) and validation of
    gprocket.open_fd: a bad one fails (ValueError/TypeError) before any rung runs.
    """
    request = socket_request(port, options, "open_fd")
    return (await acquire(request, strategies=strategies, helper=helper)).fd


async def open(
    port: int = 0,
    *,
    strategies: Strategies = None,
    helper: HelperPath = None,
    **options: Unpack[SocketOptions],
) -> Socket:
    """A non-blocking socket for the request; ``.rung`` says who opened it.

    The options (SocketOptions), validation and errors of gprocket.open.
    """
    request = socket_request(port, options, "open")
    got = await acquire(request, strategies=strategies, helper=helper)
    try:
        return Socket(fileno=got.fd, rung=got.rung)
    except BaseException:
        os.close(got.fd)
        raise
