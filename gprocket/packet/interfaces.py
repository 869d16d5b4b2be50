"""Network interfaces for packet work.

List interfaces with index, MAC, MTU and flags (``SIOCGIF*`` ioctls; no
privilege needed), switch promiscuous mode through packet-socket membership
(``PACKET_ADD_MEMBERSHIP``: the kernel drops it when the socket closes, also
when the process is killed, unlike ``IFF_PROMISC`` set by ioctl), bind a packet
socket to an interface, find the default route and gateway
(``/proc/net/route``, ``/proc/net/ipv6_route``), look up the ARP table
(``/proc/net/arp``), and compute the Internet checksum (RFC 1071).
"""

from __future__ import annotations

import array
import errno
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from gprocket.packet import lowlevel
from gprocket.packet._ffi import ffi

__all__ = [
    "IFF_NAMES",
    "ArpEntry",
    "Interface",
    "Route",
    "arp_lookup",
    "arp_table",
    "bind",
    "checksum",
    "default_route",
    "driver",
    "flags",
    "get",
    "index_of",
    "interface_addresses",
    "list_interfaces",
    "mac_address",
    "mtu",
    "name_of",
    "promiscuous",
    "set_promiscuous",
]

IFF_NAMES: dict[int, str] = {
    0x1: "UP", 0x2: "BROADCAST", 0x4: "DEBUG", 0x8: "LOOPBACK", 0x10: "POINTOPOINT",
    0x20: "NOTRAILERS", 0x40: "RUNNING", 0x80: "NOARP", 0x100: "PROMISC",
    0x200: "ALLMULTI", 0x1000: "MULTICAST",
}
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100
PACKET_MR_PROMISC = 1
ETHTOOL_GDRVINFO = 0x3


@dataclass(frozen=True)
class Interface:
    """One interface as the kernel reports it now."""

    name: str
    index: int
    mac: str
    mtu: int
    flags: int

    @property
    def is_up(self) -> bool:
        """Administratively up (IFF_UP)."""
        return bool(self.flags & IFF_UP)

    @property
    def is_running(self) -> bool:
        """Carrier present (IFF_RUNNING)."""
        return bool(self.flags & IFF_RUNNING)

    @property
    def is_loopback(self) -> bool:
        """The loopback device (IFF_LOOPBACK)."""
        return bool(self.flags & IFF_LOOPBACK)

    @property
    def is_promiscuous(self) -> bool:
        """IFF_PROMISC as set by ``ioctl(SIOCSIFFLAGS)`` (``ip link set promisc on``).

        Promiscuity held by packet sockets (:func:`set_promiscuous`) is a
        counter the kernel keeps apart: see :func:`promiscuous`.
        """
        return bool(self.flags & IFF_PROMISC)

    @property
    def flag_names(self) -> tuple[str, ...]:
        """Names of the set flags, e.g. ``("UP", "BROADCAST", "RUNNING")``."""
        return tuple(name for bit, name in IFF_NAMES.items() if self.flags & bit)


def _ctl_socket() -> socket.socket:
    # Any socket serves the SIOCGIF* ioctls; an AF_UNIX one exists in every namespace.
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def _ifreq(name: str) -> object:
    raw = name.encode()
    if not raw or len(raw) > 15:
        raise ValueError(f"interface name {name!r} must be 1..15 bytes")
    req = ffi.new("struct ifreq *")
    req.ifr_name = raw
    return req


def _ifreq_call(name: str, request: str) -> object:
    req = _ifreq(name)
    with _ctl_socket() as s:
        try:
            lowlevel.ioctl(s, request, req)
        except OSError as err:
            if err.errno == errno.ENODEV:
                raise OSError(errno.ENODEV, f"no interface named {name!r}") from err
            raise
    return req


def index_of(name: str) -> int:
    """Return the index of interface ``name``; OSError(ENODEV) if there is none."""
    req = _ifreq_call(name, "SIOCGIFINDEX")
    return int(req.u.ivalue)  # type: ignore[attr-defined]


def name_of(index: int) -> str:
    """Return the name of interface ``index``; OSError(ENODEV) if there is none."""
    try:
        return socket.if_indextoname(index)
    except OSError as err:
        raise OSError(errno.ENODEV, f"no interface with index {index}") from err


def mac_address(name: str) -> str:
    """Return the hardware address of ``name`` as ``aa:bb:cc:dd:ee:ff``."""
    req = _ifreq_call(name, "SIOCGIFHWADDR")
    hw = bytes(ffi.buffer(req.u.sockaddr))[2:8]  # type: ignore[attr-defined]
    return ":".join(f"{b:02x}" for b in hw)


def mtu(name: str) -> int:
    """Return the MTU of ``name``."""
    return int(_ifreq_call(name, "SIOCGIFMTU").u.mtu)  # type: ignore[attr-defined]


def flags(name: str) -> int:
    """Return the IFF_* flags of ``name``."""
    return int(_ifreq_call(name, "SIOCGIFFLAGS").u.flags) & 0xFFFF  # type: ignore[attr-defined]


def promiscuous(name: str, sysfs: Path = Path("/sys/class/net")) -> bool:
    """True while anyone holds ``name`` promiscuous (any socket or ioctl).

    Reads the device's own flags from sysfs (``ip -d link`` shows the same as
    ``promiscuity N``); sysfs must belong to this network namespace, as it
    does under ``ip netns exec``.
    """
    try:
        raw = (sysfs / name / "flags").read_text()
    except FileNotFoundError as err:
        raise OSError(errno.ENODEV, f"no interface named {name!r} in {sysfs}") from err
    return bool(int(raw, 16) & IFF_PROMISC)


def driver(name: str) -> str:
    """Return the driver name of ``name`` (``SIOCETHTOOL``/``ETHTOOL_GDRVINFO``).

    The ifreq holds a pointer to a ``struct ethtool_drvinfo`` the kernel
    fills: the pointer-holding ioctl Python's ``fcntl.ioctl`` cannot make.
    Raises OSError(EOPNOTSUPP) for devices without ethtool support.
    """
    info = ffi.new("struct ethtool_drvinfo *", {"cmd": ETHTOOL_GDRVINFO})
    req = _ifreq(name)
    req.u.data = info  # type: ignore[attr-defined]
    with _ctl_socket() as s:
        lowlevel.ioctl(s, "SIOCETHTOOL", req)
    return str(ffi.string(info.driver).decode())


def interface_addresses() -> dict[str, str]:
    """Map interface name to its IPv4 address via ``SIOCGIFCONF``.

    ``struct ifconf`` points at a buffer the kernel fills with ``ifreq``
    records; only interfaces with an IPv4 address appear.
    """
    size = ffi.sizeof("struct ifreq")
    count = 64
    while True:
        buffer = ffi.new("char[]", size * count)
        conf = ffi.new("struct ifconf *", {"ifc_len": size * count, "ifc_buf": buffer})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            lowlevel.ioctl(s, "SIOCGIFCONF", conf)
        if conf.ifc_len < size * count:
            break
        count *= 4
    raw = bytes(ffi.buffer(buffer, conf.ifc_len))
    out: dict[str, str] = {}
    for off in range(0, len(raw), size):
        name = raw[off: off + 16].split(b"\0", 1)[0].decode()
        addr = lowlevel.decode_sockaddr(raw[off + 16: off + size])
        if isinstance(addr, lowlevel.InetAddress):
            out[name] = addr.host
    return out


def get(name: str) -> Interface:
    """Return the current state of interface ``name``."""
    return Interface(name, index_of(name), mac_address(name), mtu(name), flags(name))


def list_interfaces() -> list[Interface]:
    """Return every interface of this network namespace, by index."""
    result = []
    for _index, name in socket.if_nameindex():
        try:
            result.append(get(name))
        except OSError as err:
            if err.errno != errno.ENODEV:  # vanished between listing and query
                raise
    return sorted(result, key=lambda i: i.index)


def _membership(sock: lowlevel.FileLike, ifindex: int, on: bool) -> None:
    name = "PACKET_ADD_MEMBERSHIP" if on else "PACKET_DROP_MEMBERSHIP"
    lowlevel.setsockopt(sock, name, (ifindex, PACKET_MR_PROMISC, 0, b""))


def set_promiscuous(sock: lowlevel.FileLike, interface: str | int, on: bool = True) -> None:
    """Hold (or release) promiscuous mode on ``interface`` through packet socket ``sock``.

    The kernel counts the membership against the socket and drops it when
    the socket closes, however the process ends. Raises OSError(ENODEV) for
    an unknown interface, OSError(EINVAL) if ``sock`` is not a packet socket.
    """
    ifindex = interface if isinstance(interface, int) else index_of(interface)
    _membership(sock, ifindex, on)


def bind(sock: socket.socket, interface: str | int, protocol: int = 0x0003) -> None:
    """Bind packet socket ``sock`` to ``interface`` for ethertype ``protocol`` (host order).

    Raises OSError(ENODEV) for an unknown interface.
    """
    name = interface if isinstance(interface, str) else name_of(interface)
    try:
        sock.bind((name, protocol))
    except OSError as err:
        raise OSError(err.errno, f"cannot bind packet socket to {name!r}: {err.strerror}"
                      ) from err


# ---------------------------------------------------------------- routes and ARP

@dataclass(frozen=True)
class Route:
    """A default route: the interface and the gateway (None when on-link)."""

    family: int
    interface: str
    gateway: str | None
    metric: int


def default_route(family: int = socket.AF_INET,
                  proc: Path = Path("/proc/thread-self/net")) -> Route | None:
    """Return the default route with the lowest metric, or None without one."""
    best: Route | None = None
    if family == socket.AF_INET:
        lines = (proc / "route").read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
                continue
            if not int(f[3], 16) & 0x1:  # RTF_UP
                continue
            gw_raw = struct.pack("<I", int(f[2], 16))
            gw = socket.inet_ntop(socket.AF_INET, gw_raw) if gw_raw != b"\0" * 4 else None
            route = Route(family, f[0], gw, int(f[6]))
            if best is None or route.metric < best.metric:
                best = route
        return best
    if family == socket.AF_INET6:
        for line in (proc / "ipv6_route").read_text().splitlines():
            f = line.split()
            if len(f) < 10 or f[0] != "0" * 32 or f[1] != "00" or f[9] == "lo":
                continue
            gw_raw = bytes.fromhex(f[4])
            gw = socket.inet_ntop(socket.AF_INET6, gw_raw) if any(gw_raw) else None
            route = Route(family, f[9], gw, int(f[5], 16))
            if best is None or route.metric < best.metric:
                best = route
        return best
    raise ValueError(f"family {family} is neither AF_INET nor AF_INET6")


@dataclass(frozen=True)
class ArpEntry:
    """One line of the kernel's ARP table."""

    ip: str
    mac: str
    interface: str
    flags: int

    @property
    def complete(self) -> bool:
        """The neighbour's address is known (ATF_COM)."""
        return bool(self.flags & 0x2)


def arp_table(path: Path = Path("/proc/thread-self/net/arp")) -> list[ArpEntry]:
    """Return the IPv4 neighbour table."""
    entries = []
    for line in path.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) >= 6:
            entries.append(ArpEntry(f[0], f[3], f[5], int(f[2], 16)))
    return entries


def arp_lookup(ip: str, path: Path = Path("/proc/thread-self/net/arp")) -> str | None:
    """Return the MAC address the kernel resolved for ``ip``, or None.

    Raises ValueError when ``ip`` is not an IPv4 address.
    """
    try:
        socket.inet_pton(socket.AF_INET, ip)
    except OSError as err:
        raise ValueError(f"{ip!r} is not an IPv4 address") from err
    for entry in arp_table(path):
        if entry.ip == ip and entry.complete:
            return entry.mac
    return None


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Return the Internet checksum (RFC 1071) of ``data`` as a host integer.

    Pack it with ``struct.pack("!H", value)``; a buffer that already holds
    its correct checksum sums to 0.
    """
    raw = bytes(data)
    if len(raw) % 2:
        raw += b"\0"
    words = array.array("H", raw)
    # One's-complement addition is byte-order independent (RFC 1071 §2(B)).
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    value = ~total & 0xFFFF
    if sys.byteorder == "little":
        value = ((value & 0xFF) << 8) | (value >> 8)
    return value
