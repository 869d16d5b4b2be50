"""`gprocket demo`: the main job in one gevent process.

Binds a low UDP port and answers a datagram, pings 127.0.0.1 and ::1 over
ICMP/ICMPv6, and captures the frames all of that puts on `lo` — each through
the privilege ladder, printing which rung served it — while a ticker greenlet
shows the hub was never blocked. Meant to run as an unprivileged user inside a
network namespace (scripts/demo.sh sets that up).
"""

from __future__ import annotations

import argparse
import os
import pwd
import socket
import struct
import sys
import time

import gevent
from gevent import socket as gsocket

import gprocket
from gprocket import icmp

ETH_P_ALL = 0x0003


def capabilities_in_effect() -> str:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                value = int(line.split()[1], 16)
                return "none" if value == 0 else hex(value)
    return "unknown"


def serve_one_datagram(sock: gprocket.Socket) -> None:
    data, peer = sock.recvfrom(2048)
    sock.sendto(b"echo: " + data, peer)


def udp_round_trip(port: int) -> str:
    client = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.settimeout(5)
        client.sendto(b"hello from an unprivileged user", ("127.0.0.1", port))
        reply, _ = client.recvfrom(2048)
        return bytes(reply).decode()
    finally:
        client.close()


def describe_frame(frame: bytes) -> str:
    if len(frame) < 14:
        return f"{len(frame)} bytes (runt)"
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == 0x0800 and len(frame) >= 34:
        proto = frame[23]
        src, dst = socket.inet_ntop(socket.AF_INET, frame[26:30]), socket.inet_ntop(
            socket.AF_INET, frame[30:34])
        name = {1: "ICMP", 6: "TCP", 17: "UDP"}.get(proto, f"proto {proto}")
        return f"IPv4 {src} > {dst} {name}, {len(frame)} bytes"
    if ethertype == 0x86DD and len(frame) >= 54:
        nxt = frame[20]
        src, dst = socket.inet_ntop(socket.AF_INET6, frame[22:38]), socket.inet_ntop(
            socket.AF_INET6, frame[38:54])
        name = {58: "ICMPv6", 6: "TCP", 17: "UDP"}.get(nxt, f"next header {nxt}")
        return f"IPv6 {src} > {dst} {name}, {len(frame)} bytes"
    return f"ethertype 0x{ethertype:04x}, {len(frame)} bytes"


# sockaddr_ll's pkttype: a packet socket on lo sees each frame leave and arrive.
PACKET_DIRECTIONS = {socket.PACKET_HOST: "in ", socket.PACKET_OUTGOING: "out"}


def capture(sock: gprocket.Socket, frames: list[tuple[str, bytes]], limit: int) -> None:
    while len(frames) < limit:
        frame, address = sock.recvfrom(65535)
        frames.append((PACKET_DIRECTIONS.get(address[2], "   "), bytes(frame)))


def main(argv: list[str]) -> int:
    try:
        return run_demo(argv)
    except (gprocket.GprocketError, OSError) as err:
        print(f"gprocket demo: {err}", file=sys.stderr)
        return 1


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gprocket demo", description=__doc__)
    parser.add_argument("--port", type=int, default=53, help="low UDP port to bind")
    parser.add_argument("--frames", type=int, default=12, help="frames to capture")
    args = parser.parse_args(argv)

    user = pwd.getpwuid(os.getuid()).pw_name
    print(f"gprocket demo as {user} (uid {os.getuid()}), effective capabilities "
          f"{capabilities_in_effect()}")
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.01)
            ticks += 1

    ticking = gevent.spawn(ticker)
    started = time.monotonic()

    sniffer = gprocket.open(0, family="packet", type="raw", protocol=ETH_P_ALL,
                            interface="lo")
    print(f"packet socket on lo        served by rung {sniffer.rung!r}")
    frames: list[tuple[str, bytes]] = []
    capturing = gevent.spawn(capture, sniffer, frames, args.frames)

    udp = gprocket.open(args.port, protocol="udp", ip="127.0.0.1")
    print(f"UDP port {args.port} on 127.0.0.1  served by rung {udp.rung!r}")
    server = gevent.spawn(serve_one_datagram, udp)
    print(f"  datagram answered: {udp_round_trip(args.port)!r}")
    server.join(timeout=5)

    pings = [gevent.spawn(icmp.ping, target, count=3, interval=0.2, timeout=1.0)
             for target in ("127.0.0.1", "::1")]
    gevent.joinall(pings, raise_error=True)
    for job in pings:
        host = job.value
        print(f"ping {host.address:<10} {host.received}/{host.sent} replies, "
              f"avg rtt {host.avg_rtt:.3f} ms, {host.transport} socket, "
              f"rung {host.rung!r}")

    capturing.join(timeout=5)
    capturing.kill()
    print(f"captured {len(frames)} frames on lo:")
    for direction, frame in frames:
        print(f"  {direction} {describe_frame(frame)}")

    ticking.kill()
    elapsed = time.monotonic() - started
    print(f"ticker ran {ticks} times in {elapsed:.2f} s: the hub never blocked")
    for sock in (udp, sniffer):
        sock.close()
    ok = all(job.value.received > 0 for job in pings) and frames
    return 0 if ok else 1
