"""An authoritative DNS server on port 53 under asyncio, from a small zone.

    python examples/async_dns.py [--port 53] [--ip ::] [--record NAME=ADDRESS ...]

The asyncio twin of examples/dns_server.py (same zone, same answers, dnslib's
wire format): A and AAAA over UDP and TCP, NXDOMAIN inside the zone, REFUSED
outside it. Port 53 comes from gprocket.aio's privilege ladder without
blocking the loop, so an unprivileged user allowed to use the gprocket
helper can run it. With ``--ip ::`` one dual-stack socket per protocol
serves IPv4 and IPv6.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import struct
import sys
from pathlib import Path
from typing import Any

# The zone and the answer logic are the gevent example's: one source of truth.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dns_server import ZONE, answer, parse_record

from gprocket import aio


class UdpDns(asyncio.DatagramProtocol):
    """DNS over UDP: one datagram in, one out."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer(self.zone, data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def tcp_handler(zone: dict[str, list[str]]) -> Any:
    """DNS over TCP: messages framed by a two-byte length."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(struct.unpack("!H", head)[0])
                reply = answer(zone, data)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def serve(ip: str, port: int, zone: dict[str, list[str]]) -> None:
    """Bind both sockets through the ladder, then serve until cancelled."""
    address = ipaddress.ip_address(ip)
    shown = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    family = "unspec" if address.version == 6 and address.is_unspecified else None
    ip_arg = None if family == "unspec" else ip
    udp_sock, tcp_sock = await asyncio.gather(
        aio.open(port, protocol="udp", ip=ip_arg, family=family),
        aio.open(port, protocol="tcp", ip=ip_arg, family=family))
    print(f"dns udp on {shown} via {udp_sock.rung}", flush=True)
    print(f"dns tcp on {shown} via {tcp_sock.rung}", flush=True)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpDns(zone), sock=udp_sock)
    server = await asyncio.start_server(tcp_handler(zone), sock=tcp_sock)
    try:
        async with server:
            await server.serve_forever()
    finally:
        transport.close()
        await aio.aclose_all()


def main(argv: list[str] | None = None) -> int:
    """Serve the zone over UDP and TCP until interrupted."""
    parser = argparse.ArgumentParser(description="authoritative DNS (asyncio)")
    parser.add_argument("--port", type=int, default=53, help="port (default 53)")
    parser.add_argument("--ip", default="::",
                        help="address to bind (default :: = IPv4 and IPv6)")
    parser.add_argument("--record", type=parse_record, action="append", default=[],
                        metavar="NAME=ADDRESS", help="add an A or AAAA record")
    args = parser.parse_args(argv)
    zone = {name: list(addresses) for name, addresses in ZONE.items()}
    for name, address in args.record:
        zone.setdefault(name, []).append(address)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.ip, args.port, zone))
    return 0


if __name__ == "__main__":
    sys.exit(main())
