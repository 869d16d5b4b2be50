"""One UDP server per network interface, all on the same privileged port.

    python examples/per_interface.py [--port 7] [--interface NAME ...]

Each server's socket is bound to its interface (SO_BINDTODEVICE, set by the
rung that binds it), so the kernel delivers a datagram to the server of the
interface it arrived on; that server echoes it back prefixed with its
interface's name (``eth0: hello``). Without ``--interface`` every interface
that is up gets a server. The sockets come from the privilege ladder.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

import gevent
from gevent.server import DatagramServer

from gprocket.servers import listener


class InterfaceEcho(DatagramServer):  # type: ignore[misc]
    """Echo each datagram back, prefixed with the interface it came in on."""

    def __init__(self, sock: Any, interface: str) -> None:
        super().__init__(sock)
        self.prefix = f"{interface}: ".encode()

    def handle(self, data: bytes, address: Any) -> None:
        self.sendto(self.prefix + data, address)


def interfaces_up() -> list[str]:
    """Names of the interfaces whose link is administratively up."""
    names = []
    for _, name in socket.if_nameindex():
        flags = Path(f"/sys/class/net/{name}/flags")
        try:
            if int(flags.read_text(), 16) & 0x1:  # IFF_UP
                names.append(name)
        except (OSError, ValueError):
            continue
    return names


def main(argv: list[str] | None = None) -> int:
    """Serve every chosen interface until interrupted; 1 when none is up."""
    parser = argparse.ArgumentParser(description="one UDP echo server per interface")
    parser.add_argument("--port", type=int, default=7, help="port (default 7)")
    parser.add_argument("--interface", action="append", default=[], metavar="NAME",
                        help="serve this interface (repeatable; default: all up)")
    args = parser.parse_args(argv)
    names = args.interface or interfaces_up()
    if not names:
        print("per_interface: no interface is up", file=sys.stderr)
        return 1
    servers = []
    for name in names:
        sock = listener(f":{args.port}", "udp", interface=name)
        print(f"udp 0.0.0.0:{args.port} on {name} via {sock.rung}", flush=True)
        servers.append(InterfaceEcho(sock, name))
    with contextlib.suppress(KeyboardInterrupt):
        gevent.joinall([gevent.spawn(server.serve_forever) for server in servers])
    return 0


if __name__ == "__main__":
    sys.exit(main())
