"""Ping a few hosts while another greenlet keeps working; then sweep a subnet.

    /opt/gprocket/venv/bin/python examples/ping.py [HOST ...]

Works unprivileged: an ICMP datagram socket when net.ipv4.ping_group_range
allows it (capsetup install opens it to the helper's group), else a raw
socket from the gprocket helper where its policy has a `raw` rule.
"""

from __future__ import annotations

import sys

import gevent

from gprocket import icmp


def heartbeat() -> None:
    while True:
        print("  (heartbeat: the hub is free while we wait for replies)")
        gevent.sleep(0.5)


def main(hosts: list[str]) -> int:
    beat = gevent.spawn(heartbeat)
    try:
        for name in hosts:
            host = icmp.ping(name, count=3, interval=0.3, timeout=1)
            print(f"{name}: {host.received}/{host.sent} replies via {host.transport} "
                  f"({host.rung}), avg {host.avg_rtt:.3f} ms, loss {host.packet_loss:.0%}")
            for error in host.errors:
                print(f"  seq {error.seq}: {error.description} from {error.reporter}")
        # Every 127.0.0.x at once, one socket, results as they complete.
        sweep = [f"127.0.0.{i}" for i in range(1, 255)]
        alive = sum(h.is_alive for h in icmp.multiping_iter(sweep, timeout=1))
        print(f"127.0.0.0/24: {alive} of {len(sweep)} alive")
    finally:
        beat.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["127.0.0.1", "::1"]))
