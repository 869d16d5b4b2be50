"""Watch ARP frames without root, in active mode, while other greenlets run.

    python examples/sniff.py IFACE [SECONDS]

Prints every ARP frame on IFACE for SECONDS (default 10) while a second
greenlet keeps printing a heartbeat, then the kernel's counters. The
socket comes from the privilege ladder: root, CAP_NET_RAW, or the helper
with a policy line ``allow group:NAME packet``.
"""

from __future__ import annotations

import sys

import gevent

from gprocket.packet import bpf
from gprocket.packet.rawsock import Frame, RawSocket
from gprocket.packet.summary import summarize


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    interface = argv[0]
    seconds = float(argv[1]) if len(argv) == 2 else 10.0

    def show(frame: Frame) -> None:
        print(summarize(frame.data, frame.timestamp), flush=True)

    def heartbeat() -> None:
        while True:
            gevent.sleep(1)
            print("... still listening", file=sys.stderr, flush=True)

    with RawSocket(interface, filter=bpf.ethertype(0x0806)) as sock:
        print(f"{interface}: index {sock.ifindex}, MAC {sock.mac}, MTU {sock.mtu}, "
              f"opened by rung {sock.backend.sock.rung!r}", file=sys.stderr)
        beat = gevent.spawn(heartbeat)
        sock.start(show)          # active mode: a greenlet calls show() per frame
        gevent.sleep(seconds)
        sock.stop()
        beat.kill()
        stats = sock.stats()
    print(f"{stats.received} frames received, {stats.dropped} dropped by the kernel",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
