"""Fast packet I/O: a TPACKET_V3 receive ring and batched sending.

:class:`RxRing` maps the kernel's receive ring into this process. The
kernel fills whole blocks of frames; :meth:`RxRing.next_block` hands one
:class:`Block` over once the kernel retires it (full, or ``timeout_ms``
after its first frame). A block's frames are ``memoryview`` slices of the
ring itself (zero copy): they are valid until the block is released, after
which the kernel writes new frames over them (copy with ``bytes(frame)`` to
keep one). Release a block with :meth:`Block.release` or a ``with`` block.
Iterating a block (``for frame in block``) is the fastest way through it:
the views are built a slice at a time, so the loop stays in the CPU caches.
:meth:`Block.write_pcap` (and ``PcapWriter.write_block``) writes a block to
a pcap file without any Python work per frame (one writev per 64 KiB).

:class:`BatchSender` sends many frames per system call (``sendmmsg``).

Hot loops run in C through cffi (``gprocket.packet._speed``, built by
setup.py or ``python -m gprocket.packet._build``); without it the same
work is done in Python.
"""

from __future__ import annotations

import array
import contextlib
import errno
import gc
import importlib
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from types import TracebackType
from typing import Any

import gevent
from gevent.socket import wait_read, wait_write

from gprocket.packet import lowlevel

# The compiled hot loops, or None (not built): the pure-Python paths below.
_packet_speed: Any
try:
    _packet_speed = importlib.import_module("gprocket.packet._speed")
except ImportError:
    _packet_speed = None

__all__ = ["HAVE_SPEEDUPS", "BatchSender", "Block", "RingFrame", "RingStats", "RxRing", "TxRing"]

HAVE_SPEEDUPS = _packet_speed is not None
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
_BLOCK_HDR = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (at +8)
_LL_OFFSET = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the frame's sockaddr_ll
_LL = struct.Struct("=iHB")  # sockaddr_ll's ifindex, hatype, pkttype
_FRAME_HDR = struct.Struct("=IIIIIIHH")  # next, sec, nsec, snaplen, len, status, mac, net
# UIO_MAXIOV: the most segments one writev takes.
_IOV_MAX = 1024
# Bytes of pcap records per writev. Whole-block writes (~600 KB) took twice
# the CPU of 64 KiB ones in bench/capture.py's drain (kernel-side copy into
# the page cache); 64 KiB also keeps the staging buffer in the CPU's caches.
_PCAP_WRITE = 1 << 16
# Frames per slice when iterating a block: their views stay in the first-level caches.
_ITER_SLICE = 128


@dataclass(frozen=True)
class RingFrame:
    """One frame with its metadata; ``data`` is a view into the ring."""

    data: memoryview
    sec: int
    nsec: int
    wire_len: int
    ifindex: int = 0
    protocol: int = 0
    pkttype: int = 0

    @property
    def timestamp(self) -> float:
        """Kernel receive time, seconds since the epoch."""
        return self.sec + self.nsec / 1e9


@dataclass(frozen=True)
class RingStats:
    """Kernel counters since the ring was created."""

    received: int
    dropped: int


class Block:
    """One retired block: its frames until :meth:`release`."""

    __slots__ = ("_ends", "_meta", "_ring", "_starts", "count", "index", "released", "view")

    def __init__(self, ring: RxRing, index: int, view: memoryview, count: int) -> None:
        self._ring = ring
        self.index = index
        self.view = view
        self.count = count
        # Where each frame's data starts and ends, found on first use: a
        # block written to a pcap file by compiled code never needs them.
        self._starts: list[int] | None = None
        self._ends: list[int] = []
        self._meta: list[int] | None = None
        self.released = False

    def _bounds(self) -> tuple[list[int], list[int]]:
        if self._starts is None:
            if self.released:
                raise ValueError("block already released: read its frames before release()")
            self._starts, self._ends = self._ring._describe(self.index)
            self.count = len(self._starts)
        return self._starts, self._ends

    def _live_view(self) -> memoryview:
        if self.released:
            raise ValueError("block already released: read its frames before release()")
        return self.view

    def frames(self) -> list[memoryview]:
        """The frames as memoryviews into the ring (valid until release; ValueError
        once released)."""
        view = self._live_view()
        # zip without strict: the walker returns equal lengths, and this is the hot loop.
        return [view[s:e] for s, e in zip(*self._bounds())]  # noqa: B905

    def _metadata(self) -> list[int]:
        # Read from the block itself on first use: most consumers never ask.
        if self._meta is None:
            if self.released:
                raise ValueError("block already released: read its records before release()")
            self._meta = self._ring._meta(self.index, self.count)
        return self._meta

    def records(self) -> list[RingFrame]:
        """The frames with timestamps and wire lengths (ValueError once released)."""
        starts, ends = self._bounds()
        m = self._metadata()
        view = self._live_view()
        return [RingFrame(view[s:e], sec, nsec, wire, ifindex, pp >> 16, pp & 0xFF)
                for s, e, wire, sec, nsec, ifindex, pp in
                zip(starts, ends, m[0::5], m[1::5], m[2::5], m[3::5], m[4::5], strict=True)]

    def wire_bytes(self) -> int:
        """Sum of the frames' lengths on the wire (ValueError once released)."""
        return sum(self._metadata()[0::5])

    def __iter__(self) -> Iterator[memoryview]:
        """The frames, as :meth:`frames` but built a slice at a time.

        Views the loop has finished with are freed before the next slice is
        built, so a loop that does not keep them reuses the same (cache-hot)
        memory for every slice instead of touching a whole block's worth.
        """
        view = self._live_view()
        starts, ends = self._bounds()
        step = _ITER_SLICE
        return chain.from_iterable(
            [view[s:e] for s, e in zip(starts[i: i + step], ends[i: i + step])]  # noqa: B905
            for i in range(0, self.count, step))

    def __len__(self) -> int:
        return self.count

    def pcap_records(self, snaplen: int, nanosecond: bool = False,
                     limit: int | None = None) -> bytes:
        """The block's first ``limit`` frames (all by default) as ready pcap
        records (see PcapWriter.write_records)."""
        self._live_view()
        if limit is not None and limit < self.count:
            return self._pcap_python(snaplen, nanosecond, max(0, limit))
        if _packet_speed is not None:
            lib, ffi = _packet_speed.lib, _packet_speed.ffi
            cap = len(self.view) + 16 * self.count
            out = ffi.new("uint8_t[]", cap)
            count = ffi.new("uint32_t *")
            nbytes = ffi.new("uint64_t *")
            size = lib.gpk_block_to_pcap(ffi.from_buffer(self.view), out, cap, snaplen,
                                         int(nanosecond), count, nbytes)
            return bytes(ffi.buffer(out, size))
        return self._pcap_python(snaplen, nanosecond, self.count)

    def _pcap_python(self, snaplen: int, nanosecond: bool, limit: int) -> bytes:
        parts: list[bytes | memoryview] = []
        starts, ends = self._bounds()
        m = self._metadata()
        for s, e, wire, sec, nsec in zip(starts[:limit], ends, m[0::5], m[1::5], m[2::5],
                                         strict=False):
            cap_len = min(e - s, snaplen)
            parts.append(struct.pack("=IIII", sec, nsec if nanosecond else nsec // 1000,
                                     cap_len, wire))
            parts.append(self.view[s:s + cap_len])
        return b"".join(parts)

    def write_pcap(self, fd: int, snaplen: int, nanosecond: bool = False,
                   limit: int | None = None) -> int:
        """Write the block's first ``limit`` frames (all by default) to ``fd`` as
        pcap records, in this machine's byte order; return how many were written.

        Compiled: the records are gathered straight from the ring, one
        writev per 64 KiB of them, with no Python work per frame. Raises
        OSError (the frames written before the failure are lost to the count).
        """
        if self.released:
            raise ValueError("block already released: write it before release()")
        limit = self.count if limit is None else max(0, min(limit, self.count))
        if _packet_speed is None:
            data = memoryview(self._pcap_python(snaplen, nanosecond, limit))
            while data:
                data = data[os.write(fd, data):]
            return limit
        ring = self._ring
        written = ring._ffi.new("uint32_t *")
        got = ring._lib.gpk_block_write(fd, ring._base + self.index * ring.block_size, snaplen,
                                        int(nanosecond), limit, *ring._pcap_scratch(), written)
        if got < 0:
            raise OSError(-got, f"cannot write pcap records: {os.strerror(-got)}")
        return int(got)

    def release(self) -> None:
        """Give the block back to the kernel; its frames' memory is reused."""
        if not self.released:
            self.released = True
            # Frames taken from the block pin the ring's mapping until they are
            # dropped; the Block itself no longer does, so keeping one around
            # never stops RxRing.close().
            with contextlib.suppress(BufferError):  # a caller's export of the view
                self.view.release()
            self._ring._release(self.index)

    def __enter__(self) -> Block:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class RxRing:
    """A TPACKET_V3 receive ring on packet socket ``sock``.

    Set it up before binding the socket to an interface (open with protocol
    0, create the ring, then bind with the ethertype wanted) so no frame
    slips past the ring. ``block_size`` must be a multiple of the page size
    and of ``frame_size``; memory used is ``block_size * block_count``.
    Raises OSError with the kernel's errno (EBUSY: the socket already has a
    ring; EINVAL: sizes the kernel refuses).
    """

    def __init__(self, sock: lowlevel.FileLike, block_size: int = 1 << 19,
                 block_count: int = 128, frame_size: int = 2048, timeout_ms: int = 10) -> None:
        if block_size % mmap.PAGESIZE or block_size % frame_size:
            raise ValueError(f"block_size {block_size} must be a multiple of the page size "
                             f"({mmap.PAGESIZE}) and of frame_size {frame_size}")
        self.sock = sock
        self.fd = lowlevel.fileno(sock)
        self.block_size = block_size
        self.block_count = block_count
        lowlevel.setsockopt(self.fd, "PACKET_VERSION", TPACKET_V3)
        frames = block_size * block_count // frame_size
        lowlevel.setsockopt(self.fd, "PACKET_RX_RING",
                            (block_size, block_count, frame_size, frames, timeout_ms, 0, 0))
        self._map = mmap.mmap(self.fd, block_size * block_count, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._map)
        self._base: Any = None
        self._next = 0
        self._received = 0
        self._dropped = 0
        # A frame slot holds at least the 48-byte header, its sockaddr_ll and 14 bytes
        # of Ethernet header, 16-byte aligned: 96 bytes.
        self._max = block_size // 96 + 1
        if _packet_speed is not None:
            self._ffi = _packet_speed.ffi
            self._lib = _packet_speed.lib
            self._base = self._ffi.from_buffer(self._map)
            # Reused for every block: ffi.unpack copies them into lists at once.
            self._starts_c = self._ffi.new("uint32_t[]", self._max)
            self._ends_c = self._ffi.new("uint32_t[]", self._max)
        self._stage: Any = None
        self.closed = False

    def _pcap_scratch(self) -> tuple[Any, int, Any, int]:
        """Staging and segment buffers for gpk_block_write, made on first use."""
        if self._stage is None:
            self._stage = (self._ffi.new("uint8_t[]", _PCAP_WRITE), _PCAP_WRITE,
                           self._ffi.new("struct iovec[]", _IOV_MAX), _IOV_MAX)
        return self._stage  # type: ignore[no-any-return]

    def _describe(self, index: int) -> tuple[list[int], list[int]]:
        off = index * self.block_size
        if _packet_speed is not None:
            starts, ends = self._starts_c, self._ends_c
            n = self._lib.gpk_walk_block(self._base + off, starts, ends, self._max)
            unpack = self._ffi.unpack
            return unpack(starts, n), unpack(ends, n)
        _, count, first = _BLOCK_HDR.unpack_from(self._map, off + 8)
        start_list: list[int] = []
        end_list: list[int] = []
        pos = first
        for _ in range(count):
            nxt, _sec, _nsec, snap, _wire, _st, mac, _net = _FRAME_HDR.unpack_from(
                self._map, off + pos)
            start_list.append(pos + mac)
            end_list.append(pos + mac + snap)
            pos += nxt
        return start_list, end_list

    def _meta(self, index: int, count: int) -> list[int]:
        """Five words per frame of block ``index``: wire length, sec, nsec, ifindex,
        ethertype << 16 | packet type."""
        off = index * self.block_size
        if _packet_speed is not None:
            meta = self._ffi.new("uint32_t[]", 5 * count)
            n = self._lib.gpk_block_meta(self._base + off, meta, count)
            return self._ffi.unpack(meta, 5 * n)  # type: ignore[no-any-return]
        (first,) = struct.unpack_from("=I", self._map, off + 16)
        meta_list: list[int] = []
        pos = first
        for _ in range(count):
            nxt, sec, nsec, _snap, wire, _st, _mac, _net = _FRAME_HDR.unpack_from(
                self._map, off + pos)
            (proto,) = struct.unpack_from("!H", self._map, off + pos + _LL_OFFSET + 2)
            ifindex, _hatype, pkttype = _LL.unpack_from(self._map, off + pos + _LL_OFFSET + 4)
            meta_list += (wire, sec, nsec, ifindex, (proto << 16) | pkttype)
            pos += nxt
        return meta_list

    def poll_block(self) -> Block | None:
        """Return the next retired block if there is one, without waiting."""
        index = self._next
        off = index * self.block_size
        status, count, _ = _BLOCK_HDR.unpack_from(self._map, off + 8)
        if not status & TP_STATUS_USER:
            return None
        self._next = (index + 1) % self.block_count
        return Block(self, index, self._view[off: off + self.block_size], min(count, self._max))

    def next_block(self, timeout: float | None = None) -> Block | None:
        """Wait cooperatively for the next block; None after ``timeout`` seconds."""
        if self.closed:
            raise ValueError("ring is closed")
        block = self.poll_block()
        while block is None:
            try:
                wait_read(self.fd, timeout=timeout, timeout_exc=_Timeout())
            except _Timeout:
                return None
            block = self.poll_block()
        return block

    def blocks(self, timeout: float | None = None) -> Iterator[Block]:
        """Yield blocks until ``timeout`` passes without one (forever if None).

        Each block is released when the loop asks for the next one.
        """
        while True:
            block = self.next_block(timeout)
            if block is None:
                return
            try:
                yield block
            finally:
                block.release()

    def _release(self, index: int) -> None:
        struct.pack_into("=I", self._map, index * self.block_size + 8, TP_STATUS_KERNEL)

    def stats(self) -> RingStats:
        """Frames delivered to the ring and dropped by the kernel (ring full), so far."""
        if not self.closed:
            total, drops = lowlevel.getsockopt(self.fd, "PACKET_STATISTICS")
            # The kernel resets its counters on each read and counts drops in the total.
            self._received += total - drops
            self._dropped += drops
        return RingStats(self._received, self._dropped)

    def close(self) -> None:
        """Unmap the ring; the socket stays open (its owner closes it)."""
        if self.closed:
            return
        self.stats()
        self._view.release()
        self._base = None
        try:
            self._map.close()
        except BufferError:
            # Frames may only be held by reference cycles (an exception's
            # traceback keeps its frames' locals alive): collect, then retry.
            gc.collect()
            try:
                self._map.close()
            except BufferError as err:
                raise BufferError("frames from this ring are still referenced; drop them "
                                  "(or copy with bytes()) and close again") from err
        self.closed = True


class _Timeout(Exception):
    pass


# Frames joined into one buffer and handed over per round: one TX ring kick,
# or sendmmsg calls of 1024. Small enough to stay in the CPU caches.
_CHUNK = 4096
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
_TX_DATA = 48  # TPACKET3_HDRLEN - sizeof(struct sockaddr_ll): where the kernel reads a frame
_VNET_HDR = 10  # sizeof(struct virtio_net_hdr)


class TxRing:
    """Batched sending through a TPACKET_V3 transmit ring (what trafgen does).

    Frames are copied into a ring shared with the kernel and flushed with
    one ``send()`` per batch. A slot holds ``max_frame`` bytes of frame:
    ``frame_size`` less 48 bytes of header, less 10 more with the compiled
    filler (a virtio_net_hdr that has the kernel copy each frame whole, much
    cheaper than lending it ring pages when the device is virtual). That
    header is PACKET_VNET_HDR on the socket: a plain ``recv()`` on it would
    return one before each frame too; ``copy_whole=False`` leaves it off.
    The socket must be bound to an interface and
    must not carry a receive ring (both rings would have to share one
    mapping): use :class:`BatchSender` there. ``qdisc_bypass`` as for
    :class:`BatchSender`. Raises OSError with the kernel's errno (EBUSY:
    the socket already has a ring).
    """

    def __init__(self, sock: lowlevel.FileLike, frame_size: int = 2048,
                 frame_count: int = 4096, qdisc_bypass: bool = False,
                 copy_whole: bool = True) -> None:
        if frame_size % 16 or frame_size < 128:
            raise ValueError(f"frame_size {frame_size} must be a multiple of 16, at least 128")
        self.sock = sock
        self.fd = lowlevel.fileno(sock)
        per_block = max(1, mmap.PAGESIZE * 16 // frame_size)
        block_size = per_block * frame_size
        if block_size % mmap.PAGESIZE:
            raise ValueError(f"frame_size {frame_size} must divide a multiple of the page size")
        blocks = max(1, frame_count // per_block)
        self.frame_size = frame_size
        self.frame_count = blocks * per_block
        lowlevel.setsockopt(self.fd, "PACKET_VERSION", TPACKET_V3)
        if qdisc_bypass:
            lowlevel.setsockopt(self.fd, "PACKET_QDISC_BYPASS", 1)
        # With the compiled filler, each slot starts with a virtio_net_hdr whose
        # hdr_len covers the whole frame: the kernel copies the frame into the
        # skb rather than lending it ring pages, which virtual devices (veth,
        # bridges to namespaces) would copy again a page at a time.
        self._vnet = 0
        if _packet_speed is not None and copy_whole:
            try:
                lowlevel.setsockopt(self.fd, "PACKET_VNET_HDR", 1)
                self._vnet = _VNET_HDR
            except OSError:
                self._vnet = 0
        self.max_frame = frame_size - _TX_DATA - self._vnet
        lowlevel.setsockopt(self.fd, "PACKET_TX_RING",
                            (block_size, blocks, frame_size, self.frame_count, 0, 0, 0))
        self._map = mmap.mmap(self.fd, block_size * blocks, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._cursor = 0
        self._base: Any = None
        self.sent = 0
        if _packet_speed is not None:
            # The filling path is chosen here, once: the slots' layout depends on it.
            self._ffi, self._lib = _packet_speed.ffi, _packet_speed.lib
            self._base = self._ffi.from_buffer(self._map)
            self._cursor_c = self._ffi.new("uint32_t *")
            self._used = self._ffi.new("size_t *")
        self.closed = False

    def send(self, frames: Sequence[bytes | bytearray | memoryview],
             timeout: float | None = None) -> int:
        """Send every frame in order; returns how many (all of them).

        Waits cooperatively while the ring is full. Raises ValueError for a
        frame larger than a slot, OSError with the kernel's errno otherwise.
        """
        if self.closed:
            raise ValueError("TX ring is closed")
        if not frames:
            return 0
        lengths = array.array("I", map(len, frames))
        largest = max(lengths)
        if largest > self.max_frame:
            raise ValueError(f"frame of {largest} bytes; this ring's slots hold "
                             f"{self.max_frame} (raise frame_size)")
        done = 0
        total = len(frames)
        if self._base is not None:
            lens = self._ffi.from_buffer("uint32_t[]", lengths)
            for start in range(0, total, _CHUNK):
                self._send_chunk(frames[start: start + _CHUNK], lens + start, timeout)
            done = total
        else:
            while done < total:
                if self._fill_python(frames[done]):
                    done += 1
                    if done % 64 == 0:
                        self._kick()
                else:
                    self._kick()
                    self._wait(timeout)
            self._kick()
        self.sent += done
        return done

    def _send_chunk(self, chunk: Sequence[bytes | bytearray | memoryview], lens: Any,
                    timeout: float | None) -> None:
        ffi, lib = self._ffi, self._lib
        data = b"".join(chunk)
        base = ffi.from_buffer(data)
        used = self._used
        count = len(chunk)
        done = pos = 0
        while done < count:
            queued = lib.gpk_tx_fill(self._base, self.frame_size, self.frame_count,
                                     self._cursor_c, base + pos, lens + done, count - done, used,
                                     self._vnet)
            if queued:
                pos += used[0]
                done += queued
            else:
                self._kick()
                self._wait(timeout)
        self._kick()

    def _fill_python(self, frame: bytes | bytearray | memoryview) -> bool:
        off = self._cursor * self.frame_size
        if struct.unpack_from("=I", self._map, off + 20)[0] != TP_STATUS_AVAILABLE:
            return False
        self._map[off + _TX_DATA: off + _TX_DATA + len(frame)] = frame
        struct.pack_into("=IIII", self._map, off + 12, len(frame), len(frame), 0, 0)
        struct.pack_into("=I", self._map, off, 0)
        struct.pack_into("=I", self._map, off + 20, TP_STATUS_SEND_REQUEST)
        self._cursor = (self._cursor + 1) % self.frame_count
        return True

    def _kick(self) -> None:
        """Ask the kernel to send every frame marked in the ring, without waiting."""
        try:
            os.write(self.fd, b"")
        except BlockingIOError:
            pass
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise OSError(err.errno, f"TX ring send: {err.strerror}") from err

    def _wait(self, timeout: float | None) -> None:
        # POLLOUT means the kernel's next slot is free again; a short poll
        # also covers a completion the kernel does not signal.
        try:
            wait_write(self.fd, timeout=0.01 if timeout is None else min(timeout, 0.01))
        except TimeoutError:
            pass
        except Exception as err:  # gevent raises its own timeout class
            if "timed out" not in str(err):
                raise

    def close(self) -> None:
        """Unmap the ring; the socket stays open."""
        if self.closed:
            return
        self.closed = True
        self._base = None
        self._map.close()


class BatchSender:
    """Send many frames per system call on a packet socket (``sendmmsg``).

    The socket must be bound to an interface. ``qdisc_bypass`` hands frames
    straight to the driver (PACKET_QDISC_BYPASS, as trafgen does by
    default): faster, but local packet taps on this host do not see them.
    """

    def __init__(self, sock: lowlevel.FileLike, qdisc_bypass: bool = False) -> None:
        self.sock = sock
        self.fd = lowlevel.fileno(sock)
        if qdisc_bypass:
            lowlevel.setsockopt(self.fd, "PACKET_QDISC_BYPASS", 1)
        self.sent = 0

    def send(self, frames: Sequence[bytes | bytearray | memoryview],
             timeout: float | None = None) -> int:
        """Send every frame in order; returns how many were sent (all of them).

        Waits cooperatively while the socket's send buffer or the device
        queue is full. Raises OSError with the kernel's errno for anything
        else (ENXIO: socket not bound; EMSGSIZE: a frame over the MTU).
        """
        if not frames:
            return 0
        if _packet_speed is None:
            return self._send_python(frames, timeout)
        # Lengths once for the whole call: C reads them in place.
        lens = _packet_speed.ffi.from_buffer("uint32_t[]", array.array("I", map(len, frames)))
        used = _packet_speed.ffi.new("size_t *")
        for start in range(0, len(frames), _CHUNK):
            self._send_chunk(frames[start: start + _CHUNK], lens + start, used, timeout)
        self.sent += len(frames)
        return len(frames)

    def _send_chunk(self, chunk: Sequence[bytes | bytearray | memoryview], lens: Any,
                    used: Any, timeout: float | None) -> None:
        ffi, lib = _packet_speed.ffi, _packet_speed.lib
        data = b"".join(chunk)
        base = ffi.from_buffer(data)
        count = len(chunk)
        done = pos = 0
        while done < count:
            rc = lib.gpk_send_batch(self.fd, base + pos, lens + done, count - done, used)
            if rc > 0:
                pos += used[0]
                done += rc
            else:
                self._wait(-rc, timeout)

    def _wait(self, code: int, timeout: float | None) -> None:
        if code in (errno.EAGAIN, errno.EWOULDBLOCK):
            wait_write(self.fd, timeout=timeout)
        elif code == errno.ENOBUFS:
            # The device queue is full; the socket still polls writable, so yield.
            gevent.sleep(0.0005)
        else:
            raise OSError(code, f"sendmmsg on packet socket: {errno.errorcode.get(code, code)}")

    def _send_python(self, frames: Sequence[bytes | bytearray | memoryview],
                     timeout: float | None) -> int:
        for frame in frames:
            while True:
                try:
                    lowlevel.write(self.fd, frame, timeout)
                    break
                except OSError as err:
                    if err.errno != errno.ENOBUFS:
                        raise
                    self._wait(err.errno, timeout)
        self.sent += len(frames)
        return len(frames)

