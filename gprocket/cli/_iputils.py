"""`gprocket ping HOST`: iputils ping's lines, byte for byte, and its exit codes.

Every format here is iputils' (ping/ping_common.c, ping/ping.c,
ping/ping6_common.c, release 20221126): the header, the reply lines with
its time rounding, the statistics with the blank line after them when
nothing came back, "time" measured from the start to the last request
sent, the rtt line computed in integer microseconds, the error texts and
the exit codes (0 some reply, 1 none or an invalid number, 2 a usage error,
an unknown host or no route). Ctrl-C (SIGINT) stops and prints the
statistics so far. Without -c it pings until interrupted, like iputils.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO, cast

import gevent

from gprocket import icmp
from gprocket._errors import GprocketError
from gprocket.cli._getopt import Exit, parse
from gprocket.icmp._fast import MAX_PROBES, choose_engine
from gprocket.icmp._plan import Job, make_job, prepare
from gprocket.icmp._resolve import host_key
from gprocket.icmp._socket import SocketKind
from gprocket.icmp._state import host_result

USAGE = """
Usage
  gprocket ping [options] <destination>
  gprocket ping --many [fping options] <targets...>
  gprocket ping --traceroute [-c <probes>] [-W <timeout>] [--max-hops <n>] <destination>

Options:
  <destination>      dns name or ip address
  -c <count>         stop after <count> replies
  -h                 print help and exit
  -I <interface>     either interface name or address
  -i <interval>      seconds between sending each packet
  -n                 no dns name resolution
  -q                 quiet output
  -s <size>          use <size> as number of data bytes to be sent
  -t <ttl>           define time to live
  -W <timeout>       time to wait for response
  --socket <kind>    auto, datagram or raw ICMP socket

IPv4 options:
  -4                 use IPv4

IPv6 options:
  -6                 use IPv6

For more details see ping(8).
"""
SHORT = "46c:hI:i:nqs:t:W:"
LONG = ["socket=", "help"]
LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
MIN_USER_INTERVAL_MS = 2  # iputils' MINUSERINTERVAL
TIMEVAL_SIZE = 16  # a reply is timed only when the payload holds a struct timeval
_INTEGER = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _fail(code: int, message: str) -> Exit:
    print(f"ping: {message}", file=sys.stderr)
    return Exit(code)


def _integer(text: str, low: int, high: int) -> int:
    """strtol_or_err(): the whole argument, base 10, within [low, high]; else exit 1."""
    if not _INTEGER.fullmatch(text):
        raise _fail(1, f"invalid argument: '{text}'")
    value = int(text)
    if not low <= value <= high:
        raise _fail(1, f"invalid argument: '{text}': out of range: {low} <= value <= {high}")
    return value


def _float(text: str) -> float:
    """ping_strtod(): the leading number; trailing garbage is warned about, not fatal."""
    match = _FLOAT.match(text)
    value = float(match.group()) if match else 0.0
    rest = text[match.end():] if match else text
    if rest:
        print(f"ping: option argument contains garbage: {rest}\n"
              "ping: this will become fatal error in the future", file=sys.stderr)
    return value


@dataclass
class _Args:
    host: str = ""
    count: int = 0  # 0: until interrupted
    interval_ms: int = 1000
    linger_ms: int = 10000  # iputils' MAXWAIT: -W's default
    size: int = 56
    ttl: int | None = None
    interface: str | None = None
    quiet: bool = False
    numeric: bool = False
    family: int | None = None
    socket_kind: str = "auto"


def _parse(argv: Sequence[str]) -> _Args:
    options, rest = parse(argv, SHORT, LONG, prog="ping", after=USAGE, code=2)
    args = _Args()
    for option, value in options:
        if option == "--help":  # gprocket's own: -h is iputils' (stderr, exit 2)
            synopsis = USAGE.split("\n  ", 1)[1]
            print("usage: " + synopsis.replace("\n  gprocket", "\n       gprocket"), end="")
            raise Exit(0)
        if option == "-h":
            print(USAGE, end="", file=sys.stderr)
            raise Exit(2)
        if option in ("-4", "-6"):
            family = socket.AF_INET if option == "-4" else socket.AF_INET6
            if args.family is not None and args.family != family:
                raise _fail(2, "only one -4 or -6 option may be specified")
            args.family = family
        elif option == "-c":
            args.count = _integer(value, 1, LONG_MAX)
        elif option == "-i":
            seconds = _float(value)
            if seconds > INT_MAX / 1000:
                raise _fail(2, f"bad timing interval: {value}")
            args.interval_ms = int(seconds * 1000)
        elif option == "-W":
            seconds = _float(value)
            if seconds < 0 or seconds > INT_MAX / 1000:
                raise _fail(2, f"bad linger time: {value}")
            args.linger_ms = int(seconds * 1000)
        elif option == "-s":
            args.size = _integer(value, 0, INT_MAX)
        elif option == "-t":
            args.ttl = _integer(value, 0, 255)
        elif option == "-I":
            args.interface = value
        elif option == "-q":
            args.quiet = True
        elif option == "-n":
            args.numeric = True
        elif option == "--socket":
            if value not in ("auto", "datagram", "raw"):
                raise _fail(2, f"--socket must be auto, datagram or raw, not {value!r}")
            args.socket_kind = value
    if not rest:
        raise _fail(1, "usage error: Destination address required")
    if len(rest) > 1:
        print(USAGE, end="", file=sys.stderr)
        raise Exit(2)
    args.host = rest[0]
    return args


def _resolve(args: _Args) -> tuple[int, str, bool]:
    """(family, address, numeric): getaddrinfo as iputils calls it, its words on failure.

    The C library's resolver, not gevent's: its answers and error words are
    the ones iputils gets (nothing else runs yet, so blocking costs nothing).
    """
    host = args.host
    try:
        # iputils asks for every family and then picks (its issue 252: scope ids).
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM)
    except socket.gaierror as err:
        raise _fail(2, f"{host}: {err.strerror}") from None
    except UnicodeError:  # Python's idna codec refuses what glibc calls unknown
        raise _fail(2, f"{host}: Name or service not known") from None
    for af, _type, _proto, _canon, sockaddr in infos:
        if af not in (socket.AF_INET, socket.AF_INET6) or \
                args.family not in (None, af):
            continue
        numeric = args.numeric
        if not numeric:
            try:
                socket.getaddrinfo(host, None, af, 0, 0, socket.AI_NUMERICHOST)
                numeric = True  # a literal target: iputils prints addresses only
            except (socket.gaierror, UnicodeError):
                pass
        return int(af), host_key(tuple(sockaddr)), numeric
    raise _fail(2, f"{host}: Address family for hostname not supported")


def _probe_route(af: int, address: str, source: str | None, interface: str | None) -> None:
    """iputils connect()s a UDP socket first; no route ends the run there, exit 2."""
    probe = socket.socket(af, socket.SOCK_DGRAM)
    try:
        try:
            if interface is not None:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                 interface.encode())
            if source is not None:
                probe.bind((source, 0))
        except OSError:
            return  # not allowed here: the real socket decides
        target = icmp.resolve(address, af)[2]
        try:
            probe.connect((target[0], 1025, *target[2:]))
        except OSError as err:
            raise _fail(2, f"connect: {err.strerror}") from None
    finally:
        probe.close()


class _Names:
    """pr_addr(): "name (address)" from the reverse lookup, or the address alone."""

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self.cache: dict[str, str] = {}

    def __call__(self, address: str) -> str:
        if self.numeric:
            return address
        shown = self.cache.get(address)
        if shown is None:
            try:
                sockaddr = icmp.resolve(address)[2]
                name = socket.getnameinfo(cast(tuple[str, int], sockaddr), 0)[0]
            except (OSError, ValueError):
                shown = address
            else:
                shown = f"{name} ({address})"
            self.cache[address] = shown
        return shown


def _time(micros: int) -> str:
    """A reply's time= as iputils rounds it: fewer decimals as it grows."""
    if micros >= 100000 - 50:
        return f"{(micros + 500) // 1000}"
    if micros >= 10000 - 5:
        return f"{(micros + 50) // 1000}.{((micros + 50) % 1000) // 100:01d}"
    if micros >= 1000:
        return f"{(micros + 5) // 1000}.{((micros + 5) % 1000) // 10:02d}"
    return f"{micros // 1000}.{micros % 1000:03d}"


def _loss(sent: int, received: int) -> str:
    """printf("%g%%") of the loss as a C float."""
    value = struct.unpack("f", struct.pack("f", (sent - received) * 100.0 / sent))[0]
    return f"{value:g}%"


def _llsqrt(value: int) -> int:
    previous, x = None, value
    if x > 0:
        while previous is None or x < previous:
            previous = x
            x = (x + value // x) // 2
    return x


def _millis(micros: int) -> str:
    return f"{micros // 1000}.{micros % 1000:03d}"


@dataclass
class _Stats:
    """What finish() prints, kept as iputils keeps it (RTTs in integer microseconds)."""

    times: list[int] = field(default_factory=list)  # every timed reply, duplicates too
    errors: int = 0
    started: int = 0  # monotonic nanoseconds
    last_send: int | None = None
    sends: int = 0
    replies: int = 0  # distinct ones, timed or not
    stop: Callable[[], None] | None = None  # ends the run early, as SIGINT does
    exit_timer: gevent.Greenlet[[], None] | None = None

    def rtt_line(self) -> str:
        total = len(self.times)
        tsum = sum(self.times)
        tsum2 = float(sum(t * t for t in self.times))
        avg = tsum // total
        if tsum < INT_MAX:
            var = int((tsum2 - (tsum * tsum) // total) / total)
        else:
            var = int(tsum2 / total) - avg * avg
        mdev = _llsqrt(var)
        return (f"rtt min/avg/max/mdev = {_millis(min(self.times))}/{_millis(avg)}/"
                f"{_millis(max(self.times))}/{_millis(mdev)} ms")

    def elapsed_ms(self) -> int:
        if self.last_send is None:
            return 0
        return (self.last_send - self.started + 500_000) // 1_000_000


def _run(args: _Args, out: TextIO) -> int:
    af, address, numeric = _resolve(args)
    if af == socket.AF_INET and args.ttl == 0:
        raise _fail(2, "cannot set unicast time-to-live: Invalid argument")
    source, interface = source_or_interface(args.interface)
    _probe_route(af, address, source, interface)
    names = _Names(numeric)
    if af == socket.AF_INET:
        print(f"PING {args.host} ({address}) {args.size}({args.size + 28}) bytes of data.",
              file=out, flush=True)
    else:
        print(f"PING {args.host}({names(address)}) {args.size} data bytes", file=out,
              flush=True)
    if os.getuid() != 0 and args.interval_ms < MIN_USER_INTERVAL_MS:
        raise _fail(2, "cannot flood; minimal interval allowed for user is "
                       f"{MIN_USER_INTERVAL_MS}ms")
    stats = _Stats()
    timing = args.size >= TIMEVAL_SIZE

    def on_reply(_name: str, reply: icmp.Reply, duplicate: bool) -> None:
        micros = int(reply.rtt * 1000)
        stats.replies += not duplicate
        if timing:
            stats.times.append(micros)
        if args.quiet:
            return
        line = f"{reply.size} bytes from {names(reply.source)}: icmp_seq={reply.seq}"
        if reply.ttl is not None:
            line += f" ttl={reply.ttl}"
        if timing:
            line += f" time={_time(micros)} ms"
        if duplicate:
            line += " (DUP!)"
        print(line, file=out, flush=True)

    def on_error(_name: str, error: icmp.IcmpError) -> None:
        if error.errno is not None:
            if not args.quiet:  # a hard local error: counted as sent, said on stderr
                print(f"ping: sendmsg: {os.strerror(error.errno)}", file=sys.stderr)
            return
        stats.errors += 1
        if not args.quiet:
            print(f"From {names(error.reporter or address)} icmp_seq={error.seq} "
                  f"{error.description}", file=out, flush=True)

    def on_send(_name: str) -> None:
        stats.last_send = time.monotonic_ns()
        stats.sends += 1
        if stats.sends == args.count and stats.replies and stats.stop is not None:
            # __schedule_exit(): after the last request, with replies seen, iputils
            # waits two longest RTTs (at least an interval), not -W, for the rest.
            wait = max(2 * max(stats.times, default=0), 1000 * args.interval_ms) / 1e6
            stats.exit_timer = gevent.spawn_later(wait, stats.stop)

    count = args.count or MAX_PROBES  # no -c: until interrupted
    linger = max(args.linger_ms, 1) / 1000.0
    try:
        job = make_job(min(count, MAX_PROBES), args.interval_ms / 1000.0, linger, args.size,
                       args.ttl or None, source, interface, af,
                       cast(SocketKind, args.socket_kind), None, None, on_reply, on_error,
                       on_send=on_send)
        result = _until_interrupted(address, job, stats)
    except (OSError, ValueError, GprocketError) as err:  # e.g. no rung could give a socket
        raise _fail(2, str(err)) from None
    print(f"\n--- {args.host} ping statistics ---", file=out)
    line = f"{result.sent} packets transmitted, {result.received} received"
    if result.duplicates:
        line += f", +{result.duplicates} duplicates"
    if stats.errors:
        line += f", +{stats.errors} errors"
    if result.sent:
        line += (f", {_loss(result.sent, result.received)} packet loss, "
                 f"time {stats.elapsed_ms()}ms")
    print(line, file=out)
    print(stats.rtt_line() if result.received and stats.times else "", file=out, flush=True)
    return 0 if result.received else 1


def source_or_interface(value: str | None) -> tuple[str | None, str | None]:
    """-I takes an address (bind to it) or a device name (SO_BINDTODEVICE)."""
    if value is None:
        return None, None
    try:
        socket.getaddrinfo(value, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None, value
    return value, None


def _until_interrupted(address: str, job: Job, stats: _Stats) -> icmp.Host:
    """ping(), except that SIGINT stops it and the Host so far is returned.

    iputils' Ctrl-C: the requests sent count as transmitted, the ones still
    awaiting their reply as lost. ``stats.started`` is set once the socket
    is open, just before the first request, where iputils starts its clock.
    """
    ((plan, isock),) = prepare([address], job)
    state = plan.states[0]
    try:
        engine = choose_engine(isock, job.options, None, plan.states)
        stats.started = time.monotonic_ns()
        runner = gevent.spawn(engine.run, plan.states)
        stats.stop = runner.kill
        handler = gevent.signal_handler(signal.SIGINT, runner.kill, block=False)
        try:
            runner.join()
        finally:
            handler.cancel()
            if stats.exit_timer is not None:
                stats.exit_timer.kill()
        failure = runner.exception
        if failure is not None and not isinstance(failure, gevent.GreenletExit):
            raise failure
    finally:
        isock.close()
    return host_result(state, plan.family, isock)


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """iputils-shaped `gprocket ping`; returns the exit code."""
    try:
        return _run(_parse(argv), out or sys.stdout)
    except Exit as done:
        return done.code
