"""Classic pcap files: write and read, microsecond and nanosecond.

The format tcpdump, tshark and scapy's ``rdpcap`` read: a 24-byte global
header (magic ``a1b2c3d4`` for microseconds, ``a1b23c4d`` for nanoseconds,
version 2.4, snap length, link type) and 16-byte record headers (seconds,
fraction, captured length, original length). The reader accepts either byte
order; the writer uses the machine's, as libpcap does.
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol, cast

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "PcapFormatError",
    "PcapHeader",
    "PcapReader",
    "PcapRecord",
    "PcapWriter",
    "RingBlock",
    "read_pcap",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
DEFAULT_SNAPLEN = 262144
_GLOBAL = struct.Struct("=IHHiIII")
_RECORD = struct.Struct("=IIII")


class RingBlock(Protocol):
    """What :meth:`PcapWriter.write_block` needs of a block (gprocket.packet.ring.Block)."""

    count: int

    def write_pcap(self, fd: int, snaplen: int, nanosecond: bool = False,
                   limit: int | None = None) -> int: ...

    def pcap_records(self, snaplen: int, nanosecond: bool = False,
                     limit: int | None = None) -> bytes: ...


class PcapFormatError(ValueError):
    """The file is not a classic pcap file, or is cut short."""


@dataclass(frozen=True)
class PcapHeader:
    """The file's global header."""

    linktype: int
    snaplen: int
    nanosecond: bool
    version: tuple[int, int] = (2, 4)
    byteorder: str = "="


@dataclass(frozen=True)
class PcapRecord:
    """One captured frame: ``frac`` is microseconds or nanoseconds per the header."""

    sec: int
    frac: int
    orig_len: int
    data: bytes
    nanosecond: bool = False

    @property
    def timestamp(self) -> float:
        """Seconds since the epoch."""
        return self.sec + self.frac / (1e9 if self.nanosecond else 1e6)

    @property
    def truncated(self) -> bool:
        """The frame was longer than what was captured."""
        return self.orig_len > len(self.data)


def _open(file: str | os.PathLike[str] | BinaryIO, mode: str) -> tuple[BinaryIO, bool]:
    if isinstance(file, str | os.PathLike):
        return cast(BinaryIO, open(file, mode)), True
    return file, False


class PcapWriter:
    """Write frames to a pcap file (a path or a binary file object).

    Records are buffered; :meth:`flush` pushes them to the file and
    :meth:`close` (or leaving a ``with`` block) finishes it, so a file closed
    after Ctrl-C is complete.
    """

    def __init__(self, file: str | os.PathLike[str] | BinaryIO,
                 linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN,
                 nanosecond: bool = False, buffer_size: int = 1 << 20) -> None:
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise ValueError(f"snaplen {snaplen} must be positive")
        self.header = PcapHeader(linktype, snaplen, nanosecond)
        self._file, self._owned = _open(file, "wb")
        self._buffer = bytearray()
        self._limit = buffer_size
        self._scale = 1_000_000_000 if nanosecond else 1_000_000
        self.count = 0
        self.closed = False
        self._buffer += _GLOBAL.pack(MAGIC_NSEC if nanosecond else MAGIC_USEC, 2, 4, 0, 0,
                                     snaplen, linktype)
        self.flush()

    def write(self, data: bytes | bytearray | memoryview, sec: int | None = None,
              frac: int = 0, orig_len: int | None = None) -> None:
        """Append one frame, cut to the snap length; ``sec=None`` stamps it now.

        ``frac`` is microseconds, or nanoseconds for a nanosecond file.
        """
        if sec is None:
            now = time.time_ns()
            sec, frac = divmod(now, 1_000_000_000)
            if self._scale != 1_000_000_000:
                frac //= 1000
        if not 0 <= frac < self._scale:
            raise ValueError(f"fraction {frac} outside 0..{self._scale - 1}")
        length = len(data)
        caplen = min(length, self.header.snaplen)
        self._buffer += _RECORD.pack(sec, frac, caplen,
                                     length if orig_len is None else orig_len)
        self._buffer += data[:caplen]
        self.count += 1
        if len(self._buffer) >= self._limit:
            self.flush()

    def write_records(self, records: bytes | bytearray | memoryview, count: int) -> None:
        """Append ``count`` ready-made records (header + data each) in this file's format."""
        self._buffer += records
        self.count += count
        if len(self._buffer) >= self._limit:
            self.flush()

    def write_block(self, block: RingBlock, limit: int | None = None) -> int:
        """Append the first ``limit`` frames (all by default) of a receive-ring
        block (gprocket.packet.ring.Block, not yet released), cut to this file's snap
        length; return how many.

        To a file with a descriptor the records go straight from the ring
        (Block.write_pcap: compiled, one writev per 64 KiB); to any other file
        object through this writer's buffer.
        """
        fd = self._descriptor()
        nano = self.header.nanosecond
        if fd is None:
            records = block.pcap_records(self.header.snaplen, nano, limit)
            count = block.count if limit is None else max(0, min(limit, block.count))
            self.write_records(records, count)
            return count
        self.flush()
        count = block.write_pcap(fd, self.header.snaplen, nano, limit)
        self.count += count
        return count

    def _descriptor(self) -> int | None:
        """The file's descriptor, when records may be written to it directly."""
        try:
            return self._file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            return None

    def flush(self) -> None:
        """Write buffered records to the file and flush it."""
        if self._buffer:
            self._file.write(self._buffer)
            self._buffer.clear()
        self._file.flush()

    def close(self) -> None:
        """Flush and close (the file object too when this writer opened it)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self._owned:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PcapReader:
    """Iterate over the records of a pcap file (a path or a binary file object).

    Raises PcapFormatError for an unknown magic number or a record cut short.
    """

    def __init__(self, file: str | os.PathLike[str] | BinaryIO) -> None:
        self._file, self._owned = _open(file, "rb")
        raw = self._file.read(_GLOBAL.size)
        if len(raw) < _GLOBAL.size:
            self.close()
            raise PcapFormatError("file shorter than a pcap global header")
        for order in ("<", ">"):
            (magic,) = struct.unpack_from(order + "I", raw)
            if magic in (MAGIC_USEC, MAGIC_NSEC):
                break
        else:
            self.close()
            raise PcapFormatError(f"not a classic pcap file (magic {raw[:4].hex()}); "
                                  f"pcapng is not supported")
        _, major, minor, _, _, snaplen, linktype = struct.unpack(order + "IHHiIII", raw)
        self.header = PcapHeader(linktype, snaplen, magic == MAGIC_NSEC, (major, minor), order)
        self._record = struct.Struct(order + "IIII")

    def __iter__(self) -> Iterator[PcapRecord]:
        nano = self.header.nanosecond
        read = self._file.read
        size = self._record.size
        while True:
            head = read(size)
            if not head:
                return
            if len(head) < size:
                raise PcapFormatError("record header cut short")
            sec, frac, caplen, orig = self._record.unpack(head)
            data = read(caplen)
            if len(data) < caplen:
                raise PcapFormatError(f"record data cut short ({len(data)} of {caplen})")
            yield PcapRecord(sec, frac, orig, data, nano)

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owned:
            self._file.close()

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_pcap(file: str | os.PathLike[str] | bytes) -> tuple[PcapHeader, list[PcapRecord]]:
    """Read a whole pcap file (a path, or the file's bytes)."""
    source: str | os.PathLike[str] | BinaryIO = (
        io.BytesIO(file) if isinstance(file, bytes) else file)
    with PcapReader(source) as reader:
        return reader.header, list(reader)

