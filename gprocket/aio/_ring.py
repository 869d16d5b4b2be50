"""Async capture over a TPACKET_V3 ring: ``async for block in ring(...)``.

The ring is gprocket.packet.ring's RxRing (the same mapping, block walk and
compiled hot loops); only the wait for the next retired block differs: the
packet socket's readability through the loop's reader callback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType

from ..packet import interfaces
from ..packet.ring import Block, RxRing
from ._api import Socket
from ._api import open as aio_open
from ._wait import readable

__all__ = ["AsyncRing", "blocks", "next_block", "ring"]

ETH_P_ALL = 0x0003


async def next_block(rx: RxRing, timeout: float | None = None) -> Block | None:
    """The next retired block of ``rx``; None after ``timeout`` seconds without one."""
    if rx.closed:
        raise ValueError("ring is closed")
    block = rx.poll_block()
    while block is None:
        if not await readable(rx.fd, timeout):
            return None
        block = rx.poll_block()
    return block


async def blocks(rx: RxRing, timeout: float | None = None) -> AsyncIterator[Block]:
    """Yield blocks of ``rx`` until ``timeout`` passes without one (forever if None).

    Each block is released when the loop asks for the next one.
    """
    while True:
        block = await next_block(rx, timeout)
        if block is None:
            return
        try:
            yield block
        finally:
            block.release()


class AsyncRing:
    """A packet socket bound to one interface, receiving through a TPACKET_V3 ring.

    ``async for block in ring`` yields each retired block (its frames are
    views into the ring, valid until the next block is asked for);
    ``idle`` seconds without a block end the iteration (None: never).
    Use as ``async with await ring(...) as r`` or close() it. As with
    RxRing.close, closing while frames (views) are still referenced raises
    BufferError: keep frames inside the loop's body, or copy them.
    """

    def __init__(self, sock: Socket, rx: RxRing, idle: float | None) -> None:
        self.sock = sock
        self.rx = rx
        self.idle = idle
        self._current: Block | None = None

    def __aiter__(self) -> AsyncRing:
        return self

    async def __anext__(self) -> Block:
        if self._current is not None:
            self._current.release()
            self._current = None
        block = await next_block(self.rx, self.idle)
        if block is None:
            raise StopAsyncIteration
        self._current = block
        return block

    def close(self) -> None:
        """Release the ring and close the socket. Idempotent."""
        if self._current is not None:
            self._current.release()
            self._current = None
        self._current = None
        self.rx.close()
        self.sock.close()

    async def __aenter__(self) -> AsyncRing:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


async def ring(interface: str, protocol: int = ETH_P_ALL, *,
               block_size: int = 1 << 20, block_count: int = 16, frame_size: int = 2048,
               timeout_ms: int = 10, idle: float | None = None,
               strategies: str | Sequence[str] | None = None,
               helper: str | None = None) -> AsyncRing:
    """Open a packet socket through the ladder, map a receive ring, bind to ``interface``.

    The socket opens with protocol 0 and is bound with ``protocol`` only once
    the ring is in place, so no frame slips past it. Raises PrivilegeError
    when no rung may open a packet socket (the policy needs ``packet``),
    OSError with the kernel's errno (ENODEV: no such interface).
    """
    sock = await aio_open(0, family="packet", type="raw", protocol=0,
                          strategies=strategies, helper=helper)
    try:
        rx = RxRing(sock, block_size=block_size, block_count=block_count,
                    frame_size=frame_size, timeout_ms=timeout_ms)
        try:
            interfaces.bind(sock, interface, protocol)
        except BaseException:
            rx.close()
            raise
    except BaseException:
        sock.close()
        raise
    return AsyncRing(sock, rx, idle)


