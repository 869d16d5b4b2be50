"""The plain rung, and creating a descriptor in this process (for it and the capabilities rung).

``open_socket`` does socket(), the options, bind() and listen() exactly as
the helper does, and closes the descriptor on every failure path. Errors
keep the kernel's errno and say which step failed.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import functools
import ipaddress
import os
import socket
import struct

from .._errors import RungRefused, RungUnavailable
from .._spec import DeviceRequest, Request, SocketRequest, TunRequest
from .caps import (
    CAP_NET_ADMIN,
    CAP_NET_BIND_SERVICE,
    CAP_NET_RAW,
    CAP_SYS_ADMIN,
    cap_name,
    effective_among,
    read_sets,
)
from .netns import in_namespace

__all__ = [
    "PERMISSION_ERRNOS",
    "PlainStrategy",
    "needed_caps",
    "open_device",
    "open_request",
    "open_socket",
    "open_tun",
    "refused",
    "unprivileged_port_start",
]

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN_EXCL = 0x8000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
IFF_UP = 0x1


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


# Linux 5.7 stopped requiring CAP_NET_RAW for SO_BINDTODEVICE on an unbound socket.
_BINDTODEVICE_NEEDS_RAW = not _kernel_at_least(5, 7)


def unprivileged_port_start() -> int:
    """net.ipv4.ip_unprivileged_port_start of this thread's network namespace."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding="ascii") as f:
            return int(f.read())
    except OSError:
        return 1024


def needed_caps(request: Request) -> tuple[int, ...]:
    """The capabilities the kernel checks for this request, smallest first.

    Empty when no capability can help (a ping datagram socket is governed by
    net.ipv4.ping_group_range, not by a capability).
    """
    caps, high_port = _fixed_caps(request)
    if high_port and request.port < unprivileged_port_start():  # type: ignore[union-attr]
        return tuple(sorted({*caps, CAP_NET_BIND_SERVICE}))
    return caps


@functools.lru_cache(maxsize=512)
def _fixed_caps(request: Request) -> tuple[tuple[int, ...], bool]:
    """What a request needs whatever the sysctls say, and whether a port of
    1024 or more must still be checked against ip_unprivileged_port_start."""
    caps: set[int] = set()
    high_port = False
    if isinstance(request, TunRequest):
        caps.add(CAP_NET_ADMIN)
    elif isinstance(request, SocketRequest):
        if request.family == socket.AF_PACKET or request.type == socket.SOCK_RAW:
            caps.add(CAP_NET_RAW)
        elif request.port and request.port < 1024:
            # Below 1024 the plain rung only failed if the sysctl was not lowered.
            caps.add(CAP_NET_BIND_SERVICE)
        elif request.port:
            high_port = True
        if request.interface and request.family != socket.AF_PACKET and _BINDTODEVICE_NEEDS_RAW:
            caps.add(CAP_NET_RAW)
    return tuple(sorted(caps)), high_port


def _context(err: OSError, what: str) -> OSError:
    return OSError(err.errno, f"cannot {what}: {err.strerror}")


def open_socket(request: SocketRequest) -> int:
    """A close-on-exec descriptor for ``request``: created, configured, bound, listening.

    Raises OSError with the kernel's errno and the failing step in the
    message; the descriptor is closed on every failure.
    """
    proto = (
        socket.htons(request.protocol) if request.family == socket.AF_PACKET else request.protocol
    )
    try:
        sock = socket.socket(request.family, request.type | socket.SOCK_CLOEXEC, proto)
    except OSError as err:
        raise _context(err, f"create {request.describe()}") from err
    try:
        _configure(sock, request)
        return sock.detach()
    finally:
        sock.close()


def _configure(sock: socket.socket, request: SocketRequest) -> None:
    if request.family == socket.AF_PACKET:
        if request.interface:
            try:
                sock.bind((request.interface, request.protocol))
            except OSError as err:
                raise _context(err, f"bind packet socket to {request.interface!r}") from err
        return
    try:
        if request.reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if request.reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if request.family == socket.AF_INET6 and request.type != socket.SOCK_RAW:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if request.dualstack else 1)
        if request.interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, request.interface.encode())
    except OSError as err:
        raise _context(err, f"configure {request.describe()}") from err
    if request.needs_bind:
        address: tuple[str, int] | tuple[str, int, int, int]
        if request.family == socket.AF_INET6:
            address = (request.bind_ip, request.port, 0, request.scope_id)
        else:
            address = (request.bind_ip, request.port)
        try:
            sock.bind(address)
        except OSError as err:
            raise OSError(err.errno, f"cannot bind {address!r}: {err.strerror}") from err
    if request.backlog:
        try:
            sock.listen(request.backlog)
        except OSError as err:
            raise _context(err, f"listen on {request.describe()}") from err


def open_tun(request: TunRequest) -> int:
    """Create the TUN/TAP device in this process and return its descriptor.

    Creates only (IFF_TUN_EXCL), like the helper; with ``request.attach``
    attaches to the existing device instead, under the kernel's own rule (its
    owner or group, or CAP_NET_ADMIN: this process's own rights). Raises
    OSError with the kernel's errno.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        name = (request.name or "").encode()
        excl = 0 if request.attach else IFF_TUN_EXCL
        if request.attach:
            # Without IFF_TUN_EXCL a missing name would be created (with CAP_NET_ADMIN).
            try:
                socket.if_nametoindex(request.name or "")
            except OSError as err:
                raise OSError(_errno.ENODEV, f"cannot attach to {request.describe()}: "
                                            "no such device") from err
        ifr = struct.pack("16sH22x", name, request.flags | excl)
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as err:
            verb = "attach to" if request.attach else "create"
            raise _context(err, f"{verb} {request.describe()}") from err
        if request.attach:
            return fd
        ifname = ifr[:16].split(b"\0", 1)[0].decode()
        if request.persist:
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        _configure_link(ifname, request)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _configure_link(ifname: str, request: TunRequest) -> None:
    name = ifname.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as ctl:
        try:
            if request.mtu:
                fcntl.ioctl(ctl, SIOCSIFMTU, struct.pack("16si20x", name, request.mtu))
            if request.addr4 is not None:
                fcntl.ioctl(ctl, SIOCSIFADDR, _ifreq_in(name, request.addr4.ip))
                fcntl.ioctl(ctl, SIOCSIFNETMASK, _ifreq_in(name, request.addr4.netmask))
            if request.up:
                flags = struct.unpack_from(
                    "16sh", fcntl.ioctl(ctl, SIOCGIFFLAGS, struct.pack("16s24x", name))
                )[1]
                fcntl.ioctl(ctl, SIOCSIFFLAGS, struct.pack("16sh22x", name, flags | IFF_UP))
        except OSError as err:
            raise _context(err, f"configure {ifname}") from err
    if request.addr6 is not None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as ctl6:
            in6_ifreq = struct.pack(
                "16sIi",
                request.addr6.ip.packed,
                request.addr6.network.prefixlen,
                socket.if_nametoindex(ifname),
            )
            try:
                fcntl.ioctl(ctl6, SIOCSIFADDR, in6_ifreq)
            except OSError as err:
                raise _context(err, f"add {request.addr6} to {ifname}") from err


def _ifreq_in(name: bytes, address: ipaddress.IPv4Address) -> bytes:
    return struct.pack("16sH2s4s8x", name, socket.AF_INET, b"\0\0", address.packed)


def open_device(request: DeviceRequest) -> int:
    """Open the allowlisted character device read-write, close-on-exec."""
    try:
        return os.open(request.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise _context(err, f"open {request.path}") from err


def open_request(request: Request) -> int:
    """Dispatch to the opener for the request's kind."""
    if isinstance(request, SocketRequest):
        return open_socket(request)
    if isinstance(request, TunRequest):
        return open_tun(request)
    if isinstance(request, DeviceRequest):
        return open_device(request)
    raise TypeError(f"not a gprocket request: {type(request).__name__}")


# errnos that mean "not allowed": another rung may succeed where this one failed.
PERMISSION_ERRNOS = frozenset({_errno.EACCES, _errno.EPERM})
NETWORK_CAPS = (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, CAP_NET_RAW)


def refused(err: OSError) -> RungRefused:
    """The kernel's permission refusal of an in-process open, as a rung's refusal."""
    return RungRefused(f"the kernel refused: {err.strerror}", err.errno)


class PlainStrategy:
    """Just try: root, a lowered ip_unprivileged_port_start, ping_group_range.

    For a process that is not root but holds the needed capability in its
    effective set (ambient capabilities), the capability is what serves the
    request, so this rung steps aside for the capabilities rung.
    """

    name = "plain"
    # Runs the namespaced open on a fresh native thread; gprocket.aio swaps
    # in its own, which does not need a gevent hub.
    in_namespace = staticmethod(in_namespace)

    def acquire(self, request: Request) -> int:
        """Open in this process with the privilege it already has in force."""
        # Most unprivileged processes hold no network capability at all: one
        # capget(2) settles that before needed_caps reads any sysctl.
        if os.geteuid() != 0 and effective_among(NETWORK_CAPS):
            held = effective_among(needed_caps(request))
            if held:
                raise RungUnavailable(
                    f"{cap_name(held[0])} is effective: the capabilities rung serves this"
                )
        if request.namespace is not None:
            if not read_sets().has_effective(CAP_SYS_ADMIN):
                raise RungUnavailable(
                    f"entering namespace {request.namespace!r} needs CAP_SYS_ADMIN"
                )
            try:
                return self.in_namespace(request.namespace, lambda: open_request(request))
            except OSError as err:
                if err.errno in PERMISSION_ERRNOS:
                    raise refused(err) from err
                raise
        try:
            return open_request(request)
        except OSError as err:
            if err.errno in PERMISSION_ERRNOS:
                raise refused(err) from err
            raise
