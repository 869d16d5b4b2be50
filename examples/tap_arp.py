"""A pretend host behind a TAP device: it answers ARP and ping in Python.

    python examples/tap_arp.py --name gptap0 --address 10.8.0.1/24 --host 10.8.0.2
    ping 10.8.0.2          # the kernel ARPs for it first; `ip neigh` shows our MAC

Reuses the echo logic of tun_echo.py, wrapped in Ethernet frames.
"""

from __future__ import annotations

import argparse
import ipaddress
import struct

from tun_echo import echo_reply

from gprocket import tuntap

MAC = bytes.fromhex("020000000002")  # locally administered
ETH_ARP, ETH_IP = b"\x08\x06", b"\x08\x00"


def arp_reply(frame: bytes, ip: bytes) -> bytes | None:
    """The Ethernet frame answering an ARP request for *ip*; None otherwise."""
    arp = frame[14:42]
    if frame[12:14] != ETH_ARP or len(arp) < 28 or arp[6:8] != b"\0\1" or arp[24:28] != ip:
        return None
    asker_mac, asker_ip = arp[8:14], arp[14:18]
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + MAC + ip + asker_mac + asker_ip
    return asker_mac + MAC + ETH_ARP + body


def answer(frame: bytes, ip: bytes) -> bytes | None:
    """The reply frame to an ARP request or an echo request for *ip*, if any."""
    if frame[12:14] == ETH_ARP:
        return arp_reply(frame, ip)
    if frame[12:14] == ETH_IP and frame[30:34] == ip:
        reply = echo_reply(frame[14:])
        if reply is not None:
            return frame[6:12] + MAC + ETH_IP + reply
    return None


def serve(device: tuntap.TunTapDevice, host: str, count: int | None = None) -> int:
    """Answer for *host* until *count* replies were sent (forever if None)."""
    ip = ipaddress.IPv4Address(host).packed
    replies = 0
    for frame in device:
        reply = answer(frame, ip)
        if reply is not None:
            device.write(reply)
            replies += 1
            if replies == count:
                break
    return replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="gptap0")
    parser.add_argument("--address", default="10.8.0.1/24", help="the kernel's side")
    parser.add_argument("--host", default="10.8.0.2", help="the address answered here")
    parser.add_argument("--namespace", help="a name under /run/netns")
    parser.add_argument("--count", type=int, help="stop after this many replies")
    args = parser.parse_args(argv)
    with tuntap.open(args.name, "tap", up=True, address=args.address,
                     namespace=args.namespace) as device:
        print(f"{device.name} up via {device.rung}; {args.host} is at {MAC.hex(':')}")
        serve(device, args.host, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
