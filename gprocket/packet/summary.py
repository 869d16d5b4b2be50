"""One-line, tcpdump-like summaries of Ethernet frames (for ``gprocket sniff``)."""

from __future__ import annotations

import socket
import struct
import time

__all__ = ["summarize"]

_ICMP = {0: "echo reply", 3: "unreachable", 8: "echo request", 11: "time exceeded"}
_ICMP6 = {1: "destination unreachable", 128: "echo request", 129: "echo reply",
          133: "router solicitation", 134: "router advertisement",
          135: "neighbor solicitation", 136: "neighbor advertisement"}
_TCP_FLAGS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"))


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _transport(proto: int, src: str, dst: str, body: bytes, v6: bool) -> str:
    if proto == 6 and len(body) >= 20:
        sport, dport, seq, _ack, off, flags = struct.unpack_from("!HHIIBB", body)
        marks = "".join(c for bit, c in _TCP_FLAGS if flags & bit) or "none"
        payload = len(body) - (off >> 4) * 4
        return f"{src}.{sport} > {dst}.{dport}: Flags [{marks}], seq {seq}, length {payload}"
    if proto == 17 and len(body) >= 8:
        sport, dport, length = struct.unpack_from("!HHH", body)
        return f"{src}.{sport} > {dst}.{dport}: UDP, length {length - 8}"
    if proto == 1 and len(body) >= 8:
        kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", body)
        name = _ICMP.get(kind, f"type {kind}")
        extra = f", id {ident}, seq {seq}" if kind in (0, 8) else ""
        return f"{src} > {dst}: ICMP {name}{extra}, length {len(body)}"
    if proto == 58 and len(body) >= 4:
        kind = body[0]
        return f"{src} > {dst}: ICMP6, {_ICMP6.get(kind, f'type {kind}')}, length {len(body)}"
    family = "ip6" if v6 else "ip"
    return f"{src} > {dst}: {family}-proto-{proto} {len(body)}"


def summarize(frame: bytes | memoryview, timestamp: float | None = None) -> str:
    """Describe an Ethernet frame in one line, tcpdump style."""
    data = bytes(frame)
    stamp = time.time() if timestamp is None else timestamp
    clock = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}"
    if len(data) < 14:
        return f"{clock} [|ether] length {len(data)}"
    (etype,) = struct.unpack_from("!H", data, 12)
    off = 14
    vlan = ""
    if etype == 0x8100 and len(data) >= 18:
        tci, etype = struct.unpack_from("!HH", data, 14)
        vlan = f"vlan {tci & 0xFFF}, "
        off = 18
    body = data[off:]
    if etype == 0x0800 and len(body) >= 20:
        ihl = (body[0] & 0xF) * 4
        total, = struct.unpack_from("!H", body, 2)
        proto = body[9]
        src = socket.inet_ntop(socket.AF_INET, body[12:16])
        dst = socket.inet_ntop(socket.AF_INET, body[16:20])
        return f"{clock} {vlan}IP {_transport(proto, src, dst, body[ihl:total], False)}"
    if etype == 0x86DD and len(body) >= 40:
        plen, nxt = struct.unpack_from("!HB", body, 4)
        src = socket.inet_ntop(socket.AF_INET6, body[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, body[24:40])
        return f"{clock} {vlan}IP6 {_transport(nxt, src, dst, body[40:40 + plen], True)}"
    if etype == 0x0806 and len(body) >= 28:
        (op,) = struct.unpack_from("!H", body, 6)
        sha, spa, tpa = body[8:14], body[14:18], body[24:28]
        sender = socket.inet_ntop(socket.AF_INET, spa)
        target = socket.inet_ntop(socket.AF_INET, tpa)
        if op == 1:
            return f"{clock} {vlan}ARP, Request who-has {target} tell {sender}, length {len(body)}"
        if op == 2:
            return f"{clock} {vlan}ARP, Reply {sender} is-at {_mac(sha)}, length {len(body)}"
        return f"{clock} {vlan}ARP, op {op}, length {len(body)}"
    return (f"{clock} {_mac(data[6:12])} > {_mac(data[0:6])}, {vlan}ethertype {etype:#06x}, "
            f"length {len(data)}")
