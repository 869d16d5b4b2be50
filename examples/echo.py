"""Echo over TCP and UDP on IPv6, on a privileged port (procket's echo example).

    python examples/echo.py [--port 7] [--ip ::]

Both listeners come from the privilege ladder: run it as any user allowed to
use the gprocket helper (or with CAP_NET_BIND_SERVICE) and it binds port 7.
It prints one line per listener saying which rung served it, then serves
until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from gevent.server import DatagramServer, StreamServer

from gprocket.servers import listener


def handle_tcp(conn: Any, address: Any) -> None:
    """Send every byte back until the peer closes."""
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


class UdpEcho(DatagramServer):  # type: ignore[misc]
    """Send every datagram back to where it came from."""

    def handle(self, data: bytes, address: Any) -> None:
        self.sendto(data, address)


def main(argv: list[str] | None = None) -> int:
    """Serve TCP and UDP echo until interrupted; PrivilegeError if no rung can bind."""
    parser = argparse.ArgumentParser(description="TCP and UDP echo on IPv6")
    parser.add_argument("--port", type=int, default=7, help="port to serve (default 7)")
    parser.add_argument("--ip", default="::", help="IPv6 address to bind (default ::)")
    args = parser.parse_args(argv)
    address = f"[{args.ip}]:{args.port}"
    tcp_sock = listener(address, "tcp")
    udp_sock = listener(address, "udp")
    print(f"echo tcp on {address} via {tcp_sock.rung}", flush=True)
    print(f"echo udp on {address} via {udp_sock.rung}", flush=True)
    UdpEcho(udp_sock).start()
    with contextlib.suppress(KeyboardInterrupt):
        StreamServer(tcp_sock, handle_tcp).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
