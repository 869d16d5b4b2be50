"""The public entry points: ``open``, ``open_fd``, ``acquire``."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Unpack

# Private to gevent, but the one way to ask without creating a hub.
from gevent._hub_local import get_hub_if_exists  # noqa: PLC2701

from ._errors import Attempt
from ._ladder import StrategySpec, resolve, run
from ._ladder.caps import drop_effective
from ._socket import Socket
from ._spec import (
    DeviceRequest,
    Request,
    SocketOptions,
    SocketRequest,
    TunRequest,
    socket_request,
)

__all__ = ["Acquired", "acquire", "drop_effective", "open", "open_fd"]

Strategies = str | Sequence[StrategySpec] | None
HelperPath = str | os.PathLike[str] | None


@dataclass(frozen=True)
class Acquired:
    """A descriptor from the ladder: which rung served it, and what failed first."""

    fd: int
    rung: str
    attempts: tuple[Attempt, ...]


def check_request(request: object) -> None:
    """A TypeError, before any rung runs, for what is not a request (both fronts)."""
    if not isinstance(request, (SocketRequest, TunRequest, DeviceRequest)):
        raise TypeError(
            "request must be a SocketRequest, TunRequest or DeviceRequest, "
            f"not {type(request).__name__}"
        )


def acquire(
    request: Request, *, strategies: Strategies = None, helper: HelperPath = None
) -> Acquired:
    """Walk the privilege ladder for ``request`` and return the descriptor.

    The descriptor is close-on-exec and owned by the caller. Raises
    PrivilegeError (every rung failed: ``.attempts`` and ``.fix`` say why),
    OSError with the kernel's errno for an error no rung would change
    (EADDRINUSE, EADDRNOTAVAIL, ENODEV, ...), HelperError when the helper
    misbehaved, ValueError for an unknown strategy name.
    """
    check_request(request)
    fd, rung, attempts = run(request, strategies, helper)
    return Acquired(fd, rung, attempts)


def acquire_in_thread(
    request: Request, *, strategies: Strategies = None, helper: HelperPath = None
) -> Acquired:
    """``acquire``, leaving a native thread that had no gevent hub without one.

    The ladder's cooperative waits need a hub, and gevent makes one per
    thread on first use; a hub nobody destroys keeps its epoll and eventfd
    descriptors after its thread has ended. Code that acquires from threads
    it does not own (monkey patching, scapy's ``AsyncSniffer``) calls this.
    The main thread keeps its hub (made once, used again), and so does a
    walk with a broker rung: a broker lives in its thread's hub.
    """
    chain = resolve(strategies, helper)
    fresh = (threading.current_thread() is not threading.main_thread()
             and get_hub_if_exists() is None
             and all(strategy.name != "broker" for strategy in chain))
    try:
        return acquire(request, strategies=chain)
    finally:
        hub = get_hub_if_exists() if fresh else None
        if hub is not None:
            hub.destroy(destroy_loop=True)


def open_fd(
    port: int = 0,
    *,
    strategies: Strategies = None,
    helper: HelperPath = None,
    **options: Unpack[SocketOptions],
) -> int:
    """A bound (and for stream sockets, listening) socket descriptor: procket's open/2.

    ``options`` are the socket's (SocketOptions says what each means):
    ``family``, ``type``, ``protocol``, ``ip``, ``scope_id``, ``interface``,
    ``backlog``, ``namespace``, ``reuseaddr``, ``reuseport``. Every option is
    validated first (ValueError/TypeError), then the ladder runs as for
    ``acquire``, raising what it raises.
    """
    request = socket_request(port, options, "open_fd")
    return acquire(request, strategies=strategies, helper=helper).fd


def open(
    port: int = 0,
    *,
    strategies: Strategies = None,
    helper: HelperPath = None,
    **options: Unpack[SocketOptions],
) -> Socket:
    """A cooperative gevent socket for the request; ``.rung`` says who opened it.

    The options (SocketOptions), validation and errors of ``open_fd``.
    ``family="unspec"`` follows ``ip``: none (or ``::``) gives a dual-stack
    IPv6 socket bound to ``::``, a specific IPv6 address an IPv6-only socket
    (as the kernel makes it), an IPv4 address an inet socket.
    """
    request = socket_request(port, options, "open")
    got = acquire(request, strategies=strategies, helper=helper)
    try:
        return Socket(fileno=got.fd, rung=got.rung)
    except BaseException:
        os.close(got.fd)
        raise
