"""`gprocket ping`: iputils ping's lines; `--many`: fping 5's; `--traceroute`.

``gprocket ping [options] HOST`` prints what iputils' ``ping`` prints, with
its exit codes (gprocket/cli/_iputils.py); ``gprocket ping --many [fping
options] TARGETS`` what ``fping`` prints, with fping's exit codes
(gprocket/cli/_fping.py); ``--traceroute HOST`` is traceroute -n's shape,
exit 0 reached, 1 not reached, 2 error.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from typing import TextIO

from gprocket import icmp
from gprocket.cli import _fping, _iputils


def _traceroute_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gprocket ping --traceroute",
        description="Trace the path to HOST with ICMP/ICMPv6 echo probes, without root.")
    parser.add_argument("--traceroute", action="store_true", help="this mode")
    parser.add_argument("hosts", nargs="*", metavar="HOST")
    parser.add_argument("-c", dest="count", type=int, default=3,
                        help="probes per hop (default 3)")
    parser.add_argument("-W", dest="timeout", type=float, default=2.0,
                        help="seconds to wait for each probe (default 2)")
    parser.add_argument("-s", dest="size", type=int, default=56,
                        help="payload bytes (default 56)")
    parser.add_argument("-I", dest="interface", default=None,
                        help="interface name or source address")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    group.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6 only")
    parser.add_argument("--socket", dest="socket_kind", default="auto",
                        choices=("auto", "datagram", "raw"),
                        help="which ICMP socket to use (default: datagram if allowed, else raw)")
    parser.add_argument("--max-hops", dest="max_hops", type=int, default=30,
                        help="highest TTL / hop limit (default 30)")
    return parser


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _traceroute(args: argparse.Namespace, out: TextIO) -> int:
    if not 1 <= args.max_hops <= 255:
        print("gprocket ping: --max-hops must be 1..255", file=sys.stderr)
        return 2
    if len(args.hosts) != 1:
        print("gprocket ping --traceroute: give exactly one HOST", file=sys.stderr)
        return 2
    host = args.hosts[0]
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(args.family or 0)
    source, interface = _iputils.source_or_interface(args.interface)
    count = args.count
    try:
        af, address, _ = icmp.resolve(host, family)
        print(f"traceroute to {host} ({address}), {args.max_hops} hops max, "
              f"{args.size} byte packets", file=out, flush=True)
        trace = icmp.traceroute(address, max_hops=args.max_hops, count=count,
                                timeout=args.timeout, size=args.size, source=source,
                                interface=interface, family=af,
                                socket_kind=args.socket_kind)
    except (OSError, ValueError) as err:
        print(f"gprocket ping: {host}: {err}", file=sys.stderr)
        return 2
    for hop in trace.hops:
        # traceroute -n's shape: " 1  10.0.0.1  0.123 ms  0.101 ms  *"
        cells = [f"{_ms(rtt)} ms" for rtt in hop.rtts]
        cells += ["*"] * max(hop.sent - len(hop.rtts), 0)
        who = "  ".join(hop.addresses)
        line = f"{hop.ttl:>2}  {who + '  ' if who else ''}{'  '.join(cells)}"
        marks = [f"!{error.description}" for error in hop.errors]
        print(" ".join([line, *marks]), file=out)
    return 0 if trace.reached else 1


def main(argv: Sequence[str]) -> int:
    """Run `gprocket ping`; returns the exit code (see the module's docstring)."""
    args = list(argv)
    options = args[:args.index("--")] if "--" in args else args
    if "--many" in options:
        args.remove("--many")
        return _fping.main(args)
    if "--traceroute" in options:
        return _traceroute(_traceroute_parser().parse_args(args), sys.stdout)
    return _iputils.main(args)
