"""Ping with scapy as an unprivileged user: every scapy socket from gprocket's ladder.

    python examples/scapy_ping.py HOST [COUNT]

``gprocket.scapy.install()`` makes scapy open its sockets through the
privilege ladder (the helper's policy needs ``allow SUBJECT packet``, and
``allow SUBJECT raw 255`` for loopback addresses); nothing else changes in a
scapy program. Exits 0 when every echo was answered.
"""

from __future__ import annotations

import sys

from scapy.layers.inet import ICMP, IP
from scapy.sendrecv import sr

import gprocket.scapy


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    host, count = argv[1], int(argv[2]) if len(argv) == 3 else 3
    gprocket.scapy.install()
    received = 0
    for seq in range(count):
        request = IP(dst=host) / ICMP(id=0x6770, seq=seq) / b"gprocket scapy ping"
        answered, _ = sr(request, timeout=2, verbose=0)
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
