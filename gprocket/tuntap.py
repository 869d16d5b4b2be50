"""TUN/TAP devices with cooperative packet I/O, and allowlisted character devices.

``open()`` creates a new TUN (IP packets) or TAP (Ethernet frames) device
through the privilege ladder: in this process when it holds CAP_NET_ADMIN
(root, or the capabilities rung), else the helper under its policy. An
unprivileged program cannot configure the interface it was handed, so the
request can ask the privileged side to set the MTU, add addresses and bring
the device up, for that new device only.

Whatever rung served, the descriptor is checked before use (a character
device 10:200 attached to an interface of the requested kind), and the
device's name is read back from the descriptor (TUNGETIFF), not taken from
anybody's word.

``attach()`` opens another queue of an existing device the caller owns, through
the same ladder (the helper checks the owner). ``open_device()`` is procket's
``dev/1`` made safe: only names on an allowlist (``net/tun``), never a path; a
raw ``/dev/net/tun`` descriptor attaches to every ownerless device (POLICY.md).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from ._api import Acquired, HelperPath, Strategies, acquire
from ._errors import GprocketError
from ._fdio import FdIO
from ._spec import DEVICE_ALLOWLIST, DeviceRequest, TunRequest

__all__ = [
    "DEVICE_ALLOWLIST",
    "CharDevice",
    "PacketInfo",
    "TunTapDevice",
    "attach",
    "open",
    "open_device",
]

Mode = Literal["tun", "tap"]
_Buffer = bytes | bytearray | memoryview

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
TUN_PKT_STRIP = 0x0001
SIOCGIFMTU = 0x8921  # linux/sockios.h
# The TUN/TAP clone device is character device 10:200 (misc, TUN_MINOR).
TUN_MAJOR, TUN_MINOR = 10, 200
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags (40 bytes)
_IFREQ_INT = struct.Struct("16si20x")  # ifr_mtu
_PI = struct.Struct("!HH")  # struct tun_pi: flags, proto (network order)

# Largest link-layer overhead read along with one MTU of payload: Ethernet
# header plus one VLAN tag (TAP); the packet information header comes on top.
_TAP_OVERHEAD = 14 + 4
_DEFAULT_MTU = 1500  # what the kernel gives a new TUN/TAP device


@dataclass(frozen=True)
class PacketInfo:
    """The kernel's ``struct tun_pi`` in front of each packet when packet_info=True."""

    flags: int
    proto: int
    # Bytes of the header in front of each packet (gprocket.aio's device reads them too).
    SIZE: ClassVar[int] = _PI.size

    @classmethod
    def split(cls, data: bytes) -> tuple[PacketInfo, bytes]:
        """The header of a packet read with packet_info=True, and the packet after it.

        Raises GprocketError for a read shorter than the header.
        """
        if len(data) < _PI.size:
            raise GprocketError(f"short read of {len(data)} bytes: no packet information header")
        flags, proto = _PI.unpack_from(data)
        return cls(flags, proto), data[_PI.size:]

    @property
    def truncated(self) -> bool:
        """The kernel cut the packet to fit the read buffer (TUN_PKT_STRIP)."""
        return bool(self.flags & TUN_PKT_STRIP)


def _tungetiff(fd: int) -> tuple[str, int]:
    raw = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    name, flags = _IFREQ.unpack(raw)
    return name.split(b"\0", 1)[0].decode("ascii", "replace"), flags


def _verify_tun_fd(fd: int) -> None:
    st = os.fstat(fd)
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if not stat.S_ISCHR(st.st_mode) or rdev != (TUN_MAJOR, TUN_MINOR):
        raise GprocketError(
            f"descriptor {fd} is not the TUN/TAP device 10:200 (mode {st.st_mode:o}, "
            f"rdev {os.major(st.st_rdev)}:{os.minor(st.st_rdev)})"
        )


# ---------------------------------------------------------------------------
# The device object


class TunTapDevice:
    """An open TUN or TAP queue with cooperative, packet-at-a-time I/O.

    ``read()`` returns one whole IP packet (TUN) or Ethernet frame (TAP);
    ``write()`` sends one. With ``packet_info`` the kernel's 4-byte header is
    handled here: stripped on read (see :meth:`read_with_info`), built on
    write. Iterating yields packets until the device is closed. ``close()`` is
    idempotent; a non-persistent device disappears with its last queue.
    """

    # The descriptor's I/O; gprocket.aio's device swaps in one without a gevent hub.
    _io_type: type[FdIO] = FdIO

    def __init__(self, fd: int, *, packet_info: bool, rung: str = "unknown",
                 namespace: str | None = None, mtu: int | None = None, own: bool = True) -> None:
        """Wrap *fd*, after checking it is an attached TUN/TAP descriptor.

        *packet_info* must say how the device was attached: TUNGETIFF does
        not report IFF_NO_PI faithfully on every kernel (6.18 sets it on a
        device that does prepend the header), so the kind, name and queue
        mode are read back from the descriptor but this one flag is not.
        Raises GprocketError if *fd* is not the TUN/TAP character device, and
        OSError(EBADFD) if it is not attached to an interface.
        """
        _verify_tun_fd(fd)
        os.set_inheritable(fd, False)
        try:
            name, flags = _tungetiff(fd)
        except OSError as err:
            raise OSError(
                err.errno, f"descriptor {fd} is not attached to a TUN/TAP interface: {err.strerror}"
            ) from err
        self.name: str = name
        self.mode: Mode = "tap" if flags & IFF_TAP else "tun"
        self.packet_info: bool = packet_info
        self.multiqueue: bool = bool(flags & IFF_MULTI_QUEUE)
        self.persist: bool = bool(flags & IFF_PERSIST)
        self.rung: str = rung
        self.namespace: str | None = namespace
        self.mtu: int = mtu if mtu is not None else _query_mtu(name, namespace)
        overhead = _TAP_OVERHEAD if self.mode == "tap" else 0
        self.bufsize: int = self.mtu + overhead + (_PI.size if self.packet_info else 0)
        self._io = self._io_type(fd, own=own)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._io.closed

    def fileno(self) -> int:
        """The descriptor; raises OSError(EBADF) once closed."""
        return self._io.fileno()

    def read(self, timeout: float | None = None) -> bytes:
        """Wait cooperatively for one packet (TUN) or frame (TAP) and return it.

        Raises TimeoutError, OSError(EBADF) if closed (also from another greenlet).
        """
        data = self._io.read(self.bufsize, timeout)
        return data[_PI.size:] if self.packet_info else data

    def read_with_info(self, timeout: float | None = None) -> tuple[PacketInfo, bytes]:
        """Like :meth:`read`, with the kernel's packet information header parsed.

        Raises ValueError on a device opened without packet_info.
        """
        if not self.packet_info:
            raise ValueError(f"{self.name} was opened without packet_info=True")
        return PacketInfo.split(self._io.read(self.bufsize, timeout))

    def read_batch(self, max_count: int = 64, timeout: float | None = None) -> list[bytes]:
        """Wait for one packet, then also return those already queued, up to *max_count*."""
        batch = self._io.read_batch(self.bufsize, max_count, timeout)
        if self.packet_info:
            return [data[_PI.size:] for data in batch]
        return batch

    def _header(self, packet: _Buffer, proto: int | None) -> bytes:
        if proto is None:
            proto = _guess_proto(self.mode, packet)
        return _PI.pack(0, proto)

    def write(self, packet: _Buffer, proto: int | None = None, timeout: float | None = None) -> int:
        """Send one packet/frame; returns its length (without the info header).

        With packet_info, *proto* is the ethertype for the header (default:
        from the IP version for TUN, from the frame for TAP; ValueError when
        neither tells). Raises OSError with the kernel's errno (EINVAL for a
        malformed packet, EIO when down).
        """
        if self.packet_info:
            return self._io.writev([self._header(packet, proto), packet], timeout) - _PI.size
        return self._io.write(packet, timeout)

    def write_batch(self, packets: Iterable[_Buffer], timeout: float | None = None) -> int:
        """Send each packet with one system call; returns how many were sent."""
        if self.packet_info:
            framed = (self._header(p, None) + bytes(p) for p in packets)
            return self._io.write_batch(framed, timeout)
        return self._io.write_batch(packets, timeout)

    def __iter__(self) -> Iterator[bytes]:
        """Yield packets until the device is closed (then stop, not raise)."""
        while True:
            try:
                yield self.read()
            except OSError as err:
                if err.errno == errno.EBADF and self.closed:
                    return
                raise

    def close(self) -> None:
        """Close the descriptor, waking any greenlet blocked on it. Idempotent."""
        self._io.close()

    def __enter__(self) -> TunTapDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" namespace={self.namespace}" if self.namespace else ""
        state = " closed" if self.closed else ""
        return (
            f"<TunTapDevice {self.mode} {self.name!r} mtu={self.mtu} rung={self.rung}"
            f"{where}{state}>"
        )


def _guess_proto(mode: Mode, packet: _Buffer) -> int:
    if mode == "tap":
        # The kernel takes a TAP frame's protocol from its Ethernet header anyway.
        return int.from_bytes(bytes(packet[12:14]), "big") if len(packet) >= 14 else 0
    version = packet[0] >> 4 if len(packet) else 0
    if version == 4:
        return ETH_P_IP
    if version == 6:
        return ETH_P_IPV6
    raise ValueError(f"cannot tell the protocol of a packet with IP version {version}; pass proto=")


def _query_mtu(name: str, namespace: str | None) -> int:
    """The device's MTU, asked of the kernel when it lives in our namespace."""
    if namespace is not None:
        # Our sockets cannot see an interface in another namespace; a new
        # device has the kernel's default unless the request set one.
        return _DEFAULT_MTU
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            raw = fcntl.ioctl(sock, SIOCGIFMTU, _IFREQ_INT.pack(name.encode(), 0))
        except OSError:
            # Same name not visible here (the descriptor came from another
            # namespace via an inherited socket or the broker).
            return _DEFAULT_MTU
    return int(_IFREQ_INT.unpack(raw)[1])


# ---------------------------------------------------------------------------
# Public entry points


def open(
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
) -> TunTapDevice:
    """Create a new TUN/TAP device and return it open.

    *address* / *address6* are interface addresses with a prefix
    ('10.0.0.1/24', 'fd00::1/64'); they add the connected route too. *up*,
    *mtu* and the addresses are applied by the privileged side to the new
    device only. *namespace* names a namespace under /run/netns (never a
    path). Never attaches to an existing device: a taken name fails.

    Raises ValueError/TypeError for bad arguments before any privilege is
    used; gprocket.PrivilegeError when no rung may create it (the attempts say
    why, e.g. the helper's policy); OSError with the kernel's errno (EBUSY:
    the name exists).
    """
    request = TunRequest(
        name=name, mode=mode, packet_info=packet_info, multiqueue=multiqueue, persist=persist,
        up=up, mtu=0 if mtu is None else mtu, addr4=address, addr6=address6, namespace=namespace,
    )
    return device_for(request, acquire(request, strategies=strategies, helper=helper))


def device_for(request: TunRequest, acquired: Acquired,
               kind: type[TunTapDevice] | None = None) -> TunTapDevice:
    """The device object (a ``kind``) for ``acquired``, checked against ``request``;
    the descriptor is closed when that fails."""
    try:
        device = (kind or TunTapDevice)(
            acquired.fd, packet_info=request.packet_info, rung=acquired.rung,
            namespace=request.namespace, mtu=request.mtu or None)
        _check_matches(device, request)
    except BaseException:
        os.close(acquired.fd)
        raise
    return device


def _check_matches(device: TunTapDevice, request: TunRequest) -> None:
    wanted = (request.name or device.name, request.mode, request.multiqueue)
    got = (device.name, device.mode, device.multiqueue)
    if wanted != got:
        raise GprocketError(
            f"the descriptor is attached to (name, mode, multiqueue) {got}, "
            f"not the requested {wanted}"
        )


class CharDevice(FdIO):
    """An allowlisted character device opened through the ladder, with cooperative I/O."""

    __slots__ = ("name", "rung")

    def __init__(self, fd: int, *, name: str, rung: str) -> None:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode):
            raise GprocketError(f"descriptor {fd} for {name!r} is not a character device")
        if name == "net/tun":
            _verify_tun_fd(fd)
        os.set_inheritable(fd, False)
        super().__init__(fd)
        self.name = name
        self.rung = rung

    def __repr__(self) -> str:
        return f"<CharDevice {self.name!r} rung={self.rung}{' closed' if self.closed else ''}>"


def open_device(name: str, strategies: Strategies = None, helper: HelperPath = None) -> CharDevice:
    """Open the allowlisted character device ``/dev/NAME`` (e.g. 'net/tun').

    Raises ValueError for any name not in DEVICE_ALLOWLIST (paths, '..',
    other devices) before any privilege is used; gprocket.PrivilegeError when
    no rung may open it; GprocketError when the descriptor is not what was asked.
    """
    acquired = acquire(DeviceRequest(name), strategies=strategies, helper=helper)
    try:
        return CharDevice(acquired.fd, name=name, rung=acquired.rung)
    except BaseException:
        os.close(acquired.fd)
        raise


def attach(
    name: str,
    mode: Mode = "tun",
    *,
    packet_info: bool = False,
    multiqueue: bool = False,
    namespace: str | None = None,
    strategies: Strategies = None,
    helper: HelperPath = None,
) -> TunTapDevice:
    """Attach to an existing device you own (a persistent device, or another queue).

    Goes through the ladder like :func:`open`: in this process the kernel
    decides (the device's owner or group, or CAP_NET_ADMIN); the helper
    attaches only to a device whose owner is the caller or whose group is one
    of the caller's, never to an ownerless one (docs/POLICY.md), and only to a
    name a ``tun`` rule grants. Nothing is configured. Raises ValueError for a
    bad name or mode; gprocket.PrivilegeError when no rung may attach (the
    attempts say why: EPERM for somebody else's or an ownerless device);
    OSError(ENODEV) when there is no such device, OSError(EINVAL) when the
    kind or queue mode differ.
    """
    request = TunRequest(name=name, mode=mode, packet_info=packet_info, multiqueue=multiqueue,
                         namespace=namespace, attach=True)
    acquired = acquire(request, strategies=strategies, helper=helper)
    try:
        device = TunTapDevice(acquired.fd, packet_info=packet_info, rung=acquired.rung,
                              namespace=namespace)
        _check_matches(device, request)
    except BaseException:
        os.close(acquired.fd)
        raise
    return device
