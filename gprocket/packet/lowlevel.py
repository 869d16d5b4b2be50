"""Low-level socket interface: what Python's ``socket`` module lacks.

procket's promise was "low level socket manipulation using socket/3, ioctl/3,
setsockopt/4". This module gives the same on any socket object or plain
descriptor, cooperatively under gevent:

* :func:`recvmsg` / :func:`sendmsg` with control messages as ``(level, type, data)``;
* :func:`read`, :func:`write`, :func:`readv`, :func:`writev` on any descriptor;
* :func:`setsockopt` / :func:`getsockopt` by symbolic name (``"SO_REUSEPORT"``,
  ``"PACKET_ADD_MEMBERSHIP"``) or ``(level, number)``; an unknown name is a
  :class:`ValueError` that names it;
* :func:`ioctl` with integers, in/out buffers (:func:`ioctl_buffer`) or cffi
  structures that hold pointers to memory the call fills (:func:`alloc`,
  :func:`buf` are procket's ``alloc``/``buf``);
* :func:`encode_sockaddr` / :func:`decode_sockaddr` for inet, inet6, packet, unix.

Numbers are Linux's generic ones (x86-64, arm64, riscv); Linux only.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar

from gevent.socket import wait_read, wait_write

from gprocket._fdio import nonblocking_call
from gprocket.packet._ffi import ffi, libc

__all__ = [
    "IOCTLS",
    "OPTIONS",
    "Cmsg",
    "FileLike",
    "Inet6Address",
    "InetAddress",
    "Message",
    "PacketAddress",
    "SockAddr",
    "SockOpt",
    "UnixAddress",
    "alloc",
    "buf",
    "cmsg_space",
    "decode_sockaddr",
    "encode_sockaddr",
    "fileno",
    "getsockopt",
    "ioctl",
    "ioctl_buffer",
    "ioctl_number",
    "option",
    "read",
    "readv",
    "recvmsg",
    "sendmsg",
    "setsockopt",
    "write",
    "writev",
]

T = TypeVar("T")
FileLike = socket.socket | int

SOL_SOCKET = socket.SOL_SOCKET
SOL_IP = 0
SOL_TCP = 6
SOL_UDP = 17
SOL_IPV6 = 41
SOL_ICMPV6 = 58
SOL_RAW = 255
SOL_PACKET = 263


@dataclass(frozen=True)
class SockOpt:
    """One socket option: where it lives and how its value is encoded.

    ``fmt`` is a :mod:`struct` format for fixed structures (``"i"`` for the
    plain integer options), ``"bytes"`` for raw byte strings, or ``"fprog"``
    for a classic BPF program (a ``sock_fprog`` that points at the
    instructions, built with cffi).
    """

    name: str
    level: int
    number: int
    fmt: str = "i"
    size: int = 0

    @property
    def buffer_size(self) -> int:
        """Bytes to ask :func:`getsockopt` for by default."""
        if self.size:
            return self.size
        if self.fmt in ("bytes", "fprog"):
            return 256
        return struct.calcsize(self.fmt)


def _opts(level: int, fmt: str, table: dict[str, int], size: int = 0) -> dict[str, SockOpt]:
    return {name: SockOpt(name, level, number, fmt, size) for name, number in table.items()}


OPTIONS: dict[str, SockOpt] = {
    **_opts(SOL_SOCKET, "i", {
        "SO_DEBUG": 1, "SO_REUSEADDR": 2, "SO_TYPE": 3, "SO_ERROR": 4, "SO_DONTROUTE": 5,
        "SO_BROADCAST": 6, "SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_KEEPALIVE": 9,
        "SO_OOBINLINE": 10, "SO_NO_CHECK": 11, "SO_PRIORITY": 12, "SO_REUSEPORT": 15,
        "SO_PASSCRED": 16, "SO_RCVLOWAT": 18, "SO_SNDLOWAT": 19, "SO_TIMESTAMP": 29,
        "SO_ACCEPTCONN": 30, "SO_SNDBUFFORCE": 32, "SO_RCVBUFFORCE": 33,
        "SO_TIMESTAMPNS": 35, "SO_MARK": 36, "SO_PROTOCOL": 38, "SO_DOMAIN": 39,
        "SO_RXQ_OVFL": 40, "SO_LOCK_FILTER": 44, "SO_BUSY_POLL": 46,
        "SO_INCOMING_CPU": 49, "SO_DETACH_FILTER": 27,
    }),
    "SO_LINGER": SockOpt("SO_LINGER", SOL_SOCKET, 13, "ii"),
    "SO_PEERCRED": SockOpt("SO_PEERCRED", SOL_SOCKET, 17, "iII"),
    "SO_RCVTIMEO": SockOpt("SO_RCVTIMEO", SOL_SOCKET, 20, "qq"),
    "SO_SNDTIMEO": SockOpt("SO_SNDTIMEO", SOL_SOCKET, 21, "qq"),
    "SO_BINDTODEVICE": SockOpt("SO_BINDTODEVICE", SOL_SOCKET, 25, "bytes", 16),
    "SO_ATTACH_FILTER": SockOpt("SO_ATTACH_FILTER", SOL_SOCKET, 26, "fprog"),
    **_opts(SOL_IP, "i", {
        "IP_TOS": 1, "IP_TTL": 2, "IP_HDRINCL": 3, "IP_RECVOPTS": 6, "IP_PKTINFO": 8,
        "IP_MTU_DISCOVER": 10, "IP_RECVERR": 11, "IP_RECVTTL": 12, "IP_RECVTOS": 13,
        "IP_MTU": 14, "IP_FREEBIND": 15, "IP_TRANSPARENT": 19,
        "IP_BIND_ADDRESS_NO_PORT": 24, "IP_MULTICAST_TTL": 33, "IP_MULTICAST_LOOP": 34,
    }),
    "IP_OPTIONS": SockOpt("IP_OPTIONS", SOL_IP, 4, "bytes", 40),
    "IP_ADD_MEMBERSHIP": SockOpt("IP_ADD_MEMBERSHIP", SOL_IP, 35, "4s4s"),
    "IP_DROP_MEMBERSHIP": SockOpt("IP_DROP_MEMBERSHIP", SOL_IP, 36, "4s4s"),
    **_opts(SOL_IPV6, "i", {
        "IPV6_CHECKSUM": 7, "IPV6_UNICAST_HOPS": 16, "IPV6_MULTICAST_IF": 17,
        "IPV6_MULTICAST_HOPS": 18, "IPV6_MULTICAST_LOOP": 19, "IPV6_MTU_DISCOVER": 23,
        "IPV6_MTU": 24, "IPV6_RECVERR": 25, "IPV6_V6ONLY": 26, "IPV6_RECVPKTINFO": 49,
        "IPV6_RECVHOPLIMIT": 51, "IPV6_RECVTCLASS": 66, "IPV6_TCLASS": 67,
    }),
    "IPV6_JOIN_GROUP": SockOpt("IPV6_JOIN_GROUP", SOL_IPV6, 20, "16sI"),
    "IPV6_LEAVE_GROUP": SockOpt("IPV6_LEAVE_GROUP", SOL_IPV6, 21, "16sI"),
    "ICMP6_FILTER": SockOpt("ICMP6_FILTER", SOL_ICMPV6, 1, "bytes", 32),
    "ICMP_FILTER": SockOpt("ICMP_FILTER", SOL_RAW, 1, "I"),
    **_opts(SOL_TCP, "i", {
        "TCP_NODELAY": 1, "TCP_MAXSEG": 2, "TCP_CORK": 3, "TCP_KEEPIDLE": 4,
        "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 6, "TCP_QUICKACK": 12, "TCP_USER_TIMEOUT": 18,
        "TCP_FASTOPEN": 23,
    }),
    "TCP_INFO": SockOpt("TCP_INFO", SOL_TCP, 11, "bytes", 232),
    "TCP_CONGESTION": SockOpt("TCP_CONGESTION", SOL_TCP, 13, "bytes", 16),
    **_opts(SOL_UDP, "i", {"UDP_CORK": 1, "UDP_SEGMENT": 103, "UDP_GRO": 104}),
    **_opts(SOL_PACKET, "i", {
        "PACKET_RECV_OUTPUT": 3, "PACKET_COPY_THRESH": 7, "PACKET_AUXDATA": 8,
        "PACKET_ORIGDEV": 9, "PACKET_VERSION": 10, "PACKET_HDRLEN": 11,
        "PACKET_RESERVE": 12, "PACKET_LOSS": 14, "PACKET_VNET_HDR": 15,
        "PACKET_TX_TIMESTAMP": 16, "PACKET_TIMESTAMP": 17, "PACKET_FANOUT": 18,
        "PACKET_TX_HAS_OFF": 19, "PACKET_QDISC_BYPASS": 20, "PACKET_IGNORE_OUTGOING": 23,
    }),
    # struct packet_mreq: ifindex, type, alen, address[8]
    "PACKET_ADD_MEMBERSHIP": SockOpt("PACKET_ADD_MEMBERSHIP", SOL_PACKET, 1, "iHH8s"),
    "PACKET_DROP_MEMBERSHIP": SockOpt("PACKET_DROP_MEMBERSHIP", SOL_PACKET, 2, "iHH8s"),
    # struct tpacket_req3 (a tpacket_req is its first four fields)
    "PACKET_RX_RING": SockOpt("PACKET_RX_RING", SOL_PACKET, 5, "IIIIIII"),
    "PACKET_TX_RING": SockOpt("PACKET_TX_RING", SOL_PACKET, 13, "IIIIIII"),
    # struct tpacket_stats: packets, drops (reading resets the kernel's counters)
    "PACKET_STATISTICS": SockOpt("PACKET_STATISTICS", SOL_PACKET, 6, "II"),
}

_BY_NUMBER = {(o.level, o.number): o for o in OPTIONS.values()}


def option(name: str | tuple[int, int]) -> SockOpt:
    """Return the option named ``name`` (or found by ``(level, number)``).

    Raises ValueError for a name this table does not know, naming it and the
    way out (pass ``(level, number)`` to use raw bytes).
    """
    if isinstance(name, tuple):
        level, number = name
        return _BY_NUMBER.get((level, number), SockOpt(f"({level}, {number})", level, number,
                                                        "bytes"))
    if not isinstance(name, str):
        raise TypeError(f"socket option must be a name or (level, number), not "
                        f"{type(name).__name__}")
    found = OPTIONS.get(name.upper())
    if found is None:
        near = sorted(n for n in OPTIONS if n.split("_", 1)[0] == name.upper().split("_", 1)[0])
        hint = f" (known: {', '.join(near)})" if near else ""
        raise ValueError(f"unknown socket option {name!r}{hint}; pass (level, number) "
                         f"with a bytes value for options outside the table")
    return found


def fileno(sock: FileLike) -> int:
    """Return the descriptor of a socket object or an int descriptor."""
    if isinstance(sock, int):
        if sock < 0:
            raise ValueError(f"invalid descriptor {sock}")
        return sock
    if hasattr(sock, "fileno"):
        return int(sock.fileno())
    raise TypeError(f"expected a socket or a descriptor, not {type(sock).__name__}")


def _with_socket(sock: FileLike, op: Callable[[socket.socket], T]) -> T:
    """Run ``op`` on a socket object; a bare descriptor is wrapped, never closed."""
    if isinstance(sock, socket.socket):
        return op(sock)
    fd = fileno(sock)
    wrapper = socket.socket(fileno=fd)
    try:
        return op(wrapper)
    finally:
        wrapper.detach()


def _encode_value(opt: SockOpt, value: Any) -> bytes | int:
    if opt.fmt == "fprog":
        raise TypeError("SO_ATTACH_FILTER is encoded by _fprog")
    if opt.fmt == "bytes":
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise TypeError(f"{opt.name} takes bytes, not {type(value).__name__}")
    if opt.fmt == "i":
        if isinstance(value, bool | int):
            return int(value)
        if isinstance(value, bytes | bytearray) and len(value) == 4:
            return bytes(value)
        raise TypeError(f"{opt.name} takes an int, not {type(value).__name__}")
    if isinstance(value, bytes | bytearray):
        if len(value) != struct.calcsize(opt.fmt):
            raise ValueError(f"{opt.name} takes {struct.calcsize(opt.fmt)} bytes, "
                             f"got {len(value)}")
        return bytes(value)
    if not isinstance(value, tuple):
        raise TypeError(f"{opt.name} takes a tuple for struct {opt.fmt!r}, "
                        f"not {type(value).__name__}")
    return struct.pack(opt.fmt, *value)


def _fprog_call(sock: socket.socket, opt: SockOpt, program: bytes) -> None:
    if len(program) % 8 or not program:
        raise ValueError("a BPF program is a non-empty multiple of 8 bytes "
                         "(struct sock_filter); build it with gprocket.packet.bpf")
    count = len(program) // 8
    insns = ffi.new("struct sock_filter[]", count)
    ffi.memmove(insns, program, len(program))
    prog = ffi.new("struct sock_fprog *", {"len": count, "filter": insns})
    # The kernel copies the instructions during the call; insns stays alive until then.
    sock.setsockopt(opt.level, opt.number, bytes(ffi.buffer(prog)))


def setsockopt(sock: FileLike, name: str | tuple[int, int], value: Any) -> None:
    """Set option ``name`` on ``sock`` (a socket or a descriptor).

    ``value`` is an int for integer options, bytes/str for byte options, a
    tuple (or packed bytes) for structures, assembled BPF bytes for
    ``SO_ATTACH_FILTER``. Raises ValueError for unknown names, TypeError for a
    value of the wrong kind, OSError with the kernel's errno (context added).
    """
    opt = option(name)

    def op(s: socket.socket) -> None:
        try:
            if opt.fmt == "fprog":
                _fprog_call(s, opt, bytes(value))
            else:
                s.setsockopt(opt.level, opt.number, _encode_value(opt, value))
        except OSError as err:
            raise OSError(err.errno, f"setsockopt {opt.name}: {err.strerror}") from err

    _with_socket(sock, op)


def getsockopt(sock: FileLike, name: str | tuple[int, int], size: int | None = None) -> Any:
    """Read option ``name``: an int, a tuple for structures, or bytes.

    Raises ValueError for unknown names and OSError with the kernel's errno.
    """
    opt = option(name)

    def op(s: socket.socket) -> Any:
        try:
            if opt.fmt == "i":
                return s.getsockopt(opt.level, opt.number)
            raw = s.getsockopt(opt.level, opt.number, size or opt.buffer_size)
        except OSError as err:
            raise OSError(err.errno, f"getsockopt {opt.name}: {err.strerror}") from err
        if opt.fmt in ("bytes", "fprog"):
            return raw
        return struct.unpack(opt.fmt, raw[: struct.calcsize(opt.fmt)])

    return _with_socket(sock, op)


# ---------------------------------------------------------------- sockaddr

@dataclass(frozen=True)
class InetAddress:
    """``struct sockaddr_in``."""

    host: str
    port: int = 0


@dataclass(frozen=True)
class Inet6Address:
    """``struct sockaddr_in6``."""

    host: str
    port: int = 0
    flowinfo: int = 0
    scope_id: int = 0


@dataclass(frozen=True)
class PacketAddress:
    """``struct sockaddr_ll``: ``protocol`` is the ethertype in host order."""

    ifindex: int
    protocol: int = 0
    hatype: int = 0
    pkttype: int = 0
    address: bytes = b""


@dataclass(frozen=True)
class UnixAddress:
    """``struct sockaddr_un``; an abstract name starts with a NUL byte."""

    path: bytes


SockAddr = InetAddress | Inet6Address | PacketAddress | UnixAddress


def encode_sockaddr(addr: SockAddr) -> bytes:
    """Encode ``addr`` as the kernel's ``struct sockaddr_*`` bytes.

    Raises ValueError for an address that does not fit (port out of range,
    hardware address over 8 bytes, unix path over 107 bytes).
    """
    if isinstance(addr, InetAddress):
        _check_port(addr.port)
        return struct.pack("=H", socket.AF_INET) + struct.pack(
            "!H4s8x", addr.port, socket.inet_pton(socket.AF_INET, addr.host))
    if isinstance(addr, Inet6Address):
        _check_port(addr.port)
        return (struct.pack("=H", socket.AF_INET6)
                + struct.pack("!HI16s", addr.port, addr.flowinfo,
                              socket.inet_pton(socket.AF_INET6, addr.host))
                + struct.pack("=I", addr.scope_id))
    if isinstance(addr, PacketAddress):
        if len(addr.address) > 8:
            raise ValueError(f"hardware address of {len(addr.address)} bytes; at most 8")
        return (struct.pack("=H", socket.AF_PACKET) + struct.pack("!H", addr.protocol)
                + struct.pack("=iHBB8s", addr.ifindex, addr.hatype, addr.pkttype,
                              len(addr.address), addr.address))
    if isinstance(addr, UnixAddress):
        if len(addr.path) > 107:
            raise ValueError(f"unix path of {len(addr.path)} bytes; at most 107")
        return struct.pack("=H", socket.AF_UNIX) + addr.path
    raise TypeError(f"not a socket address: {type(addr).__name__}")


def decode_sockaddr(data: bytes) -> SockAddr:
    """Decode kernel ``struct sockaddr_*`` bytes (family read from the bytes).

    Raises ValueError for a family outside inet/inet6/packet/unix or a
    truncated structure.
    """
    if len(data) < 2:
        raise ValueError("sockaddr shorter than its family field")
    (family,) = struct.unpack_from("=H", data)
    try:
        if family == socket.AF_INET:
            port, raw = struct.unpack_from("!H4s", data, 2)
            return InetAddress(socket.inet_ntop(socket.AF_INET, raw), port)
        if family == socket.AF_INET6:
            port, flow, raw = struct.unpack_from("!HI16s", data, 2)
            (scope,) = struct.unpack_from("=I", data, 24)
            return Inet6Address(socket.inet_ntop(socket.AF_INET6, raw), port, flow, scope)
        if family == socket.AF_PACKET:
            (proto,) = struct.unpack_from("!H", data, 2)
            ifindex, hatype, pkttype, halen, hw = struct.unpack_from("=iHBB8s", data, 4)
            return PacketAddress(ifindex, proto, hatype, pkttype, hw[: min(halen, 8)])
    except struct.error as err:
        raise ValueError(f"truncated sockaddr for family {family}: {len(data)} bytes") from err
    if family == socket.AF_UNIX:
        path = data[2:]
        if path[:1] != b"\0":
            path = path.split(b"\0", 1)[0]
        return UnixAddress(path)
    raise ValueError(f"sockaddr family {family} is not inet, inet6, packet or unix")


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0..65535")


def _to_python_address(sock: socket.socket, addr: SockAddr | tuple[Any, ...] | str | bytes
                       ) -> Any:
    """Python's socket methods want family-specific tuples."""
    if isinstance(addr, InetAddress):
        return (addr.host, addr.port)
    if isinstance(addr, Inet6Address):
        return (addr.host, addr.port, addr.flowinfo, addr.scope_id)
    if isinstance(addr, PacketAddress):
        return (socket.if_indextoname(addr.ifindex), addr.protocol, addr.pkttype, addr.hatype,
                addr.address)
    if isinstance(addr, UnixAddress):
        return addr.path
    return addr


def _from_python_address(family: int, addr: Any) -> SockAddr | None:
    if not addr:
        return None
    if family == socket.AF_INET:
        return InetAddress(addr[0], addr[1])
    if family == socket.AF_INET6:
        return Inet6Address(addr[0], addr[1], addr[2], addr[3])
    if family == socket.AF_PACKET:
        ifname, proto, pkttype, hatype, hw = addr
        return PacketAddress(socket.if_nametoindex(ifname), proto, hatype, pkttype, hw)
    if family == socket.AF_UNIX:
        return UnixAddress(addr.encode() if isinstance(addr, str) else bytes(addr))
    return None


# ---------------------------------------------------------------- cooperative I/O

def _wait(fd: int, for_write: bool, timeout: float | None) -> None:
    waiter = wait_write if for_write else wait_read
    waiter(fd, timeout=timeout, timeout_exc=TimeoutError(errno.ETIMEDOUT,
                                                         f"descriptor {fd} not ready"))


def _cooperative(fd: int, for_write: bool, timeout: float | None, call: Callable[..., T],
                 *args: Any) -> T:
    """Run a non-blocking ``call(*args)``; on EAGAIN park this greenlet until ``fd`` is ready."""
    if os.get_blocking(fd):
        # A blocking descriptor would stall the hub inside the call: wait first.
        _wait(fd, for_write, timeout)
    return nonblocking_call(partial(_wait, fd, for_write), timeout, call, *args)


class Cmsg(NamedTuple):
    """One control message: ``(level, type, data)``."""

    level: int
    type: int
    data: bytes


@dataclass(frozen=True)
class Message:
    """What :func:`recvmsg` received."""

    data: bytes
    ancillary: tuple[Cmsg, ...]
    flags: int
    address: SockAddr | None

    @property
    def truncated(self) -> bool:
        """True when the datagram was longer than the buffer (MSG_TRUNC)."""
        return bool(self.flags & socket.MSG_TRUNC)


def cmsg_space(size: int) -> int:
    """Bytes of ancillary buffer needed for one control message of ``size`` data bytes."""
    return socket.CMSG_SPACE(size)


def recvmsg(sock: FileLike, bufsize: int = 65536, ancbufsize: int = 0, flags: int = 0,
            timeout: float | None = None) -> Message:
    """Receive one message with its control messages, without blocking the hub.

    Raises TimeoutError (errno ETIMEDOUT) after ``timeout`` seconds, OSError
    with the kernel's errno otherwise.
    """
    fd = fileno(sock)

    def op(s: socket.socket) -> Message:
        data, anc, mflags, addr = _cooperative(
            fd, False, timeout, s.recvmsg, bufsize, ancbufsize, flags | socket.MSG_DONTWAIT)
        return Message(data, tuple(Cmsg(*c) for c in anc), mflags,
                       _from_python_address(s.family, addr))

    # Always through a fresh wrapper of the descriptor: a socket object with a
    # timeout would poll inside the call and block the hub.
    return _with_socket(fd, op)


def sendmsg(sock: FileLike, buffers: Sequence[bytes | bytearray | memoryview],
            ancillary: Iterable[tuple[int, int, bytes]] = (), flags: int = 0, *,
            address: SockAddr | tuple[Any, ...] | None = None,
            timeout: float | None = None) -> int:
    """Send ``buffers`` as one message with control messages; returns bytes sent.

    Raises TimeoutError after ``timeout`` seconds, OSError with the kernel's errno.
    """
    fd = fileno(sock)
    anc = [(int(level), int(kind), bytes(data)) for level, kind, data in ancillary]

    def op(s: socket.socket) -> int:
        args: tuple[Any, ...] = (buffers, anc, flags | socket.MSG_DONTWAIT)
        if address is not None:
            args += (_to_python_address(s, address),)
        return _cooperative(fd, True, timeout, s.sendmsg, *args)

    return _with_socket(fd, op)


def read(fd: FileLike, size: int, timeout: float | None = None) -> bytes:
    """Read up to ``size`` bytes from any descriptor cooperatively."""
    n = fileno(fd)
    return _cooperative(n, False, timeout, os.read, n, size)


def write(fd: FileLike, data: bytes | bytearray | memoryview,
          timeout: float | None = None) -> int:
    """Write ``data`` to any descriptor cooperatively; returns bytes written."""
    n = fileno(fd)
    return _cooperative(n, True, timeout, os.write, n, data)


def readv(fd: FileLike, buffers: Sequence[bytearray | memoryview],
          timeout: float | None = None) -> int:
    """Scatter-read into ``buffers`` (filled in order); returns bytes read."""
    n = fileno(fd)
    return _cooperative(n, False, timeout, os.readv, n, buffers)


def writev(fd: FileLike, buffers: Sequence[bytes | bytearray | memoryview],
           timeout: float | None = None) -> int:
    """Gather-write ``buffers`` in one call; returns bytes written."""
    n = fileno(fd)
    return _cooperative(n, True, timeout, os.writev, n, buffers)


# ---------------------------------------------------------------- ioctl

IOCTLS: dict[str, int] = {
    "FIONREAD": 0x541B, "SIOCINQ": 0x541B, "SIOCOUTQ": 0x5411, "FIONBIO": 0x5421,
    "SIOCGIFNAME": 0x8910, "SIOCGIFCONF": 0x8912, "SIOCGIFFLAGS": 0x8913,
    "SIOCSIFFLAGS": 0x8914, "SIOCGIFADDR": 0x8915, "SIOCGIFNETMASK": 0x891B,
    "SIOCGIFMTU": 0x8921, "SIOCSIFMTU": 0x8922, "SIOCGIFHWADDR": 0x8927,
    "SIOCGIFINDEX": 0x8933, "SIOCETHTOOL": 0x8946, "SIOCGSTAMP": 0x8906,
    "SIOCGSTAMPNS": 0x8907,
}


def ioctl_number(request: str | int) -> int:
    """Resolve a request name from :data:`IOCTLS` (or pass a number through)."""
    if isinstance(request, int):
        return request
    try:
        return IOCTLS[request.upper()]
    except KeyError:
        raise ValueError(f"unknown ioctl {request!r}; pass the request number") from None


def _ioctl_name(request: str | int) -> str:
    return request if isinstance(request, str) else hex(request)


def alloc(ctype: str, init: Any = None) -> Any:
    """Allocate a zeroed C object (``alloc("struct ifreq *")``), owned by Python.

    procket's ``alloc``: the memory lives as long as the returned object.
    """
    return ffi.new(ctype, init)


def buf(cdata: Any, size: int | None = None) -> bytes:
    """Copy the bytes of a C object (procket's ``buf``)."""
    return bytes(ffi.buffer(cdata, size) if size is not None else ffi.buffer(cdata))


def ioctl(fd: FileLike, request: str | int, arg: Any = 0) -> int:
    """Call ioctl(2) with an integer or a cffi pointer (from :func:`alloc`).

    The structure behind a pointer may itself hold pointers to memory the
    kernel fills (``struct ifconf``, ``ifreq.ifr_data`` for SIOCETHTOOL):
    keep those buffers referenced until the call returns. Returns the
    call's result; raises OSError with the kernel's errno.
    """
    number = ioctl_number(request)
    n = fileno(fd)
    if isinstance(arg, bool | int):
        rc = libc.ioctl(n, number, ffi.cast("unsigned long", arg))
    elif isinstance(arg, ffi.CData):
        rc = libc.ioctl(n, number, ffi.cast("void *", arg))
    else:
        raise TypeError(f"ioctl argument must be an int or a cffi pointer, not "
                        f"{type(arg).__name__}; use ioctl_buffer for bytes")
    if rc < 0:
        code = ffi.errno
        raise OSError(code, f"ioctl {_ioctl_name(request)}: {os.strerror(code)}")
    return int(rc)


def ioctl_buffer(fd: FileLike, request: str | int, data: bytes | bytearray) -> bytes:
    """Call ioctl(2) on a copy of ``data`` and return the buffer as the kernel left it."""
    mem = ffi.new("char[]", bytes(data) or b"\0")
    ioctl(fd, request, mem)
    return bytes(ffi.buffer(mem, max(len(data), 1)))[: len(data)]
