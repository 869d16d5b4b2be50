"""An authoritative DNS server on port 53 under gevent, from a small zone.

    python examples/dns_server.py [--port 53] [--ip ::] [--record NAME=ADDRESS ...]

Answers A and AAAA queries over UDP and TCP for the names in ZONE (plus any
``--record``), NXDOMAIN for other names inside the zone, REFUSED outside it.
The wire format is dnslib's. Port 53 comes from the privilege ladder, so an
unprivileged user allowed to use the gprocket helper can run it. With the
default ``--ip ::`` one dual-stack socket per protocol serves IPv4 and IPv6.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import struct
import sys
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord
from gevent.server import DatagramServer, StreamServer

from gprocket.servers import listener

ORIGIN = "gprocket.test."
TTL = 300
ZONE: dict[str, list[str]] = {
    "gprocket.test.": ["192.0.2.53", "2001:db8::53"],
    "www.gprocket.test.": ["192.0.2.80", "192.0.2.81", "2001:db8::80"],
    "v4.gprocket.test.": ["192.0.2.4"],
    "v6.gprocket.test.": ["2001:db8::6"],
}


def answer(zone: dict[str, list[str]], data: bytes) -> bytes | None:
    """The reply to one DNS query in wire format; None for a message that is no query."""
    try:
        query = DNSRecord.parse(data)
    except (DNSError, struct.error, IndexError, ValueError):
        return None
    if query.header.qr or not query.questions:
        return None
    reply = query.reply()
    question = query.q
    name = str(question.qname).lower()
    if not name.endswith(ORIGIN) and name != ORIGIN:
        reply.header.aa = 0
        reply.header.rcode = RCODE.REFUSED
    elif name not in zone:
        reply.header.rcode = RCODE.NXDOMAIN
    else:
        for text in zone[name]:
            address = ipaddress.ip_address(text)
            if address.version == 4 and question.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(text), ttl=TTL))
            elif address.version == 6 and question.qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.AAAA, rdata=AAAA(text), ttl=TTL))
    packed: bytes = reply.pack()
    return packed


class UdpDns(DatagramServer):  # type: ignore[misc]
    """DNS over UDP: one datagram in, one out."""

    def __init__(self, sock: Any, zone: dict[str, list[str]]) -> None:
        super().__init__(sock)
        self.zone = zone

    def handle(self, data: bytes, address: Any) -> None:
        reply = answer(self.zone, data)
        if reply is not None:
            self.sendto(reply, address)


class TcpDns(StreamServer):  # type: ignore[misc]
    """DNS over TCP: messages framed by a two-byte length."""

    def __init__(self, sock: Any, zone: dict[str, list[str]]) -> None:
        super().__init__(sock)
        self.zone = zone

    def handle(self, conn: Any, address: Any) -> None:
        with conn:
            stream = conn.makefile("rb")
            while len(head := stream.read(2)) == 2:
                data = stream.read(struct.unpack("!H", head)[0])
                reply = answer(self.zone, data)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)


def parse_record(text: str) -> tuple[str, str]:
    """``NAME=ADDRESS`` -> (fully qualified lower-case name, address)."""
    name, sep, address = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=ADDRESS")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{address!r} is not an IP address") from None
    name = name.lower().rstrip(".") + "."
    return name, address


def main(argv: list[str] | None = None) -> int:
    """Serve the zone over UDP and TCP until interrupted."""
    parser = argparse.ArgumentParser(description="authoritative DNS for " + ORIGIN)
    parser.add_argument("--port", type=int, default=53, help="port (default 53)")
    parser.add_argument("--ip", default="::",
                        help="address to bind (default :: = IPv4 and IPv6)")
    parser.add_argument("--record", type=parse_record, action="append", default=[],
                        metavar="NAME=ADDRESS", help="add an A or AAAA record")
    args = parser.parse_args(argv)
    zone = {name: list(addresses) for name, addresses in ZONE.items()}
    for name, address in args.record:
        zone.setdefault(name, []).append(address)
    ip = ipaddress.ip_address(args.ip)
    address = f"[{ip}]:{args.port}" if ip.version == 6 else f"{ip}:{args.port}"
    dual = ip.version == 6 and ip.is_unspecified
    udp_sock = listener(address, "udp", dualstack=dual)
    tcp_sock = listener(address, "tcp", dualstack=dual)
    print(f"dns udp on {address} via {udp_sock.rung}", flush=True)
    print(f"dns tcp on {address} via {tcp_sock.rung}", flush=True)
    UdpDns(udp_sock, zone).start()
    with contextlib.suppress(KeyboardInterrupt):
        TcpDns(tcp_sock, zone).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
