"""`gprocket ping --many`: fping 5's output, options and exit codes.

The formats are fping's (src/fping.c, release 5.1): "X is alive" and
"X is unreachable" on stdout (default mode, with -r retries whose timeout
grows by -B), per-reply lines in count mode (-c), the per-target summary
and -C's RTT lists on stderr, -s's totals block, RTTs with fping's
sprint_tm() rounding (3 decimals below 1 ms). Exit codes as fping 5.1's:
0 every target alive, 1 some unreachable or an invalid option, 2 a name
that did not resolve, 4 a system call failed (no ICMP socket to be had).

Requests go out round by round (round r of count mode at r * -p), each
round one engine run over every target, so thousands of targets cost one
socket per family; -i (fping's gap between any two sends) is accepted and
not needed: the engine paces by the socket's buffer instead.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO, cast

import gevent

from gprocket._errors import GprocketError
from gprocket.cli._getopt import Exit, parse
from gprocket.cli._iputils import source_or_interface
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._resolve import host_key
from gprocket.icmp._socket import IcmpSocket, SocketKind, open_icmp_socket
from gprocket.icmp._state import Options, State

PROG = "fping"
USAGE = """Usage: gprocket ping --many [options] [targets...]

Probing options:
   -4                 only ping IPv4 addresses
   -6                 only ping IPv6 addresses
   -b BYTES           amount of ping data to send, in bytes (default: 56)
   -B N               set exponential backoff factor to N (default: 1.5)
   -c N               count mode: send N pings to each target
   -f FILE            read list of targets from a file ( - means stdin)
   -g                 generate target list (only if no -f specified)
                      (give start and end IP in the target list, or a CIDR address)
   -H N               set the IP TTL value (Time To Live hops)
   -I IFACE           bind to a particular interface
   -p MSEC            interval between ping packets to one target (in ms)
                      (in count mode, default: 1000 ms)
   -r N               number of retries (default: 3)
   -t MSEC            individual target initial timeout (default: 500 ms,
                      except with -c/-C, where it's the -p period up to 2000 ms)
   --socket KIND      auto, datagram or raw ICMP socket

Output options:
   -a                 show targets that are alive
   -C N               same as -c, report results in verbose format
   -i MSEC            interval between sending ping packets (accepted, not needed)
   -q                 quiet (don't show per-target/per-ping results)
   -s                 print final stats
   -u                 show targets that are unreachable
   -x N               shows if >=N hosts are reachable or not
"""
SHORT = "46ab:B:c:C:f:gH:hi:I:p:qr:st:ux:"
LONG = ["socket="]
MAX_PING_DATA = 65536 - 40 - 8
MAX_GENERATE = 100000
AUTOTUNE_TIMEOUT_MAX_MS = 2000


def _usage(code: int) -> Exit:
    print(USAGE, end="", file=sys.stderr if code else sys.stdout)
    return Exit(code)


def _fail(message: str, code: int = 1) -> Exit:
    print(f"{PROG}: {message}", file=sys.stderr)
    return Exit(code)


def _scan_float(text: str) -> float:
    """sscanf("%f") as fping checks it: no number or a negative one is a usage error."""
    word = text.strip().split()[0] if text.strip() else ""
    for end in range(len(word), 0, -1):
        try:
            value = float(word[:end])
        except ValueError:
            continue
        if value < 0:
            break
        return value
    raise _usage(1)


def _atoi(text: str) -> int:
    digits = ""
    for char in text.strip():
        if char.isdigit() or (not digits and char in "+-"):
            digits += char
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


@dataclass
class _Args:
    family: int | None = None
    alive: bool = False
    unreachable: bool = False
    size: int = 56
    backoff: float = 1.5
    count: int = 1
    count_flag: bool = False
    report_all: bool = False
    file: str | None = None
    generate: bool = False
    ttl: int | None = None
    interface: str | None = None
    period_ms: float = 1000.0
    quiet: bool = False
    retry: int = 3
    stats: bool = False
    timeout_ms: float = 500.0
    timeout_flag: bool = False
    min_reachable: int = 0
    socket_kind: str = "auto"
    targets: list[str] = field(default_factory=list)


def _parse(argv: Sequence[str]) -> _Args:
    options, rest = parse(argv, SHORT, LONG, prog=PROG, code=1,
                          after="see 'gprocket ping --many -h' for usage information\n")
    args = _Args(targets=rest)
    for option, value in options:
        if option == "-h":
            raise _usage(0)
        if option in ("-4", "-6"):
            family = socket.AF_INET if option == "-4" else socket.AF_INET6
            if args.family not in (None, family):
                raise _fail("can't specify both -4 and -6")
            args.family = family
        elif option == "-a":
            args.alive = True
        elif option == "-u":
            args.unreachable = True
        elif option == "-b":
            args.size = _atoi(value) if value.strip()[:1].isdigit() else -1
            if args.size < 0:
                raise _usage(1)
        elif option == "-B":
            args.backoff = _scan_float(value)
            if not args.backoff:
                raise _usage(1)
        elif option in ("-c", "-C"):
            args.count = _atoi(value)
            if args.count <= 0:
                raise _usage(1)
            args.count_flag = True
            args.report_all = args.report_all or option == "-C"
        elif option == "-f":
            args.file = value
        elif option == "-g":
            args.generate = True
        elif option == "-H":
            args.ttl = _atoi(value)
            if not args.ttl:
                raise _usage(1)
        elif option == "-i":
            _scan_float(value)
        elif option == "-I":
            args.interface = value
        elif option == "-p":
            args.period_ms = _scan_float(value)
        elif option == "-q":
            args.quiet = True
        elif option == "-r":
            if not value.strip()[:1].isdigit():
                raise _usage(1)
            args.retry = _atoi(value)
        elif option == "-s":
            args.stats = True
        elif option == "-t":
            args.timeout_ms = _scan_float(value)
            args.timeout_flag = True
        elif option == "-x":
            args.min_reachable = _atoi(value)
            if not args.min_reachable:
                raise _usage(1)
        elif option == "--socket":
            if value not in ("auto", "datagram", "raw"):
                raise _fail(f"--socket must be auto, datagram or raw, not {value!r}")
            args.socket_kind = value
    if args.ttl is not None and args.ttl > 255:
        raise _fail(f"ttl {args.ttl} out of range")
    if args.alive and args.unreachable:
        raise _fail("specify only one of a, u")
    if args.size > MAX_PING_DATA:
        raise _fail(f"data size {args.size} not valid, must be lower than {MAX_PING_DATA}")
    if not 1.0 <= args.backoff <= 5.0:
        raise _fail(f"backoff factor {args.backoff:.1f} not valid, must be between 1.0 "
                    "and 5.0")
    if (args.targets and args.file) or (args.file and args.generate) or \
            (args.generate and not args.targets):
        raise _usage(1)
    if not args.targets and not args.file and not args.generate:
        args.file = "-"
    if args.count_flag and not args.timeout_flag:
        args.timeout_ms = min(args.period_ms, AUTOTUNE_TIMEOUT_MAX_MS)
    return args


def sprint_tm(ns: int) -> str:
    """fping's RTT text: three decimals below 1 ms, fewer as it grows."""
    t = ns / 1e6
    if t < 0:
        return f"{t:.2g}"
    if t < 1:
        return f"{t:.3f}"
    if t < 10:
        return f"{t:.2f}"
    if t < 100:
        return f"{t:.1f}"
    if t < 1e6:
        return f"{t:.0f}"
    return f"{t:.3e}"


def _read_file(path: str) -> list[str]:
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as err:
        raise _fail(f"fopen : {err.strerror}", 4) from None
    try:
        names = []
        for line in handle:
            words = line.split()
            if words and not words[0].startswith("#"):
                names.append(words[0])
        return names
    finally:
        if handle is not sys.stdin:
            handle.close()


def _generate(targets: list[str], family: int | None) -> list[str]:
    def parse(text: str) -> int:
        try:
            infos = socket.getaddrinfo(text, None, family or 0, 0, 0, socket.AI_NUMERICHOST)
        except socket.gaierror as err:
            raise _fail(f"can't parse address {text}: {err.strerror}") from None
        if infos[0][0] != socket.AF_INET:
            raise _fail("-g works only with IPv4 addresses")
        return int(ipaddress.IPv4Address(infos[0][4][0]))

    if len(targets) == 1:
        address, slash, mask_text = targets[0].partition("/")
        if not slash:
            raise _usage(1)
        first = parse(address)
        mask = _atoi(mask_text)
        if not 1 <= mask <= 32:
            raise _fail(f"netmask must be between 1 and 32 (is: {mask_text})")
        bits = (0xFFFFFFFF << (32 - mask)) & 0xFFFFFFFF
        first &= bits
        last = first + (1 << (32 - mask)) - 1
        if mask < 31:
            first, last = first + 1, last - 1
    elif len(targets) == 2:
        first, last = parse(targets[0]), parse(targets[1])
    else:
        raise _usage(1)
    if last > first + MAX_GENERATE:
        raise _fail("-g parameter generates too many addresses")
    return [str(ipaddress.IPv4Address(n)) for n in range(first, last + 1)]


@dataclass
class _Host:
    """One target as fping keeps it (RTTs in integer nanoseconds)."""

    index: int
    name: str
    family: int
    address: str
    sockaddr: tuple[object, ...]
    sent: int = 0
    received: int = 0
    total: int = 0
    low: int = 0
    high: int = 0
    resp: list[int | None] = field(default_factory=list)  # -C: RTT per request, None lost


@dataclass
class _Totals:
    hosts: int = 0
    alive: int = 0
    unknown: int = 0
    timeouts: int = 0
    sent: int = 0
    received: int = 0
    other_icmp: int = 0
    low: int = 0
    high: int = 0
    total: int = 0
    replies: int = 0


def _resolve(names: list[str], args: _Args, totals: _Totals) -> list[_Host]:
    """fping's add_name(): literals directly, names through the C library like fping."""
    hosts: list[_Host] = []
    want = args.family
    for name in names:
        literal: tuple[int, str] | None = None
        for af in (socket.AF_INET, socket.AF_INET6):
            if want not in (None, af):
                continue
            try:
                packed = socket.inet_pton(af, name)
            except OSError:
                continue
            literal = (int(af), socket.inet_ntop(af, packed))
        if literal is not None:
            family, address = literal
            sockaddr: tuple[object, ...] = (address, 0) if family == socket.AF_INET \
                else (address, 0, 0, 0)
            hosts.append(_Host(len(hosts), name, family, address, sockaddr))
            continue
        try:
            infos = socket.getaddrinfo(name, None, want or 0,
                                        socket.SOCK_RAW if want else socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            if not args.quiet:
                reason = err.strerror if isinstance(err, socket.gaierror) \
                    else "Name or service not known"
                print(f"{name}: {reason}", file=sys.stderr)
            totals.unknown += 1
            continue
        af, _type, _proto, _canon, found = infos[0]
        hosts.append(_Host(len(hosts), name, int(af), host_key(tuple(found)), tuple(found)))
    return hosts


class _Pinger:
    """Rounds of one request per target; sockets are reused once a round is over."""

    def __init__(self, args: _Args) -> None:
        self.args = args
        self.free: dict[int, list[IcmpSocket]] = {}
        self.opened: list[IcmpSocket] = []
        self.source, self.interface = source_or_interface(args.interface)

    def _socket(self, family: int) -> IcmpSocket:
        pool = self.free.setdefault(family, [])
        if pool:
            return pool.pop()
        source = self.source
        if source is not None and (":" in source) != (family == socket.AF_INET6):
            source = None
        isock = open_icmp_socket(family, kind=cast(SocketKind, self.args.socket_kind),
                                 source=source, interface=self.interface, ttl=self.args.ttl)
        self.opened.append(isock)
        return isock

    def round(self, hosts: list[_Host], timeout: float,
              done: Callable[[_Host, State], None],
              error: Callable[[_Host, str | None, int | None, int | None], None]) -> None:
        """One request to each host; `done` as each is answered or times out."""
        by_family: dict[int, list[_Host]] = {}
        for host in hosts:
            by_family.setdefault(host.family, []).append(host)
        runs = [gevent.spawn(self._run, family, group, timeout, done, error)
                for family, group in by_family.items()]
        try:
            gevent.joinall(runs, raise_error=True)
        finally:
            gevent.killall(runs)

    def _run(self, family: int, hosts: list[_Host], timeout: float,
             done: Callable[[_Host, State], None],
             error: Callable[[_Host, str | None, int | None, int | None], None]) -> None:
        isock = self._socket(family)
        states = [State(i, h.name, h.address, h.sockaddr, 1) for i, h in enumerate(hosts)]

        def finished(state: State) -> None:
            host = hosts[state.index]
            for failure in state.errors:
                if failure.errno is None:
                    error(host, failure.reporter, failure.type, failure.code)
                else:
                    error(host, None, None, failure.errno)
            done(host, state)

        options = Options(1, 0.0, timeout, self.args.size, None, None)
        choose_engine(isock, options, finished, states).run(states)
        self.free.setdefault(family, []).append(isock)

    def close(self) -> None:
        for isock in self.opened:
            isock.close()


_UNREACH = ("ICMP Network Unreachable", "ICMP Host Unreachable", "ICMP Protocol Unreachable",
            "ICMP Port Unreachable", "ICMP Unreachable (Fragmentation Needed)",
            "ICMP Unreachable (Source Route Failed)",
            "ICMP Unreachable (Destination Network Unknown)",
            "ICMP Unreachable (Destination Host Unknown)",
            "ICMP Unreachable (Source Host Isolated)",
            "ICMP Unreachable (Communication with Network Prohibited)",
            "ICMP Unreachable (Communication with Host Prohibited)",
            "ICMP Unreachable (Network Unreachable For Type Of Service)",
            "ICMP Unreachable (Host Unreachable For Type Of Service)",
            "ICMP Unreachable (Communication Administratively Prohibited)",
            "ICMP Unreachable (Host Precedence Violation)",
            "ICMP Unreachable (Precedence cutoff in effect)")
_TYPES = {4: "ICMP Source Quench", 5: "ICMP Redirect", 11: "ICMP Time Exceeded",
          12: "ICMP Parameter Problem"}


def _icmp_words(kind: int, code: int) -> str | None:
    """fping's words for an ICMP error (it reads ICMPv6 types through the same table)."""
    if kind == 3:
        return _UNREACH[code] if code < len(_UNREACH) else "ICMP Unreachable (Invalid Code)"
    return _TYPES.get(kind)


def _run(args: _Args, out: TextIO) -> int:
    totals = _Totals()
    started = time.time()
    names = _read_file(args.file) if args.file else list(args.targets)
    if args.generate:
        names = _generate(args.targets, args.family)
    hosts = _resolve(names, args, totals)
    totals.hosts = len(hosts)
    if not hosts:
        return 2 if totals.unknown else 1
    verbose = not (args.quiet or args.alive or args.unreachable or args.min_reachable)
    per_recv = args.count_flag and verbose
    alive_flag, unreach_flag = args.alive, args.unreachable
    if args.count_flag:
        alive_flag = unreach_flag = verbose = False
    width = max(len(h.name) for h in hosts)
    trials = max(args.count, args.retry + 1)
    for host in hosts:
        host.resp = [None] * trials

    def replied(host: _Host, index: int, state: State) -> None:
        rtt = round(state.replies[0].rtt * 1e6)
        host.sent += 1
        host.received += 1
        host.high = max(host.high, rtt)
        host.low = rtt if not host.low else min(host.low, rtt)
        host.total += rtt
        host.resp[index] = rtt
        totals.received += 1 + state.duplicates
        totals.high = max(totals.high, rtt)
        totals.low = rtt if not totals.low else min(totals.low, rtt)
        totals.total += rtt
        totals.replies += 1
        if host.received == 1:
            totals.alive += 1
            if verbose or alive_flag:
                print(host.name + (" is alive" if verbose else ""), file=out, flush=True)
        if per_recv:
            print(f"{host.name:<{width}} : [{index}], {state.replies[0].size} bytes, "
                  f"{sprint_tm(rtt)} ms ({sprint_tm(host.total // host.received)} avg, "
                  f"{(host.sent - host.received) * 100 // host.sent}% loss)",
                  file=out, flush=True)

    def timed_out(host: _Host, index: int) -> None:
        host.sent += 1
        totals.timeouts += 1
        if per_recv:
            avg = sprint_tm(host.total // host.received) if host.received else "NaN"
            print(f"{host.name:<{width}} : [{index}], timed out ({avg} avg, "
                  f"{(host.sent - host.received) * 100 // host.sent}% loss)",
                  file=out, flush=True)

    failed: set[int] = set()  # the last send to these failed
    gave_up: set[int] = set()  # fping retries only after a timeout, never a send error

    def error(host: _Host, reporter: str | None, kind: int | None, code: int | None) -> None:
        if kind is None:  # sendto failed: counted as sent, no timeout follows
            failed.add(host.index)
            if verbose:
                print(f"{host.name}: error while sending ping: {os.strerror(code or 0)}",
                      file=sys.stderr)
            return
        words = _icmp_words(kind, code or 0)
        if words is None:
            return  # a type fping's table lacks: neither said nor counted
        totals.other_icmp += 1
        if not args.quiet:
            print(f"{words} from {reporter} for ICMP Echo sent to {host.name}",
                  file=sys.stderr)

    # "timed out" lines of requests an ICMP error ended early, due at their
    # timeout: fping prints them then, before any later request's lines.
    deferred: list[tuple[float, int, _Host, int]] = []

    def flush(upto: float | None = None) -> None:
        now = time.monotonic() if upto is None else upto
        deferred.sort(key=lambda entry: entry[:2])
        while deferred and deferred[0][0] <= now:
            _, _, host, index = deferred.pop(0)
            timed_out(host, index)

    def one_round(targets: list[_Host], index: int, timeout: float, begun: float) -> None:
        """Request `index` to every target (`begun`: when it was due to start)."""
        due = begun + timeout
        timers: list[gevent.Greenlet[[], None]] = []

        def done(host: _Host, state: State) -> None:
            totals.sent += 1
            if state.replies:
                replied(host, index, state)
            elif host.index in failed:
                failed.discard(host.index)
                gave_up.add(host.index)
                host.sent += 1
            elif time.monotonic() < due:
                deferred.append((due, host.index, host, index))
                timers.append(gevent.spawn_later(due - time.monotonic(), flush))
            else:
                timed_out(host, index)

        try:
            pinger.round(targets, timeout, done, error)
            gevent.joinall(timers, raise_error=True)
            flush(due)  # a timer may wake a hair early: this round's are due now
        finally:
            gevent.killall(timers)

    pinger = _Pinger(args)

    def sweep() -> None:
        base = time.monotonic()
        if args.count_flag:
            rounds = []
            for index in range(args.count):
                begun = base + index * args.period_ms / 1000.0
                if index:
                    gevent.sleep(max(0.0, begun - time.monotonic()))
                    flush()  # fping handles timeouts due by now before sending
                rounds.append(gevent.spawn(one_round, hosts, index, args.timeout_ms / 1000.0,
                                           begun))
            try:
                gevent.joinall(rounds, raise_error=True)
            finally:
                gevent.killall(rounds)
            return
        timeout = args.timeout_ms / 1000.0
        waiting = list(hosts)
        for index in range(args.retry + 1):
            one_round(waiting, index, timeout, time.monotonic())
            waiting = [h for h in waiting if not h.received and h.index not in gave_up]
            if not waiting:
                return
            timeout *= args.backoff

    runner = gevent.spawn(sweep)
    stop = gevent.signal_handler(signal.SIGINT, runner.kill, block=False)
    try:
        runner.join()
        failure = runner.exception
        if failure is not None and not isinstance(failure, gevent.GreenletExit):
            if isinstance(failure, (OSError, GprocketError)):
                raise _fail(f"can't create socket: {failure}", 4)
            raise failure
    finally:
        stop.cancel()
        runner.kill()
        pinger.close()
    ended = time.time()
    for host in hosts:
        if not host.received and (verbose or unreach_flag):
            print(host.name + (" is unreachable" if verbose else ""), file=out)
    out.flush()
    if args.count_flag:
        _per_host(hosts, width, args.report_all, verbose or per_recv)
    if args.stats:
        _global(totals, len(hosts) - totals.alive, ended - started)
    if args.min_reachable:
        enough = totals.alive >= args.min_reachable
        print(f"{'Enough' if enough else 'Not enough'} hosts reachable (required: "
              f"{args.min_reachable}, reachable: {totals.alive})", file=out)
        return 0 if enough else 1
    if totals.unknown:
        return 2
    return 0 if totals.alive == len(hosts) else 1


def _per_host(hosts: list[_Host], width: int, report_all: bool, blank: bool) -> None:
    lines = [""] if blank else []
    for host in hosts:
        line = f"{host.name:<{width}} :"
        if report_all:
            line += "".join(f" {sprint_tm(r)}" if r is not None else " -"
                            for r in host.resp[:host.sent])
        else:
            loss = (host.sent - host.received) * 100 // host.sent if host.sent else 0
            line += f" xmt/rcv/%loss = {host.sent}/{host.received}/{loss}%"
            if host.received:
                line += (f", min/avg/max = {sprint_tm(host.low)}/"
                         f"{sprint_tm(host.total // host.received)}/{sprint_tm(host.high)}")
        lines.append(line)
    print("\n".join(lines), file=sys.stderr)


def _global(totals: _Totals, unreachable: int, elapsed: float) -> None:
    replies = totals.replies or 1
    print(f"\n {totals.hosts:7d} targets\n {totals.alive:7d} alive\n"
          f" {unreachable:7d} unreachable\n {totals.unknown:7d} unknown addresses\n\n"
          f" {totals.timeouts:7d} timeouts (waiting for response)\n"
          f" {totals.sent:7d} ICMP Echos sent\n"
          f" {totals.received:7d} ICMP Echo Replies received\n"
          f" {totals.other_icmp:7d} other ICMP received\n\n"
          f" {sprint_tm(totals.low)} ms (min round trip time)\n"
          f" {sprint_tm(totals.total // replies)} ms (avg round trip time)\n"
          f" {sprint_tm(totals.high)} ms (max round trip time)\n"
          f" {elapsed:12.3f} sec (elapsed real time)\n", file=sys.stderr)


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """fping-shaped `gprocket ping --many`; returns fping's exit code."""
    try:
        return _run(_parse(argv), out or sys.stdout)
    except Exit as done:
        return done.code
