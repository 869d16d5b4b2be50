"""Choose and configure the one ICMP socket a family needs, least privilege first.

1. An ICMP datagram ("ping") socket, when ``net.ipv4.ping_group_range``
   includes one of the caller's groups (the same sysctl governs ICMPv6). No
   privilege at all; the kernel owns the identifier (it is the socket's
   "port") and delivers only replies and errors for it.
2. A raw socket through the privilege ladder (plain as root, capabilities,
   the helper ...). A raw socket sees every ICMP packet of the host,
   including our own echo requests on loopback; the matcher copes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import sys
from dataclasses import dataclass
from typing import Literal

import gprocket
from gprocket.icmp import _wire as wire

__all__ = ["IcmpSocket", "SocketKind", "configure", "datagram_first", "icmp4_filter",
           "open_icmp_socket", "raw_names"]

SocketKind = Literal["auto", "datagram", "raw"]

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_AUTOFLOWLABEL = 70  # linux/in6.h; not in Python's socket module
ICMP6_FILTER = 1
SOL_RAW = 255
ICMP_FILTER = 1

# Datagram socket errnos that mean "not allowed / not available here", so a
# raw socket through the ladder may still work:
_FALL_BACK = frozenset({
    errno.EACCES,           # ping_group_range does not include any of our groups
    errno.EPERM,            # a seccomp or LSM policy said no
    errno.EPROTONOSUPPORT,  # kernel built without ping sockets
    errno.ESOCKTNOSUPPORT,  # same, older kernels
})

_DEFAULT_RCVBUF = 8 << 20


@dataclass(frozen=True)
class IcmpSocket:
    """A configured, non-blocking ICMP socket and how it was obtained."""

    sock: socket.socket
    family: int
    kind: Literal["datagram", "raw"]
    rung: str
    ident: int
    rcvbuf: int
    filtered: bool = False  # the kernel drops ICMP types that cannot be answers

    def close(self) -> None:
        self.sock.close()


def family_and_protocol(family: int | str) -> tuple[int, int]:
    if family in (socket.AF_INET, "inet", 4):
        return socket.AF_INET, socket.IPPROTO_ICMP
    if family in (socket.AF_INET6, "inet6", 6):
        return socket.AF_INET6, socket.IPPROTO_ICMPV6
    raise ValueError(f"ICMP needs family inet or inet6, not {family!r}")


def _datagram(af: int, proto: int) -> socket.socket | OSError:
    """The datagram socket, or the refusal that sends us down the ladder."""
    try:
        return socket.socket(af, socket.SOCK_DGRAM, proto)
    except OSError as err:
        if err.errno in _FALL_BACK:
            return err
        raise


def _group_range() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range", encoding="ascii") as handle:
            return " ".join(handle.read().split())
    except OSError:
        return "unknown"


def with_datagram_attempt(err: gprocket.PrivilegeError,
                          refusal: OSError) -> gprocket.PrivilegeError:
    """The ladder's error, with the datagram socket tried first and its own fix."""
    reason = (f"ICMP datagram socket refused: net.ipv4.ping_group_range is "
              f"{_group_range()!r}, which excludes this user's groups")
    attempts = (gprocket.Attempt("datagram", reason, refusal.errno), *err.attempts)
    gid = os.getgid()
    fix = (f"{err.fix}; or allow ping sockets for the group: "
           f"sysctl -w net.ipv4.ping_group_range='{gid} {gid}'")
    return gprocket.PrivilegeError(err.what, attempts, fix)


def raw_names(af: int) -> tuple[str, str]:
    """gprocket.open's (family, protocol) for a raw ICMP socket of family ``af``."""
    if af == socket.AF_INET:
        return "inet", "icmp"
    return "inet6", "icmp6"


def _raw(af: int, source: str | None, interface: str | None,
         strategies: str | list[str] | tuple[str, ...] | None,
         helper: str | None) -> tuple[socket.socket, str]:
    family, protocol = raw_names(af)
    opened = gprocket.open(0, protocol=protocol, family=family, ip=source,
                           interface=interface, strategies=strategies, helper=helper)
    rung = str(getattr(opened, "rung", "plain"))
    fd = opened.detach()
    try:
        return socket.socket(fileno=fd), rung
    except BaseException:
        os.close(fd)
        raise


def _set_rcvbuf(sock: socket.socket, wanted: int) -> int:
    try:
        # CAP_NET_ADMIN (root) may exceed net.core.rmem_max ...
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
    except PermissionError:
        # ... everyone else gets at most rmem_max, which the kernel clamps to.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    # The kernel reports the doubled figure it actually budgets (skb overhead).
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def icmp4_filter(passing: frozenset[int] | set[int]) -> bytes:
    """The ICMP_FILTER mask for a raw IPv4 socket passing only ``passing`` types.

    A set bit drops the type; types 32 and above always pass (Linux).
    """
    mask = 0xFFFFFFFF
    for kind in passing:
        if not 0 <= kind <= 31:
            raise ValueError(f"ICMP_FILTER covers types 0..31, not {kind}")
        mask &= ~(1 << kind)
    return mask.to_bytes(4, sys.byteorder)


def open_icmp_socket(family: int | str, *, kind: SocketKind = "auto",
                     source: str | None = None, interface: str | None = None,
                     ttl: int | None = None, rcvbuf: int = _DEFAULT_RCVBUF,
                     strategies: str | list[str] | tuple[str, ...] | None = None,
                     helper: str | None = None, kernel_filter: bool = True) -> IcmpSocket:
    """Open and configure one ICMP (or ICMPv6) socket for echo.

    ``kind`` "auto" tries the datagram socket and falls back to a raw socket
    through the ladder; "datagram" or "raw" insist. A raw socket gets a
    kernel filter (ICMP_FILTER, ICMP6_FILTER) passing only echo replies and
    errors, so it neither queues every echo request on the host, our own
    included, nor wastes receive buffer on them; ``kernel_filter=False``
    leaves it unfiltered (the matcher copes either way). Raises
    PrivilegeError when no rung can provide a raw socket, OSError for
    anything else.
    """
    af, _proto = family_and_protocol(family)
    sock, refusal = datagram_first(family, kind)
    rung = "plain"
    if sock is None:
        try:
            sock, rung = _raw(af, source, interface, strategies, helper)
        except gprocket.PrivilegeError as err:
            if refusal is None:
                raise
            raise with_datagram_attempt(err, refusal) from err
    return configure(sock, af, rung, source=source, interface=interface, ttl=ttl,
                     rcvbuf=rcvbuf, kernel_filter=kernel_filter)


def datagram_first(family: int | str, kind: SocketKind) -> tuple[socket.socket | None,
                                                                  OSError | None]:
    """The datagram socket when ``kind`` allows it and the kernel does, else
    (None, the kernel's refusal or None): then a raw socket must come from the
    ladder. Raises PermissionError when ``kind`` is "datagram" and refused."""
    if kind not in ("auto", "datagram"):
        return None, None
    af, proto = family_and_protocol(family)
    got = _datagram(af, proto)
    if not isinstance(got, OSError):
        return got, None
    if kind == "datagram":
        raise PermissionError(
            got.errno,
            f"ICMP datagram sockets are not allowed for this user "
            f"(net.ipv4.ping_group_range is {_group_range()!r}): widen it to "
            f"include one of the user's groups")
    return None, got


def configure(sock: socket.socket, af: int, rung: str, *, source: str | None = None,
              interface: str | None = None, ttl: int | None = None,
              rcvbuf: int = _DEFAULT_RCVBUF, kernel_filter: bool = True) -> IcmpSocket:
    """Configure a datagram socket (``rung`` "plain", unbound) or a raw socket
    from the ladder for echo; closes ``sock`` when that fails."""
    found: Literal["datagram", "raw"] = \
        "datagram" if sock.type == socket.SOCK_DGRAM else "raw"
    filtered = False
    try:
        if found == "datagram":
            if interface:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                interface.encode())
            # Binding fixes the identifier (the ping socket's port) now.
            sock.bind((source or "", 0))  # "" is the wildcard of either family
            ident = int(sock.getsockname()[1])
            if af == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            ident = random.getrandbits(16)
            if af == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
                if kernel_filter:
                    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, wire.icmp6_filter(
                        {wire.ICMP6_ECHO_REPLY} | set(wire.ICMP6_ERRORS)))
            elif kernel_filter:
                sock.setsockopt(SOL_RAW, ICMP_FILTER, icmp4_filter(
                    {wire.ICMP_ECHOREPLY} | set(wire.ICMP4_ERRORS)))
            filtered = kernel_filter
        if ttl is not None:
            if af == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        if af == socket.AF_INET6:
            # No automatic flow label: the kernel would hash every request's
            # flow (siphash) to make one, ~5% of a sweep's send path, and a
            # ping needs none. Kernels without the option just keep labelling.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, 0)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        budget = _set_rcvbuf(sock, rcvbuf)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return IcmpSocket(sock, af, found, rung, ident, budget, filtered)
