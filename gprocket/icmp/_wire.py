"""Sans-IO ICMP and ICMPv6 echo: build requests, parse and validate what comes back.

Nothing here touches a socket. The engine in ``icmp.py`` hands every received
datagram to one of the ``parse_*`` functions and acts on the typed answer:

- ``Echo``: an echo reply, or (``request=True``) an echo request, which a raw
  socket sees when it pings a local address; the engine never counts those.
- ``Quoted``: an ICMP error (destination unreachable, time exceeded, ...) that
  quotes one of our echo requests, with the router that sent it.
- ``Rejected``: anything else, with the reason (other protocols, truncated or
  corrupted packets, errors about somebody else's traffic).

Parsing is bounded by the lengths the packet declares; nothing is trusted.
"""

from __future__ import annotations

import socket
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "COOKIE_SIZE",
    "ICMP6_ECHO_REPLY",
    "ICMP6_ECHO_REQUEST",
    "ICMP6_TIME_EXCEEDED",
    "ICMP_ECHO",
    "ICMP_ECHOREPLY",
    "ICMP_TIME_EXCEEDED",
    "Echo",
    "ExtendedError",
    "Quoted",
    "Rejected",
    "build_echo",
    "checksum",
    "describe",
    "icmp6_filter",
    "make_payload",
    "parse_extended_error",
    "parse_icmp4",
    "parse_icmp6",
    "parse_ipv4",
]

ICMP_ECHOREPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETERPROB = 12

ICMP6_DST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROB = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

ICMP4_ERRORS = frozenset({ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED,
                          ICMP_PARAMETERPROB})
ICMP6_ERRORS = frozenset({ICMP6_DST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED,
                          ICMP6_PARAM_PROB})

_ECHO4 = frozenset({ICMP_ECHOREPLY, ICMP_ECHO})
_ECHO6 = frozenset({ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST})

# The first bytes of every payload are a per-request random cookie: a reply
# counts only if it echoes them, so stale replies to an earlier run that
# reused the identifier and sequence never match.
COOKIE_SIZE = 8

_HEADER = struct.Struct("!BBHHH")
_ID_SEQ = struct.Struct("!HH")
_IPV6_EXT_HEADERS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_NEED_SWAP = sys.byteorder == "little"


class Echo(NamedTuple):
    """An echo reply (or, with ``request``, an echo request) as parsed.

    A NamedTuple rather than a dataclass: one is built per packet on the hot
    path, and the engine turns the ones that count into public results.
    """

    source: str
    ident: int
    seq: int
    payload: bytes
    ttl: int | None
    request: bool


class Quoted(NamedTuple):
    """An ICMP error about one of our echo requests (the quote says which)."""

    reporter: str
    type: int
    code: int
    target: str
    ident: int
    seq: int
    payload: bytes
    ttl: int | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A packet that is not ours to count, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class ExtendedError:
    """``struct sock_extended_err`` from an IP_RECVERR/IPV6_RECVERR control message."""

    errno: int
    origin: int
    type: int
    code: int
    info: int
    offender: str | None


Parsed = Echo | Quoted | Rejected

_TOO_SHORT = Rejected("truncated: shorter than an ICMP header")
_BAD_SUM = Rejected("bad ICMP checksum")
_NOT_ICMP = Rejected("not ICMP")
_BAD_IP = Rejected("malformed IPv4 header")
_BAD_QUOTE = Rejected("ICMP error quoting something other than an echo request")
_UNKNOWN = Rejected("ICMP type neither echo nor error")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``, as a host-order integer.

    Summing native-order 16-bit words and swapping once at the end gives the
    same result as summing big-endian words (one's-complement addition
    commutes with byte swapping), and is several times faster in Python.
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    if _NEED_SWAP:
        total = ((total >> 8) | (total << 8)) & 0xFFFF
    return total


def make_payload(cookie: bytes, size: int) -> bytes:
    """``size`` payload bytes: the cookie first, then iputils' counting pattern."""
    if size < 0:
        raise ValueError(f"payload size must be >= 0, not {size}")
    if size <= len(cookie):
        return cookie[:size]
    fill = bytes((i & 0xFF) for i in range(len(cookie), size))
    return cookie + fill


def build_echo(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP (AF_INET) or ICMPv6 (AF_INET6) echo request.

    The IPv4 checksum is filled in; for ICMPv6 the kernel computes it (it
    covers a pseudo-header with addresses only the kernel knows for sure),
    and a ping datagram socket recomputes both anyway.
    """
    if not 0 <= ident <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise ValueError(f"identifier and sequence must fit 16 bits: {ident}, {seq}")
    if family == socket.AF_INET6:
        return _HEADER.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload
    if family != socket.AF_INET:
        raise ValueError(f"ICMP echo needs AF_INET or AF_INET6, not {family}")
    message = _HEADER.pack(ICMP_ECHO, 0, 0, ident, seq) + payload
    total = checksum(message)
    return message[:2] + total.to_bytes(2, "big") + message[4:]


def parse_ipv4(packet: bytes, *, verify: bool = True) -> Parsed:
    """Parse what a raw AF_INET ICMP socket receives: IPv4 header + ICMP."""
    size = len(packet)
    if size < 20:
        return _BAD_IP
    first = packet[0]
    ihl = (first & 0x0F) * 4
    if first >> 4 != 4 or ihl < 20 or size < ihl:
        return _BAD_IP
    if packet[9] != socket.IPPROTO_ICMP:
        return _NOT_ICMP
    declared = (packet[2] << 8) | packet[3]
    if declared != size:
        return Rejected(f"IPv4 length {declared} but {size} bytes received")
    return parse_icmp4(packet[ihl:], socket.inet_ntoa(packet[12:16]), packet[8],
                       verify=verify)


def parse_icmp4(message: bytes, source: str, ttl: int | None, *,
                verify: bool = True) -> Parsed:
    """Parse an ICMP message (no IP header), e.g. from a ping datagram socket."""
    if len(message) < 8:
        return _TOO_SHORT
    if verify and checksum(message) != 0:
        return _BAD_SUM
    kind = message[0]
    if kind in _ECHO4:
        if message[1] != 0:
            return Rejected(f"echo with code {message[1]}")
        ident, seq = _ID_SEQ.unpack_from(message, 4)
        return Echo(source, ident, seq, message[8:], ttl, kind == ICMP_ECHO)
    if kind in ICMP4_ERRORS:
        return _quoted4(message, source, ttl)
    return _UNKNOWN


def _quoted4(message: bytes, reporter: str, ttl: int | None) -> Parsed:
    inner = message[8:]
    if len(inner) < 20 or inner[0] >> 4 != 4:
        return _BAD_QUOTE
    ihl = (inner[0] & 0x0F) * 4
    if ihl < 20 or len(inner) < ihl + 8 or inner[9] != socket.IPPROTO_ICMP:
        return _BAD_QUOTE
    echo = inner[ihl:]
    if echo[0] != ICMP_ECHO:
        return _BAD_QUOTE
    ident, seq = _ID_SEQ.unpack_from(echo, 4)
    target = socket.inet_ntoa(inner[16:20])
    return Quoted(reporter, message[0], message[1], target, ident, seq, echo[8:], ttl)


def parse_icmp6(message: bytes, source: str, hoplimit: int | None) -> Parsed:
    """Parse an ICMPv6 message (raw and datagram sockets never show the IPv6 header).

    The kernel verifies ICMPv6 checksums on both kinds of socket before
    delivery, so there is nothing left to verify here.
    """
    if len(message) < 8:
        return _TOO_SHORT
    kind = message[0]
    if kind in _ECHO6:
        if message[1] != 0:
            return Rejected(f"echo with code {message[1]}")
        ident, seq = _ID_SEQ.unpack_from(message, 4)
        return Echo(source, ident, seq, message[8:], hoplimit, kind == ICMP6_ECHO_REQUEST)
    if kind in ICMP6_ERRORS:
        return _quoted6(message, source, hoplimit)
    return _UNKNOWN


def _quoted6(message: bytes, reporter: str, hoplimit: int | None) -> Parsed:
    inner = message[8:]
    if len(inner) < 40 or inner[0] >> 4 != 6:
        return _BAD_QUOTE
    target = socket.inet_ntop(socket.AF_INET6, inner[24:40])
    nexthdr, offset = inner[6], 40
    # Walk the extension headers a router may quote before the ICMPv6 header.
    while nexthdr in _IPV6_EXT_HEADERS or nexthdr == 44:
        if len(inner) < offset + 8:
            return _BAD_QUOTE
        length = 8 if nexthdr == 44 else (inner[offset + 1] + 1) * 8
        nexthdr, offset = inner[offset], offset + length
    if nexthdr != socket.IPPROTO_ICMPV6 or len(inner) < offset + 8:
        return _BAD_QUOTE
    if inner[offset] != ICMP6_ECHO_REQUEST:
        return _BAD_QUOTE
    ident, seq = _ID_SEQ.unpack_from(inner, offset + 4)
    return Quoted(reporter, message[0], message[1], target, ident, seq,
                  inner[offset + 8:], hoplimit)


_EXTENDED = struct.Struct("=IBBBBII")
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3


def parse_extended_error(data: bytes) -> ExtendedError:
    """Decode ``struct sock_extended_err`` and the offender address after it.

    Raises ValueError when the control data is shorter than the structure.
    """
    if len(data) < _EXTENDED.size:
        raise ValueError(f"sock_extended_err needs {_EXTENDED.size} bytes, got {len(data)}")
    err, origin, kind, code, _pad, info, _data = _EXTENDED.unpack_from(data)
    offender = _sockaddr_host(data[_EXTENDED.size:])
    return ExtendedError(err, origin, kind, code, info, offender)


def _sockaddr_host(raw: bytes) -> str | None:
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntoa(raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def icmp6_filter(passing: frozenset[int] | set[int]) -> bytes:
    """A ``struct icmp6_filter`` passing only ``passing`` types.

    Linux's convention: a set bit blocks the type (ICMP6_FILTER_SETBLOCK).
    """
    words = [0xFFFFFFFF] * 8
    for kind in passing:
        if not 0 <= kind <= 255:
            raise ValueError(f"ICMPv6 type out of range: {kind}")
        words[kind >> 5] &= ~(1 << (kind & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)


_DESCRIPTIONS4: dict[tuple[int, int], str] = {
    (3, 0): "Destination Net Unreachable",
    (3, 1): "Destination Host Unreachable",
    (3, 2): "Destination Protocol Unreachable",
    (3, 3): "Destination Port Unreachable",
    (3, 4): "Frag needed",
    (3, 5): "Source Route Failed",
    (3, 6): "Destination Net Unknown",
    (3, 7): "Destination Host Unknown",
    (3, 9): "Destination Net Prohibited",
    (3, 10): "Destination Host Prohibited",
    (3, 13): "Packet filtered",
    (4, 0): "Source Quench",
    (11, 0): "Time to live exceeded",
    (11, 1): "Frag reassembly time exceeded",
    (12, 0): "Parameter problem",
}
_DESCRIPTIONS6: dict[tuple[int, int], str] = {
    (1, 0): "Destination unreachable: No route",
    (1, 1): "Destination unreachable: Administratively prohibited",
    (1, 2): "Destination unreachable: Beyond scope of source address",
    (1, 3): "Destination unreachable: Address unreachable",
    (1, 4): "Destination unreachable: Port unreachable",
    (1, 5): "Destination unreachable: Source address failed ingress/egress policy",
    (1, 6): "Destination unreachable: Reject route to destination",
    (2, 0): "Packet too big",
    (3, 0): "Time exceeded: Hop limit",
    (3, 1): "Time exceeded: Defragmentation failure",
    (4, 0): "Parameter problem: Erroneous header field",
    (4, 1): "Parameter problem: Unknown next header",
    (4, 2): "Parameter problem: Unrecognized option",
}


def describe(family: int, kind: int, code: int) -> str:
    """iputils' words for an ICMP/ICMPv6 error type and code."""
    table = _DESCRIPTIONS6 if family == socket.AF_INET6 else _DESCRIPTIONS4
    return table.get((kind, code), f"ICMP type {kind} code {code}")
