"""Ping with scapy as an unprivileged user: every scapy socket from gprocket's ladder.

    python examples/scapy_ping.py HOST [COUNT]

``gprocket.scapy.install()`` makes scapy open its sockets through the
privilege ladder (the helper's policy needs ``allow SUBJECT packet``, and
``allow SUBJECT raw 255`` for loopback addresses); nothing else changes in a
scapy program. Here one socket, chosen as scapy's ``sr()`` chooses it,
serves every echo. Exits 0 when every echo was answered.
"""

from __future__ import annotations

import sys

from scapy.config import conf
from scapy.interfaces import resolve_iface
from scapy.layers.inet import ICMP, IP

import gprocket.scapy


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 3:
        print("usage: scapy_ping.py HOST [COUNT]", file=sys.stderr)
        return 2
    host, count = argv[1], int(argv[2]) if len(argv) == 3 else 3
    gprocket.scapy.install()
    iface = resolve_iface(conf.route.route(host)[0])
    received = 0
    with iface.l3socket(ipv6=False)(iface=iface) as sock:
        print(f"PING {host} on {iface.name}: {type(sock).__name__} from rung {sock.rung}")
        for seq in range(count):
            request = IP(dst=host) / ICMP(id=0x6770, seq=seq) / b"gprocket scapy ping"
            answered, _ = sock.sr(request, timeout=2, verbose=0)
            sent, reply = answered[0] if answered else (None, None)
            if reply is not None and reply.haslayer(ICMP) and reply[ICMP].type == 0:
                received += 1
                rtt_ms = (reply.time - sent.sent_time) * 1000
                print(f"reply from {reply[IP].src}: icmp_seq={seq} time={rtt_ms:.2f} ms")
            else:
                print(f"no reply: icmp_seq={seq}")
    print(f"{count} sent, {received} received")
    return 0 if received == count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
