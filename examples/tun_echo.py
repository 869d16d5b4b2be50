"""A userspace ICMP echo responder on a TUN device, for IPv4 and IPv6.

Every echo request the kernel routes into the device is answered here, in
Python, whatever its destination:

    python examples/tun_echo.py --name gpt0 --address 10.9.0.1/24 --address6 fd00:9::1/64
    ping 10.9.0.2        # answered by this program
    ping fd00:9::2

Unprivileged users get the device from the helper, which needs a policy line
such as ``allow group:gprocket tun gpt* net 10.9.0.0/24,fd00:9::/64``: the
addresses (and so the routes they bring) must lie inside the networks the rule names.
"""

from __future__ import annotations

import argparse
import struct

from gprocket import tuntap


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _reply4(packet: bytes) -> bytes | None:
    ihl = (packet[0] & 0x0F) * 4
    if packet[9] != 1 or len(packet) < ihl + 8 or packet[ihl] != 8:  # ICMP echo request
        return None
    icmp = bytearray(packet[ihl:])
    icmp[0], icmp[2:4] = 0, b"\0\0"  # echo reply, checksum recomputed below
    struct.pack_into("!H", icmp, 2, checksum(bytes(icmp)))
    header = bytearray(packet[:ihl])
    header[8], header[10:12] = 64, b"\0\0"  # fresh TTL; checksum recomputed below
    header[12:16], header[16:20] = packet[16:20], packet[12:16]  # swap source and destination
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header + icmp)


def _reply6(packet: bytes) -> bytes | None:
    # Only a bare ICMPv6 echo request (next header 58, type 128) to a unicast address.
    if len(packet) < 48 or packet[6] != 58 or packet[40] != 128 or packet[24] == 0xFF:
        return None
    src, dst = packet[24:40], packet[8:24]  # the reply goes back the other way
    icmp = bytearray(packet[40:])
    icmp[0], icmp[2:4] = 129, b"\0\0"
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
    struct.pack_into("!H", icmp, 2, checksum(pseudo + bytes(icmp)))
    return packet[:7] + b"\x40" + src + dst + bytes(icmp)


def echo_reply(packet: bytes) -> bytes | None:
    """The echo reply to an IPv4/IPv6 echo request; None for any other packet."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 28:
        return _reply4(packet)
    if version == 6:
        return _reply6(packet)
    return None


def serve(device: tuntap.TunTapDevice, count: int | None = None) -> int:
    """Answer echo requests until *count* replies were sent (forever if None)."""
    replies = 0
    for packet in device:
        reply = echo_reply(packet)
        if reply is not None:
            device.write(reply)
            replies += 1
            if replies == count:
                break
    return replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="gpt0")
    parser.add_argument("--address", default="10.9.0.1/24")
    parser.add_argument("--address6", default="fd00:9::1/64")
    parser.add_argument("--namespace", help="a name under /run/netns")
    parser.add_argument("--count", type=int, help="stop after this many replies")
    args = parser.parse_args(argv)
    with tuntap.open(args.name, "tun", up=True, address=args.address, address6=args.address6,
                     namespace=args.namespace) as device:
        print(f"{device.name} up via {device.rung}; ping any other address of its networks")
        serve(device, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
