"""TUN/TAP devices for asyncio: ``await open_tun(...)``, then async read and write.

The device is gprocket.tuntap's (the same request, descriptor checks, name,
mode, MTU and packet-information framing); its descriptor is non-blocking
and every read or write first tries the system call, then on EAGAIN waits
through the loop's reader or writer callback. Closing wakes every waiter
with OSError(EBADF) before the descriptor is closed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
from collections.abc import Iterable

from .._api import Acquired, HelperPath, Strategies
from .._fdio import FdIO, make_nonblocking
from .._spec import TunRequest
from ..tuntap import Mode, PacketInfo, TunTapDevice, device_for
from ._api import acquire
from ._wait import _wake

__all__ = ["AsyncTunTap", "open_tun", "wrap_tun"]

_Buffer = bytes | bytearray | memoryview


class _LoopFd(FdIO):
    """The descriptor alone: non-blocking, owned; the waits are the event loop's."""

    __slots__ = ()

    def __init__(self, fd: int, *, own: bool = True) -> None:
        make_nonblocking(fd)
        self._fd = fd
        self._own = own

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._own:
            os.close(fd)


class _Device(TunTapDevice):
    _io_type = _LoopFd


class AsyncTunTap:
    """An open TUN or TAP queue with async, packet-at-a-time I/O.

    ``name``, ``mode``, ``mtu``, ``rung``, ``packet_info`` are the device's
    (as on gprocket.tuntap.TunTapDevice). ``async for packet in dev`` reads
    until the device is closed.
    """

    def __init__(self, device: TunTapDevice) -> None:
        self.device = device
        self.name = device.name
        self.mode: Mode = device.mode
        self.mtu = device.mtu
        self.rung = device.rung
        self.packet_info = device.packet_info
        self.bufsize = device.bufsize
        self._fd = device.fileno()
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self.device.closed

    def fileno(self) -> int:
        """The descriptor; OSError(EBADF) once closed."""
        return self.device.fileno()

    async def _wait(self, write: bool) -> None:
        fd = self.fileno()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        (loop.add_writer if write else loop.add_reader)(fd, _wake, future)
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)
            if not self.closed:
                (loop.remove_writer if write else loop.remove_reader)(fd)

    async def _read_raw(self) -> bytes:
        while True:
            try:
                return os.read(self.fileno(), self.bufsize)
            except BlockingIOError:
                await self._wait(False)

    async def read(self, timeout: float | None = None) -> bytes:
        """One packet (TUN) or frame (TAP). TimeoutError after ``timeout``;
        OSError(EBADF) when closed, also while waiting."""
        async with asyncio.timeout(timeout):
            data = await self._read_raw()
        return data[PacketInfo.SIZE:] if self.packet_info else data

    async def read_with_info(self, timeout: float | None = None) -> tuple[PacketInfo, bytes]:
        """Like read(), with the packet information header parsed (packet_info only)."""
        if not self.packet_info:
            raise ValueError(f"{self.name} was opened without packet_info=True")
        async with asyncio.timeout(timeout):
            return PacketInfo.split(await self._read_raw())

    async def write(self, packet: _Buffer, proto: int | None = None,
                    timeout: float | None = None) -> int:
        """Send one packet/frame; its length (without the info header).

        Raises OSError with the kernel's errno (EINVAL malformed, EIO down).
        """
        parts: list[_Buffer] = [packet]
        if self.packet_info:
            parts.insert(0, self.device._header(packet, proto))
        async with asyncio.timeout(timeout):
            while True:
                try:
                    sent = os.writev(self.fileno(), parts)
                    break
                except BlockingIOError:
                    await self._wait(True)
        return sent - (PacketInfo.SIZE if self.packet_info else 0)

    async def write_batch(self, packets: Iterable[_Buffer], timeout: float | None = None) -> int:
        """Send each packet in turn; how many were sent."""
        count = 0
        for packet in packets:
            await self.write(packet, timeout=timeout)
            count += 1
        return count

    def __aiter__(self) -> AsyncTunTap:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.read()
        except OSError as err:
            if err.errno == errno.EBADF and self.closed:
                raise StopAsyncIteration from None
            raise

    def close(self) -> None:
        """Wake waiters with OSError(EBADF), stop watching, close. Idempotent."""
        if self.closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        for future in list(self._waiters):
            if not future.done():
                future.set_exception(OSError(errno.EBADF, "descriptor was closed"))
        self.device.close()

    async def __aenter__(self) -> AsyncTunTap:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<AsyncTunTap {self.mode} {self.name!r} mtu={self.mtu} rung={self.rung}{state}>"


def wrap_tun(request: TunRequest, acquired: Acquired) -> AsyncTunTap:
    """The async device for a descriptor acquired for ``request`` (closed on failure)."""
    return AsyncTunTap(device_for(request, acquired, _Device))


async def open_tun(
    name: str | None = None,
    mode: Mode = "tun",
    *,
    packet_info: bool = False,
    multiqueue: bool = False,
    persist: bool = False,
    up: bool = False,
    mtu: int | None = None,
    address: str | ipaddress.IPv4Interface | None = None,
    address6: str | ipaddress.IPv6Interface | None = None,
    namespace: str | None = None,
    strategies: Strategies = None,
    helper: HelperPath = None,
) -> AsyncTunTap:
    """gprocket.tuntap.open for asyncio: the same options, validation and errors."""
    request = TunRequest(
        name=name, mode=mode, packet_info=packet_info, multiqueue=multiqueue, persist=persist,
        up=up, mtu=0 if mtu is None else mtu, addr4=address, addr6=address6, namespace=namespace,
    )
    return wrap_tun(request, await acquire(request, strategies=strategies, helper=helper))
