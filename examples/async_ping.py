"""Ping a few hosts from asyncio while another task keeps working; then sweep a subnet.

    /opt/gprocket/venv/bin/python examples/async_ping.py [HOST ...]

Works unprivileged: an ICMP datagram socket when net.ipv4.ping_group_range
allows it, else a raw socket from the gprocket helper (capsetup install),
asked for without ever blocking the event loop.
"""

from __future__ import annotations

import asyncio
import sys

from gprocket import aio


async def heartbeat() -> None:
    while True:
        print("  (heartbeat: the loop is free while we wait for replies)", flush=True)
        await asyncio.sleep(0.5)


async def main(hosts: list[str]) -> int:
    beat = asyncio.get_running_loop().create_task(heartbeat())
    try:
        for name in hosts:
            host = await aio.ping(name, count=3, interval=0.3, timeout=1)
            print(f"{name}: {host.received}/{host.sent} replies via {host.transport} "
                  f"({host.rung}), avg {host.avg_rtt:.3f} ms, loss {host.packet_loss:.0%}",
                  flush=True)
            for error in host.errors:
                print(f"  seq {error.seq}: {error.description} from {error.reporter}")
        # Every 127.0.0.x at once, one socket, results as they complete.
        sweep = [f"127.0.0.{i}" for i in range(1, 255)]
        alive = 0
        async with aio.multiping_iter(sweep, timeout=1) as results:
            async for host in results:
                alive += host.is_alive
        print(f"127.0.0.0/24: {alive} of {len(sweep)} alive", flush=True)
    finally:
        beat.cancel()
        await aio.aclose_all()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or ["127.0.0.1", "::1"])))
