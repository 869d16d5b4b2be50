"""`gprocket ping`: iputils ping's output and exit codes; `--many` is fping-like.

Exit codes: 0 some reply (``--many``: every host replied; ``--traceroute``:
the host was reached), 1 no reply (``--many``: some host did not;
``--traceroute``: not reached), 2 error (bad arguments, unknown host, no
socket could be had, no route to the host). Ctrl-C (SIGINT) during a
single-host ping stops it and prints the statistics so far, like iputils.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import gevent

from gprocket import icmp
from gprocket._icmp_fast import _engine
from gprocket._icmp_plan import _Job, _job, _prepare
from gprocket._icmp_results import _host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gprocket ping",
        description="Send ICMP/ICMPv6 echo requests without root (iputils ping output; "
                    "--many: fping-style).")
    parser.add_argument("hosts", nargs="*", metavar="HOST")
    parser.add_argument("-c", dest="count", type=int, default=None,
                        help="stop after COUNT requests (default 4; --many: 1)")
    parser.add_argument("-i", dest="interval", type=float, default=1.0,
                        help="seconds between requests to one host (default 1)")
    parser.add_argument("-W", dest="timeout", type=float, default=2.0,
                        help="seconds to wait for each reply (default 2)")
    parser.add_argument("-s", dest="size", type=int, default=56,
                        help="payload bytes (default 56)")
    parser.add_argument("-t", dest="ttl", type=int, default=None, help="IP TTL / hop limit")
    parser.add_argument("-I", dest="interface", default=None,
                        help="interface name or source address")
    parser.add_argument("-q", dest="quiet", action="store_true",
                        help="quiet: only the summary")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-4", dest="family", action="store_const", const=4, help="IPv4 only")
    group.add_argument("-6", dest="family", action="store_const", const=6, help="IPv6 only")
    parser.add_argument("--socket", dest="socket_kind", default="auto",
                        choices=("auto", "datagram", "raw"),
                        help="which ICMP socket to use (default: datagram if allowed, else raw)")
    parser.add_argument("--many", action="store_true",
                        help="ping every HOST (and -f FILE) at once, fping-style summary")
    parser.add_argument("-f", dest="file", default=None,
                        help="with --many: read hosts from FILE, one a line ('-': stdin)")
    parser.add_argument("--traceroute", action="store_true",
                        help="trace the path to HOST instead (-c: probes per hop, default 3; "
                             "-W: seconds to wait, default 2)")
    parser.add_argument("--max-hops", dest="max_hops", type=int, default=30,
                        help="with --traceroute: highest TTL / hop limit (default 30)")
    return parser


def _source_or_interface(value: str | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    try:
        socket.getaddrinfo(value, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None, value
    return value, None


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _rtt(value: float) -> str:
    # iputils: fewer decimals as the time grows.
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _loss(sent: int, received: int) -> str:
    if not sent:
        return "0%"
    return f"{(sent - received) * 100.0 / sent:g}%"


def _single(args: argparse.Namespace, out: TextIO) -> int:
    if len(args.hosts) != 1:
        print("gprocket ping: give exactly one HOST (or --many)", file=sys.stderr)
        return 2
    host = args.hosts[0]
    count = 4 if args.count is None else args.count
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(args.family or 0)
    source, interface = _source_or_interface(args.interface)
    try:
        af, address, _ = icmp.resolve(host, family)
    except (OSError, ValueError) as err:
        print(f"gprocket ping: {host}: {err}", file=sys.stderr)
        return 2
    if af == socket.AF_INET:
        print(f"PING {host} ({address}) {args.size}({args.size + 28}) bytes of data.", file=out)
    else:
        print(f"PING {host} ({address}) {args.size} data bytes", file=out)

    local_errors: set[int] = set()

    def on_reply(_name: str, reply: icmp.Reply, duplicate: bool) -> None:
        if args.quiet:
            return
        ttl = f" ttl={reply.ttl}" if reply.ttl is not None else ""
        dup = " (DUP!)" if duplicate else ""
        print(f"{reply.size} bytes from {reply.source}: icmp_seq={reply.seq}{ttl} "
              f"time={_rtt(reply.rtt)} ms{dup}", file=out, flush=True)

    def on_error(_name: str, error: icmp.IcmpError) -> None:
        if error.errno is not None:
            # A local failure (no route), reported on stderr like iputils, once.
            if error.errno not in local_errors:
                print(f"gprocket ping: sendmsg: {os.strerror(error.errno)}", file=sys.stderr)
            local_errors.add(error.errno)
            return
        if args.quiet:
            return
        print(f"From {error.reporter or address} icmp_seq={error.seq} {error.description}",
              file=out, flush=True)

    started = time.monotonic()
    try:
        job = _job(count, args.interval, args.timeout, args.size, args.ttl, source,
                   interface, af, args.socket_kind, None, None, on_reply, on_error)
        result = _until_interrupted(address, job)
    except (OSError, ValueError) as err:
        print(f"gprocket ping: {err}", file=sys.stderr)
        return 2
    if result.errors and all(e.errno is not None for e in result.errors) and \
            not result.received:
        return 2  # nothing ever left this host: iputils fails at connect() with 2
    elapsed = int((time.monotonic() - started) * 1000)
    print(f"\n--- {host} ping statistics ---", file=out)
    parts = [f"{result.sent} packets transmitted", f"{result.received} received"]
    if result.duplicates:
        parts.append(f"+{result.duplicates} duplicates")
    if result.errors:
        parts.append(f"+{len(result.errors)} errors")
    parts.append(f"{_loss(result.sent, result.received)} packet loss")
    parts.append(f"time {elapsed}ms")
    print(", ".join(parts), file=out)
    if result.received:
        print(f"rtt min/avg/max/mdev = {_ms(result.min_rtt)}/{_ms(result.avg_rtt)}/"
              f"{_ms(result.max_rtt)}/{_ms(result.mdev)} ms", file=out)
    return 0 if result.received else 1


def _until_interrupted(address: str, job: _Job) -> icmp.Host:
    """ping(), except that SIGINT stops it and the Host so far is returned.

    iputils' Ctrl-C: the requests sent count as transmitted, the ones still
    awaiting their reply as lost.
    """
    ((plan, isock),) = _prepare([address], job)
    state = plan.states[0]
    try:
        engine = _engine(isock, job.options, None, plan.states)
        runner = gevent.spawn(engine.run, plan.states)
        handler = gevent.signal_handler(signal.SIGINT, runner.kill, block=False)
        try:
            runner.join()
        finally:
            handler.cancel()
        failure = runner.exception
        if failure is not None and not isinstance(failure, gevent.GreenletExit):
            raise failure
    finally:
        isock.close()
    return _host(state, plan.family, isock)


def _traceroute(args: argparse.Namespace, out: TextIO) -> int:
    if len(args.hosts) != 1:
        print("gprocket ping --traceroute: give exactly one HOST", file=sys.stderr)
        return 2
    host = args.hosts[0]
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(args.family or 0)
    source, interface = _source_or_interface(args.interface)
    count = 3 if args.count is None else args.count
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


def _read_hosts(path: str) -> list[str]:
    handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        hosts = []
        for line in handle:
            word = line.split("#", 1)[0].strip()
            if word:
                hosts.append(word)
        return hosts
    finally:
        if handle is not sys.stdin:
            handle.close()


def _many(args: argparse.Namespace, out: TextIO) -> int:
    hosts = list(args.hosts)
    if args.file is not None:
        try:
            hosts += _read_hosts(args.file)
        except OSError as err:
            print(f"gprocket ping: {args.file}: {err.strerror}", file=sys.stderr)
            return 2
    if not hosts:
        print("gprocket ping --many: no hosts (give HOSTs or -f FILE)", file=sys.stderr)
        return 2
    count = 1 if args.count is None else args.count
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(args.family or 0)
    source, interface = _source_or_interface(args.interface)
    width = max(len(h) for h in hosts)
    alive = 0
    started = time.monotonic()
    total_sent = total_received = 0
    try:
        results = icmp.multiping_iter(hosts, count=count, interval=args.interval,
                                      timeout=args.timeout, size=args.size, ttl=args.ttl,
                                      source=source, interface=interface, family=family,
                                      socket_kind=args.socket_kind)
        for host in results:
            alive += host.is_alive
            total_sent += host.sent
            total_received += host.received
            if args.quiet:
                continue
            line = (f"{host.name:<{width}} : xmt/rcv/%loss = {host.sent}/{host.received}/"
                    f"{round(host.packet_loss * 100)}%")
            if host.received:
                line += (f", min/avg/max = {host.min_rtt:.2f}/{host.avg_rtt:.2f}/"
                         f"{host.max_rtt:.2f}")
            elif host.errors:
                line += f", {host.errors[-1].description}"
            print(line, file=out)
    except (OSError, ValueError) as err:
        print(f"gprocket ping: {err}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    print(f"\n{len(hosts)} targets\n{alive} alive\n{len(hosts) - alive} unreachable\n"
          f"{total_sent} ICMP Echos sent\n{total_received} ICMP Echo Replies received\n"
          f"{elapsed:.3f} sec elapsed", file=out)
    return 0 if alive == len(hosts) else 1


def main(argv: Sequence[str]) -> int:
    """Run `gprocket ping`; returns the exit code (0 reply, 1 none, 2 error)."""
    args = _parser().parse_args(list(argv))
    if args.count is not None and args.count < 1:
        print("gprocket ping: -c must be >= 1", file=sys.stderr)
        return 2
    if args.file is not None and not args.many:
        print("gprocket ping: -f needs --many", file=sys.stderr)
        return 2
    if args.traceroute and args.many:
        print("gprocket ping: --traceroute and --many exclude each other", file=sys.stderr)
        return 2
    if not 1 <= args.max_hops <= 255:
        print("gprocket ping: --max-hops must be 1..255", file=sys.stderr)
        return 2
    try:
        if args.traceroute:
            return _traceroute(args, sys.stdout)
        if args.many:
            return _many(args, sys.stdout)
        return _single(args, sys.stdout)
    except KeyboardInterrupt:
        return 130
