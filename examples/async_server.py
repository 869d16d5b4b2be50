"""asyncio servers on privileged ports: HTTP on 443 (TCP) and echo on 53 (UDP).

    python examples/async_server.py [--ip ::] [--tcp-port 443] [--udp-port 53]
    gprocket run examples/async_server.py --bind-yourself --ip ::1

By default the two sockets come from the privilege ladder before the event
loop starts: ``gprocket.open_fd()`` gives a bound (and, for TCP, listening)
descriptor, wrapped by ``socket.socket(fileno=fd)`` and passed to asyncio as
``sock=``. asyncio needs nothing else: it makes the socket non-blocking and
serves it like one it made itself.

With ``--bind-yourself`` the program binds by address as any asyncio program
does (``asyncio.start_server(host, port)``, ``create_datagram_endpoint(
local_addr=...)``): run it unprivileged and the kernel refuses port 443;
run it under ``gprocket run`` and the refused binds are served by the ladder.

It prints one line per server with its address, then serves until
interrupted: every HTTP request gets ``hello from asyncio on <address>``,
every datagram comes back prefixed with ``echo: ``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from typing import Any

import gprocket


async def handle_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one HTTP/1.0-style request (whatever it asks) and close."""
    with contextlib.suppress(ConnectionError):
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # the request line and headers: not needed to say hello
        host = writer.get_extra_info("sockname")[0]
        body = f"hello from asyncio on {host}\n".encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    writer.close()


class Echo(asyncio.DatagramProtocol):
    """Send every datagram back to its sender, prefixed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo: " + data, addr)


def ladder_sockets(ip: str, tcp_port: int, udp_port: int) -> tuple[socket.socket, socket.socket]:
    """Both sockets from the privilege ladder, before any event loop runs.

    family="unspec" follows the address: "::" is dual-stack (IPv4 too), a
    specific IPv6 address IPv6-only, an IPv4 address plain inet.
    """
    tcp = socket.socket(fileno=gprocket.open_fd(tcp_port, protocol="tcp", family="unspec", ip=ip))
    udp = socket.socket(fileno=gprocket.open_fd(udp_port, protocol="udp", family="unspec", ip=ip))
    return tcp, udp


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    if args.bind_yourself:
        server = await asyncio.start_server(handle_http, args.ip, args.tcp_port)
        transport, _ = await loop.create_datagram_endpoint(
            Echo, local_addr=(args.ip, args.udp_port))
    else:
        tcp, udp = args.sockets
        server = await asyncio.start_server(handle_http, sock=tcp)
        transport, _ = await loop.create_datagram_endpoint(Echo, sock=udp)
    for sock in server.sockets:
        print(f"http tcp on {sock.getsockname()[0]} port {sock.getsockname()[1]}", flush=True)
    here = transport.get_extra_info("sockname")
    print(f"echo udp on {here[0]} port {here[1]}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; gprocket.PrivilegeError if no rung can bind."""
    parser = argparse.ArgumentParser(description="asyncio HTTP and UDP echo on low ports")
    parser.add_argument("--ip", default="::", help="address to bind (default :: = IPv4 and IPv6)")
    parser.add_argument("--tcp-port", type=int, default=443, help="HTTP port (default 443)")
    parser.add_argument("--udp-port", type=int, default=53, help="echo port (default 53)")
    parser.add_argument("--bind-yourself", action="store_true",
                        help="bind by address like any asyncio program (for gprocket run)")
    args = parser.parse_args(argv)
    if not args.bind_yourself:
        args.sockets = ladder_sockets(args.ip, args.tcp_port, args.udp_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
