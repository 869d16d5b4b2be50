"""``await open``, ``await open_fd``, ``await acquire``: the ladder for asyncio."""

from __future__ import annotations

import ipaddress
import os
import socket

from .._api import Acquired, HelperPath, Strategies
from .._spec import DeviceRequest, Request, SocketRequest, TunRequest
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
    if not isinstance(request, (SocketRequest, TunRequest, DeviceRequest)):
        raise TypeError(
            "request must be a SocketRequest, TunRequest or DeviceRequest, "
            f"not {type(request).__name__}"
        )
    fd, rung, attempts = await run(request, strategies, helper)
    return Acquired(fd, rung, attempts)


async def _acquire_socket(  # noqa: PLR0917
    port: int, protocol: str | int | None, type: str | int | None,
    family: str | int | None, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    scope_id: int, interface: str | None, backlog: int | None, namespace: str | None,
    reuseaddr: bool | None, reuseport: bool, strategies: Strategies, helper: HelperPath,
) -> Acquired:
    request = SocketRequest(
        port, family=family, type=type, protocol=protocol, ip=ip, scope_id=scope_id,
        interface=interface, backlog=backlog, namespace=namespace, reuseaddr=reuseaddr,
        reuseport=reuseport,
    )
    return await acquire(request, strategies=strategies, helper=helper)


async def open_fd(
    port: int = 0,
    *,
    protocol: str | int | None = None,
    type: str | int | None = None,
    family: str | int | None = None,
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    scope_id: int = 0,
    interface: str | None = None,
    backlog: int | None = None,
    namespace: str | None = None,
    reuseaddr: bool | None = None,
    reuseport: bool = False,
    strategies: Strategies = None,
    helper: HelperPath = None,
) -> int:
    """A bound (for stream sockets, listening) socket descriptor, as gprocket.open_fd.

    Every option is validated first (ValueError/TypeError) before any rung runs.
    """
    got = await _acquire_socket(port, protocol, type, family, ip, scope_id, interface,
                                backlog, namespace, reuseaddr, reuseport, strategies, helper)
    return got.fd


async def open(
    port: int = 0,
    *,
    protocol: str | int | None = None,
    type: str | int | None = None,
    family: str | int | None = None,
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    scope_id: int = 0,
    interface: str | None = None,
    backlog: int | None = None,
    namespace: str | None = None,
    reuseaddr: bool | None = None,
    reuseport: bool = False,
    strategies: Strategies = None,
    helper: HelperPath = None,
) -> Socket:
    """A non-blocking socket for the request; ``.rung`` says who opened it.

    The options, validation and errors of gprocket.open.
    """
    got = await _acquire_socket(port, protocol, type, family, ip, scope_id, interface,
                                backlog, namespace, reuseaddr, reuseport, strategies, helper)
    try:
        return Socket(fileno=got.fd, rung=got.rung)
    except BaseException:
        os.close(got.fd)
        raise
