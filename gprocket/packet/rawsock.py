"""A stateful raw packet socket: the "gen_raw" server on procket's wish list.

:class:`RawSocket` is opened through the privilege ladder, remembers its
interface (index, MAC, MTU), and offers two ways to receive:

* passive: :meth:`RawSocket.recv` with a timeout, or iteration;
* active: :meth:`RawSocket.start` runs a greenlet that hands each frame to a
  callback or puts it on a queue until :meth:`RawSocket.stop`.

Plus :meth:`~RawSocket.send`, :meth:`~RawSocket.send_many` (batched),
filters (:mod:`gprocket.packet.bpf`), promiscuous mode held for the socket's
lifetime, and kernel statistics (received, dropped).

Backends: everything that touches the operating system goes through the
:class:`Backend` protocol. This release ships :class:`LinuxPacketBackend`
(AF_PACKET) only; Linux only. A BSD ``/dev/bpf`` backend would implement
the same methods: open the device and ``BIOCSETIF`` the interface in
``__init__``, ``BIOCSETF`` in ``set_filter``, ``BIOCLOCK`` in
``lock_filter``, ``BIOCGSTATS`` in ``stats``, and split the buffer a
``read`` returns at ``bpf_hdr`` boundaries in ``recv``.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import gevent
import gevent.queue

import gprocket
from gprocket.packet import bpf, interfaces, lowlevel
from gprocket.packet.ring import BatchSender, RxRing

__all__ = [
    "ETH_P_ALL",
    "Backend",
    "Frame",
    "LinuxPacketBackend",
    "RawSocket",
    "Stats",
    "open_packet_socket",
]

ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class Frame:
    """One received link-layer frame."""

    data: bytes
    timestamp: float
    ifindex: int
    protocol: int
    pkttype: int
    truncated: bool = False

    @property
    def outgoing(self) -> bool:
        """This host sent it (PACKET_OUTGOING)."""
        return self.pkttype == socket.PACKET_OUTGOING


@dataclass(frozen=True)
class Stats:
    """Frames the kernel delivered to the socket and dropped (buffer full)."""

    received: int
    dropped: int


class Backend(Protocol):
    """What a capture backend provides (Linux AF_PACKET here; BSD BPF could)."""

    ifindex: int

    def fileno(self) -> int:
        """The descriptor to wait on."""

    def recv(self, timeout: float | None) -> Frame | None:
        """One frame, or None after ``timeout`` seconds."""

    def send(self, frame: bytes | bytearray | memoryview) -> int:
        """Send one complete frame; returns bytes sent."""

    def send_many(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        """Send frames in order, batched; returns how many."""

    def set_filter(self, program: bpf.Program) -> None:
        """Attach a classic BPF program."""

    def lock_filter(self) -> None:
        """Make the filter permanent for this socket."""

    def stats(self) -> Stats:
        """Cumulative counters."""

    def close(self) -> None:
        """Release the socket (and with it promiscuous mode)."""


def open_packet_socket(protocol: int = 0, *, helper: str | None = None,
                       strategies: str | Sequence[str] | None = None) -> gprocket.Socket:
    """Open an AF_PACKET/SOCK_RAW socket through the privilege ladder.

    ``protocol`` 0 receives nothing until the socket is bound with an
    ethertype: set up rings and filters first, then bind. Raises
    gprocket.PrivilegeError (with ``.attempts`` and ``.fix``) when no rung may
    open it; the helper's policy needs an ``allow SUBJECT packet`` entry.
    """
    return gprocket.open(0, family="packet", type="raw", protocol=protocol, helper=helper,
                         strategies=strategies)


class LinuxPacketBackend:
    """AF_PACKET backend: one socket bound to one interface, receiving through a ring.

    Frames arrive in a TPACKET_V3 ring of ``ring_blocks`` blocks of 1 MiB,
    so bursts are absorbed by the ring, not limited by the socket buffer;
    a block is handed over when full or ``latency_ms`` after its first frame.
    """

    def __init__(self, interface: str, protocol: int = ETH_P_ALL, *, snaplen: int = 65535,
                 promiscuous: bool = False, filter: bpf.Program | None = None,
                 helper: str | None = None, strategies: str | Sequence[str] | None = None,
                 ring_blocks: int = 16, latency_ms: int = 4) -> None:
        self.ifindex = interfaces.index_of(interface)
        self.interface = interface
        self.snaplen = snaplen
        self.sock = open_packet_socket(0, helper=helper, strategies=strategies)
        try:
            frame_size = 1 << max(11, (snaplen + 127).bit_length())
            block = max(1 << 20, frame_size)
            self.ring = RxRing(self.sock, block_size=block, block_count=ring_blocks,
                               frame_size=frame_size, timeout_ms=latency_ms)
            if filter is not None:
                bpf.attach(self.sock, filter)
            if promiscuous:
                interfaces.set_promiscuous(self.sock, self.ifindex)
            interfaces.bind(self.sock, interface, protocol)
        except BaseException:
            self.sock.close()
            raise
        self._sender = BatchSender(self.sock)
        self._pending: deque[Frame] = deque()

    def fileno(self) -> int:
        """The packet socket's descriptor."""
        return int(self.sock.fileno())

    def recv(self, timeout: float | None) -> Frame | None:
        """One frame (copied out of the ring), or None after ``timeout`` seconds."""
        if not self._pending:
            block = self.ring.next_block(timeout)
            if block is None:
                return None
            with block:
                snap = self.snaplen
                self._pending.extend(
                    Frame(bytes(r.data[:snap]), r.sec + r.nsec / 1e9, r.ifindex, r.protocol,
                          r.pkttype, r.wire_len > min(len(r.data), snap))
                    for r in block.records())
            if not self._pending:
                return self.recv(timeout)
        return self._pending.popleft()

    def send(self, frame: bytes | bytearray | memoryview) -> int:
        """Send one frame on the bound interface."""
        return lowlevel.write(self.sock, frame)

    def send_many(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        """Send frames with sendmmsg."""
        return self._sender.send(frames)

    def set_filter(self, program: bpf.Program) -> None:
        """Attach ``program`` (replaces an unlocked filter)."""
        bpf.attach(self.sock, program)

    def lock_filter(self) -> None:
        """SO_LOCK_FILTER."""
        bpf.lock(self.sock)

    def stats(self) -> Stats:
        """Counters from PACKET_STATISTICS, accumulated (the kernel resets on read)."""
        got = self.ring.stats()
        return Stats(got.received, got.dropped)

    def close(self) -> None:
        """Unmap the ring and close the socket; the kernel drops its promiscuous membership."""
        self._pending.clear()
        self.ring.close()
        self.sock.close()


class RawSocket:
    """A packet socket on one interface, holding its state.

    ``interface`` names the interface; ``protocol`` is the ethertype to
    receive (host order; ETH_P_ALL = every frame). ``helper``/``strategies``
    go to the privilege ladder. Raises OSError(ENODEV) for an unknown
    interface, gprocket.PrivilegeError when no rung may open a packet socket.
    """

    def __init__(self, interface: str, protocol: int = ETH_P_ALL, *, snaplen: int = 65535,
                 promiscuous: bool = False, filter: bpf.Program | None = None,
                 helper: str | None = None, strategies: str | Sequence[str] | None = None,
                 backend: Backend | None = None) -> None:
        self.backend: Backend = backend or LinuxPacketBackend(
            interface, protocol, snaplen=snaplen, promiscuous=promiscuous, filter=filter,
            helper=helper, strategies=strategies)
        self.interface = interface
        self.protocol = protocol
        self.promiscuous = promiscuous
        state = interfaces.get(interface)
        self.ifindex = state.index
        self.mac = state.mac
        self.mtu = state.mtu
        self._active: gevent.Greenlet | None = None
        self.closed = False

    # passive mode
    def recv(self, timeout: float | None = None) -> Frame | None:
        """Wait cooperatively for one frame; None after ``timeout`` seconds."""
        self._check_passive()
        return self.backend.recv(timeout)

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the socket is closed (never ends on its own)."""
        while not self.closed:
            frame = self.recv()
            if frame is not None:
                yield frame

    def frames(self, count: int | None = None, timeout: float | None = None
               ) -> Iterator[Frame]:
        """Up to ``count`` frames, stopping when ``timeout`` passes without one."""
        got = 0
        while count is None or got < count:
            frame = self.recv(timeout)
            if frame is None:
                return
            got += 1
            yield frame

    # active mode
    def start(self, callback: Callable[[Frame], Any] | None = None,
              queue: gevent.queue.Queue | None = None) -> gevent.queue.Queue | None:
        """Deliver every frame from a greenlet to ``callback`` or ``queue``.

        With neither, a new unbounded queue is made and returned. Raises
        RuntimeError if already started or given both.
        """
        if self._active is not None:
            raise RuntimeError("active mode already started; stop() first")
        if callback is not None and queue is not None:
            raise RuntimeError("give a callback or a queue, not both")
        if callback is None:
            queue = queue if queue is not None else gevent.queue.Queue()
            deliver: Callable[[Frame], Any] = queue.put
        else:
            deliver = callback
        self._active = gevent.spawn(self._pump, deliver)
        return queue

    def _pump(self, deliver: Callable[[Frame], Any]) -> None:
        while True:
            frame = self.backend.recv(None)
            if frame is not None:
                deliver(frame)

    def stop(self) -> None:
        """End active mode (frames already delivered stay delivered)."""
        if self._active is not None:
            self._active.kill()
            self._active = None

    @property
    def active(self) -> bool:
        """Active mode is running."""
        return self._active is not None and not self._active.dead

    def _check_passive(self) -> None:
        if self._active is not None:
            raise RuntimeError("recv() in active mode: frames go to the callback/queue")

    # sending, filters, statistics
    def send(self, frame: bytes | bytearray | memoryview) -> int:
        """Send one complete link-layer frame on the interface."""
        return self.backend.send(frame)

    def send_many(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        """Send frames in order with as few system calls as possible."""
        return self.backend.send_many(frames)

    def set_filter(self, program: bpf.Program | str) -> None:
        """Attach a BPF program, or a tcpdump expression compiled with libpcap."""
        if isinstance(program, str):
            program = bpf.compile_expression(program)
        self.backend.set_filter(program)

    def lock_filter(self) -> None:
        """Lock the filter: it can no longer be detached or replaced."""
        self.backend.lock_filter()

    def stats(self) -> Stats:
        """Frames received and dropped by the kernel since opening."""
        return self.backend.stats()

    def fileno(self) -> int:
        """The descriptor (for select/poll loops)."""
        return self.backend.fileno()

    def close(self) -> None:
        """Stop active mode and close the socket (promiscuous mode ends with it)."""
        if not self.closed:
            self.stop()
            self.closed = True
            self.backend.close()

    def __enter__(self) -> RawSocket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
