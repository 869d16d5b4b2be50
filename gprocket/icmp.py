"""ICMP and ICMPv6 echo for gevent programs: ping one host, or thousands at once.

``ping()`` and ``multiping()`` open one socket per address family (a ping
datagram socket when ``net.ipv4.ping_group_range`` allows it, else a raw
socket through gprocket's privilege ladder) and match replies strictly: a
reply counts only if it is an echo reply from the target with our identifier,
a sequence we sent and our per-request payload cookie, echoed intact. Our own
requests seen on loopback, other programs' replies and corrupted or truncated
packets never count; repeats of a counted reply are flagged as duplicates.

Everything is cooperative: while a ping waits, other greenlets run.
RTTs are in milliseconds, as in icmplib; ``packet_loss`` is a fraction.
"""

from __future__ import annotations

import errno
import gc
import heapq
import importlib
import math
import operator
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from typing import Any

import gevent
import gevent.queue
from gevent import socket as gsocket
from gevent.hub import get_hub

from gprocket import _icmp_wire as wire
from gprocket._icmp_socket import (
    SO_TIMESTAMPNS,
    IcmpSocket,
    SocketKind,
    open_icmp_socket,
)

__all__ = [
    "Hop",
    "Host",
    "IcmpError",
    "Reply",
    "SocketKind",
    "Trace",
    "multiping",
    "multiping_iter",
    "ping",
    "resolve",
    "traceroute",
]

_IP_TTL = socket.IP_TTL
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_TIMESPEC = struct.Struct("=qq")
_HEADER = struct.Struct("!BBHHH")
_INT = struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class Reply:
    """One counted echo reply: sequence, source, TTL (IPv4) or hop limit (IPv6).

    ``size`` is the ICMP message size (header + payload), the figure iputils
    prints as "64 bytes from"; ``rtt`` is in milliseconds.
    """

    seq: int
    source: str
    ttl: int | None
    rtt: float
    size: int


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about one of our requests, or a local send failure.

    For an ICMP error, ``reporter`` is the router (or host) that sent it and
    ``type``/``code`` are the ICMP(v6) ones; a local failure (sendto refused
    by the routing table) has ``errno`` set and no type. ``rtt`` is the time
    from the request to the error, in milliseconds (None for local failures).
    """

    seq: int
    reporter: str | None
    type: int | None
    code: int | None
    description: str
    errno: int | None = None
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class Host:
    """What pinging one address gave: counts, replies, errors, statistics.

    Shaped like icmplib's Host (``is_alive``, ``packet_loss``, ``min_rtt``,
    ``avg_rtt``, ``max_rtt``, ``jitter``) plus iputils' ``mdev``, the
    duplicates, every reply and every ICMP error, and how the socket was
    obtained (``transport`` "datagram" or "raw", ``rung``).
    """

    address: str
    name: str
    family: int
    sent: int
    replies: tuple[Reply, ...]
    duplicates: int
    errors: tuple[IcmpError, ...]
    transport: str
    rung: str

    @property
    def rtts(self) -> tuple[float, ...]:
        """Each counted reply's RTT in milliseconds, in arrival order."""
        return tuple(r.rtt for r in self.replies)

    @property
    def received(self) -> int:
        """Distinct requests answered (duplicates not included)."""
        return len(self.replies)

    @property
    def is_alive(self) -> bool:
        return bool(self.replies)

    @property
    def packet_loss(self) -> float:
        """Lost fraction of the requests sent, 0.0 to 1.0 (0.0 when none were sent)."""
        if not self.sent:
            return 0.0
        return (self.sent - self.received) / self.sent

    @property
    def min_rtt(self) -> float:
        return min(self.rtts) if self.rtts else 0.0

    @property
    def max_rtt(self) -> float:
        return max(self.rtts) if self.rtts else 0.0

    @property
    def avg_rtt(self) -> float:
        return sum(self.rtts) / len(self.rtts) if self.rtts else 0.0

    @property
    def mdev(self) -> float:
        """iputils' mean deviation: sqrt(mean(rtt^2) - mean(rtt)^2)."""
        if not self.rtts:
            return 0.0
        mean = self.avg_rtt
        square = sum(r * r for r in self.rtts) / len(self.rtts)
        return math.sqrt(max(square - mean * mean, 0.0))

    @property
    def jitter(self) -> float:
        """Mean absolute difference between consecutive RTTs (icmplib's jitter)."""
        if len(self.rtts) < 2:
            return 0.0
        steps = [abs(b - a) for a, b in zip(self.rtts, self.rtts[1:], strict=False)]
        return sum(steps) / len(steps)


@dataclass(frozen=True, slots=True)
class Hop:
    """One TTL (hop limit) of a traceroute: who answered and how fast.

    ``addresses`` lists the distinct responders in order (several when load
    balancing spreads the probes); ``reached`` says the target itself
    answered; ``errors`` holds what ended the path here (e.g. unreachable).
    """

    ttl: int
    sent: int
    addresses: tuple[str, ...]
    rtts: tuple[float, ...]
    reached: bool
    errors: tuple[IcmpError, ...]

    @property
    def address(self) -> str | None:
        """The first responder, or None when every probe went unanswered ("*")."""
        return self.addresses[0] if self.addresses else None


@dataclass(frozen=True, slots=True)
class Trace:
    """A traceroute: one Hop per TTL up to the target (or to max_hops)."""

    address: str
    name: str
    family: int
    hops: tuple[Hop, ...]
    transport: str
    rung: str

    @property
    def reached(self) -> bool:
        return any(hop.reached for hop in self.hops)


# Hot-loop constructors: a sweep builds a Reply and a Host per target. A
# frozen dataclass's __init__ sets each field through object.__setattr__;
# setting the slots directly is half the cost and gives the same object
# (test_icmp compares them). Unpacking fields() breaks loudly on a new field.
_new = object.__new__
_R_SEQ, _R_SOURCE, _R_TTL, _R_RTT, _R_SIZE = (
    getattr(Reply, f.name).__set__ for f in fields(Reply))
(_H_ADDRESS, _H_NAME, _H_FAMILY, _H_SENT, _H_REPLIES, _H_DUPLICATES, _H_ERRORS,
 _H_TRANSPORT, _H_RUNG) = (getattr(Host, f.name).__set__ for f in fields(Host))


def _reply(seq: int, source: str, ttl: int | None, rtt: float, size: int) -> Reply:
    """Reply(seq, source, ttl, rtt, size), faster."""
    reply: Reply = _new(Reply)
    _R_SEQ(reply, seq)
    _R_SOURCE(reply, source)
    _R_TTL(reply, ttl)
    _R_RTT(reply, rtt)
    _R_SIZE(reply, size)
    return reply


def _host(state: _State, family: int, isock: IcmpSocket) -> Host:
    """The public result for a finished (or stopped) target."""
    host: Host = _new(Host)
    _H_ADDRESS(host, state.address)
    _H_NAME(host, state.name)
    _H_FAMILY(host, family)
    _H_SENT(host, state.sent)
    _H_REPLIES(host, tuple(state.replies))
    _H_DUPLICATES(host, state.duplicates)
    _H_ERRORS(host, tuple(state.errors) if state.errors else ())
    _H_TRANSPORT(host, isock.kind)
    _H_RUNG(host, isock.rung)
    return host


def _hosts(states: Sequence[_State], family: int, isock: IcmpSocket,
           results: list[Host | None]) -> None:
    """_host() for every state into results[state.index]: the sweep's last hot loop."""
    kind, rung, empty = isock.kind, isock.rung, ()
    for state in states:
        host: Host = _new(Host)
        _H_ADDRESS(host, state.address)
        _H_NAME(host, state.name)
        _H_FAMILY(host, family)
        _H_SENT(host, state.sent)
        _H_REPLIES(host, tuple(state.replies))
        _H_DUPLICATES(host, state.duplicates)
        _H_ERRORS(host, tuple(state.errors) if state.errors else empty)
        _H_TRANSPORT(host, kind)
        _H_RUNG(host, rung)
        results[state.index] = host


# --- resolution -----------------------------------------------------------

def resolve(address: str, family: int | None = None) -> tuple[int, str, tuple[object, ...]]:
    """Resolve ``address`` to (family, canonical address, sockaddr), cooperatively.

    Literal addresses never touch the resolver; names go through gevent's
    resolver so other greenlets keep running. A scope ("fe80::1%eth0") is
    kept. Raises socket.gaierror for names that do not resolve and ValueError
    for an address of the wrong family.
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    if "%" in address:
        return _scoped(address, family)
    literal = _literal(address)
    if literal is not None:
        af, canon = literal
        if family is not None and af != family:
            raise ValueError(f"{address} is not an {_family_name(family)} address")
        sockaddr: tuple[object, ...] = (canon, 0) if af == socket.AF_INET else (canon, 0, 0, 0)
        return af, canon, sockaddr
    try:
        infos = gsocket.getaddrinfo(address, None, family or 0, socket.SOCK_RAW)
    except UnicodeError as err:  # the idna codec refuses labels like "" or 64+ chars
        raise socket.gaierror(socket.EAI_NONAME, f"{address}: {err}") from None
    for af, _type, _proto, _canon, sockaddr in infos:
        if af in (socket.AF_INET, socket.AF_INET6):
            return int(af), _host_key(tuple(sockaddr)), tuple(sockaddr)
    raise socket.gaierror(socket.EAI_NONAME, f"{address}: no IPv4 or IPv6 address")


_IFNAMES: dict[int, str] = {}


def _host_key(sockaddr: tuple[object, ...]) -> str:
    """The address as shown and matched: scoped IPv6 gets "%interface" back."""
    host = str(sockaddr[0])
    if len(sockaddr) < 4 or not sockaddr[3] or "%" in host:
        return host
    scope = int(sockaddr[3])  # type: ignore[call-overload]
    name = _IFNAMES.get(scope)
    if name is None:
        try:
            name = socket.if_indextoname(scope)
        except OSError:
            name = str(scope)
        _IFNAMES[scope] = name
    return f"{host}%{name}"


def _scoped(address: str, family: int | None) -> tuple[int, str, tuple[object, ...]]:
    """"fe80::1%eth0" (or "%2"): an IPv6 literal and the interface it is scoped to."""
    host, _, zone = address.partition("%")
    if family == socket.AF_INET:
        raise ValueError(f"{address} is not an IPv4 address")
    try:
        _, canon = _v6(host)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME,
                              f"{address}: a scope needs an IPv6 address literal") from None
    try:
        scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, f"{address}: no interface {zone!r}") from None
    sockaddr = (canon, 0, 0, scope)
    return socket.AF_INET6, _host_key(sockaddr), sockaddr


def _literal(address: str) -> tuple[int, str] | None:
    if "%" in address:
        return None
    try:
        if ":" in address:
            return _v6(address)
        if address.count(".") == 3:  # inet_aton would also take "10.1" and "0x7f.1"
            return socket.AF_INET, socket.inet_ntoa(socket.inet_aton(address))
    except OSError:
        pass
    return None


def _v6(address: str) -> tuple[int, str]:
    return socket.AF_INET6, socket.inet_ntop(socket.AF_INET6,
                                             socket.inet_pton(socket.AF_INET6, address))


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def _family_arg(family: int | str | None) -> int | None:
    if family in (None, 0, "unspec"):
        return None
    if family in (4, "inet", socket.AF_INET):
        return socket.AF_INET
    if family in (6, "inet6", socket.AF_INET6):
        return socket.AF_INET6
    raise ValueError(f"family must be 4, 6, 'inet', 'inet6' or None, not {family!r}")


# --- the engine -------------------------------------------------------------


class _Probe:
    __slots__ = ("answered", "deadline", "in_window", "key", "payload", "replied", "sent_mono",
                 "sent_ns", "seq", "target")

    def __init__(self, target: _State, seq: int, payload: bytes, sent_ns: int,  # noqa: PLR0917
                 sent_mono: float, deadline: float, key: tuple[str, int]) -> None:
        self.target = target
        self.seq = seq
        self.payload = payload
        self.sent_ns = sent_ns
        self.sent_mono = sent_mono
        self.deadline = deadline
        self.key = key
        self.answered = False
        self.replied = False
        self.in_window = True


class _State:
    __slots__ = ("address", "count", "duplicates", "errors", "index", "name", "packed",
                 "pending", "replies", "sent", "sockaddr", "ttl")

    def __init__(self, index: int, name: str, address: str, sockaddr: tuple[object, ...],  # noqa: PLR0917
                 count: int, ttl: int | None = None, packed: bytes | None = None) -> None:
        self.index = index
        self.packed = packed  # the address in network order, when planning had it
        self.ttl = ttl  # per-target TTL/hop limit (traceroute); None: the socket's
        self.name = name
        self.address = address
        self.sockaddr = sockaddr
        self.count = count
        self.sent = 0
        self.pending = 0
        self.duplicates = 0
        self.replies: list[Reply] = []
        self.errors: list[IcmpError] = []


@dataclass
class _Options:
    count: int
    interval: float
    timeout: float
    size: int
    on_reply: Callable[[str, Reply, bool], None] | None = None
    on_error: Callable[[str, IcmpError], None] | None = None


@dataclass
class _Counters:
    """What the matcher threw away, and why (the tests read these)."""

    own_requests: int = 0
    foreign: int = 0
    rejected: int = 0
    mismatched: int = 0
    late: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


# Reply buffer room reserved per outstanding request (see _Engine.__init__).
_TRUESIZE = 1280
_BATCH = 256
_MIN_WINDOW = 16
_SEND_RETRY = 0.01  # longest wait for send-buffer room before trying again


def _flow(isock: IcmpSocket, size: int) -> tuple[int, int]:
    """Flow control: (window, batch), the requests that may await a reply at once."""
    # Measured on Linux 6.x: a queued 64-byte reply costs ~830 bytes of
    # budget; large payloads round their buffer up, hence 2 * size.
    per_reply = _TRUESIZE + 2 * size
    if isock.kind == "raw" and isock.family == socket.AF_INET and not isock.filtered:
        per_reply *= 2  # an unfiltered raw IPv4 socket also queues our own requests
    window = max(_MIN_WINDOW, isock.rcvbuf // per_reply)
    return window, max(1, min(_BATCH, window // 2))


class _Engine:
    """One socket, many targets: paced sends, non-blocking drains, strict matching.

    The hot loops are written for CPython: locals instead of attributes, a
    fast path for the common well-formed reply, one monotonic clock reading
    per batch (RTTs use the kernel's receive time stamp and a wall-clock
    stamp taken just before each send).
    """

    def __init__(self, isock: IcmpSocket, options: _Options,
                 done: Callable[[_State], None] | None) -> None:
        self.isock = isock
        self.sock = isock.sock
        self.family = isock.family
        self.options = options
        self.done = done
        self.ident = isock.ident
        self.raw = isock.kind == "raw"
        self.table: dict[tuple[str, int], _Probe] = {}
        self.counters = _Counters()
        self.seq = 0
        self.remaining = 0
        self.window, self.batch = _flow(isock, options.size)
        self.outstanding = 0
        self.max_rtt = 0.0
        self.recv_size = 65535
        self.anc_size = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_INT.size) + 64
        self.err_anc = socket.CMSG_SPACE(512)

    # -- sending

    def run(self, targets: Sequence[_State]) -> None:
        """Ping every target; returns when each has all its answers or timeouts."""
        opts = self.options
        hub = get_hub()
        watcher = hub.loop.io(self.sock.fileno(), 1)
        writable = hub.loop.io(self.sock.fileno(), 2)
        # Every target is due at once for its first request, in order; after
        # that it waits in a heap of (due time, order, target) for its next one.
        fresh, pos, total = list(targets), 0, len(targets)
        due: list[tuple[float, int, _State]] = []
        self.remaining = total
        window_q: deque[_Probe] = deque()
        expiry_q: deque[_Probe] = deque()
        retire_q: deque[_Probe] = deque()
        family, ident, sendto, table = self.family, self.ident, self.sock.sendto, self.table
        # The kernel fills in the checksum for ICMPv6 and for ping datagram sockets.
        own_checksum = self.raw and family == socket.AF_INET
        echo = wire.ICMP_ECHO if family == socket.AF_INET else wire.ICMP6_ECHO_REQUEST
        pack = _HEADER.pack
        cookie_len = min(wire.COOKIE_SIZE, opts.size)
        fill = wire.make_payload(bytes(wire.COOKIE_SIZE), opts.size)[cookie_len:]
        timeout, interval = opts.timeout, opts.interval
        heappop, heappush = heapq.heappop, heapq.heappush
        monotonic, time_ns, urandom = time.monotonic, time.time_ns, os.urandom
        cookies, used = b"", 0
        cookie_step = wire.COOKIE_SIZE
        batches = 0
        current_ttl: int | None = None
        per_target_ttl = any(t.ttl is not None for t in fresh)
        base_ttl = self._get_ttl() if per_target_ttl else 0
        seq, wrapped = self.seq, False
        try:
            while self.remaining:
                now = monotonic()
                deadline = now + timeout
                room = min(self.window - self.outstanding, self.batch)
                sent_now = 0
                blocked = False
                while sent_now < room and (pos < total or (due and due[0][0] <= now)):
                    if pos < total:
                        target = fresh[pos]
                        order = target.index
                        pos += 1
                    else:
                        _, order, target = heappop(due)
                    if used + cookie_step > len(cookies):
                        cookies, used = urandom(cookie_step * 1024), 0
                    payload = cookies[used:used + cookie_len] + fill
                    used += cookie_step
                    seq = (seq + 1) & 0xFFFF
                    if not seq:
                        wrapped = True
                    if own_checksum:
                        packet = wire.build_echo(family, ident, seq, payload)
                    else:
                        packet = pack(echo, 0, 0, ident, seq) + payload
                    if per_target_ttl and target.ttl != current_ttl:
                        self._set_ttl(base_ttl if target.ttl is None else target.ttl)
                        current_ttl = target.ttl
                    stamp = time_ns()
                    try:
                        try:
                            sendto(packet, target.sockaddr)
                        except BlockingIOError:
                            raise
                        except OSError:
                            if self.raw:
                                raise
                            # A datagram socket reports an earlier request's ICMP error
                            # (already on the error queue) on this send, which was then
                            # not sent: the error is consumed now, so send again.
                            stamp = time_ns()
                            sendto(packet, target.sockaddr)
                    except BlockingIOError:
                        # Send buffer full: give the target its turn back and drain.
                        heappush(due, (now, order, target))
                        blocked = True
                        break
                    except OSError as err:
                        target.sent += 1
                        self._send_failed(target, seq, err)
                        if target.sent < target.count:
                            heappush(due, (now + interval, order, target))
                        elif target.pending == 0:
                            self.remaining -= 1
                            if self.done is not None:
                                self.done(target)
                        continue
                    target.sent += 1
                    sent_now += 1
                    key = (target.address, seq)
                    if wrapped:
                        old = table.get(key)
                        if old is not None and not old.answered:
                            # Sequence wrapped onto a request still waiting: retire it.
                            old.answered = True
                            self._finish_probe(old)
                    probe = _Probe(target, seq, payload, stamp, now, deadline, key)
                    table[key] = probe
                    target.pending += 1
                    window_q.append(probe)
                    expiry_q.append(probe)
                    if target.sent < target.count:
                        heappush(due, (now + interval, order, target))
                self.outstanding += sent_now
                self.seq = seq
                self._drain()
                now = monotonic()
                # A request unanswered for `hold` stops reserving reply room: its
                # reply is no longer expected in the next burst.
                hold = min(timeout, max(0.05, 4 * self.max_rtt / 1000.0))
                while window_q and (window_q[0].answered or
                                    now - window_q[0].sent_mono >= hold):
                    probe = window_q.popleft()
                    if probe.in_window:
                        probe.in_window = False
                        self.outstanding -= 1
                while expiry_q and expiry_q[0].deadline <= now:
                    probe = expiry_q.popleft()
                    if not probe.answered:
                        probe.answered = True
                        if probe.in_window:
                            probe.in_window = False
                            self.outstanding -= 1
                        self._finish_probe(probe)
                    retire_q.append(probe)
                # Forget a request one more timeout later: until then a repeat of
                # its reply is still recognised as a duplicate (or as late).
                while retire_q and retire_q[0].deadline + timeout <= now:
                    probe = retire_q.popleft()
                    if table.get(probe.key) is probe:
                        del table[probe.key]
                if not self.remaining:
                    break
                if blocked:
                    with gevent.Timeout(_SEND_RETRY, False):
                        hub.wait(writable)
                    continue
                if sent_now:
                    batches += 1
                    if batches % 8 == 0:
                        gevent.sleep(0)  # let other greenlets run during long bursts
                    continue
                wake = math.inf
                if self.outstanding < self.window:
                    if pos < total:
                        wake = now
                    elif due:
                        wake = due[0][0]
                if expiry_q:
                    wake = min(wake, expiry_q[0].deadline)
                if window_q:
                    wake = min(wake, window_q[0].sent_mono + hold)
                delay = wake - monotonic()
                if delay > 0:
                    with gevent.Timeout(delay, False):
                        hub.wait(watcher)
        finally:
            watcher.close()
            writable.close()

    def _get_ttl(self) -> int:
        if self.family == socket.AF_INET:
            return self.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
        return self.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)

    def _set_ttl(self, ttl: int) -> None:
        if self.family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)

    def _send_failed(self, target: _State, seq: int, err: OSError) -> None:
        name = errno.errorcode.get(err.errno or 0, str(err.errno))
        error = IcmpError(seq, None, None, None, f"sendto: {err.strerror} ({name})", err.errno)
        target.errors.append(error)
        if self.options.on_error is not None:
            self.options.on_error(target.name, error)

    def _finish_probe(self, probe: _Probe) -> None:
        """A probe is over (answered, expired, or errored); maybe its target too."""
        target = probe.target
        target.pending -= 1
        if target.pending == 0 and target.sent >= target.count:
            self.remaining -= 1
            if self.done is not None:
                self.done(target)

    # -- receiving

    def _drain(self) -> None:
        """Read everything queued, without blocking, and account for it."""
        recvmsg, table, ident = self.sock.recvmsg, self.table, self.ident
        size, anc = self.recv_size, self.anc_size
        v4 = self.family == socket.AF_INET
        raw = self.raw
        fast = not (raw and v4)  # raw IPv4 carries an IP header and needs our checksum check
        reply_type = wire.ICMP_ECHOREPLY if v4 else wire.ICMP6_ECHO_REPLY
        unpack_id = _HEADER.unpack_from
        counted = self._counted
        checksum = wire.checksum
        while True:
            try:
                data, ancdata, _flags, addr = recvmsg(size, anc)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                # A datagram socket reports a queued ICMP error here: read the error queue.
                break
            ttl: int | None = None
            stamp = 0
            for level, kind, value in ancdata:
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    sec, nsec = _TIMESPEC.unpack(value)
                    stamp = sec * 1_000_000_000 + nsec
                elif (kind == _IP_TTL and level == socket.IPPROTO_IP) or \
                        (kind == _IPV6_HOPLIMIT and level == socket.IPPROTO_IPV6):
                    ttl = _INT.unpack(value)[0]
            if not stamp:
                stamp = time.time_ns()
            source = addr[0] if v4 or not addr[3] else _host_key(addr)
            if fast and len(data) >= 8:
                kind_, code, _sum, their_id, seq = unpack_id(data)
                if kind_ == reply_type and code == 0 and their_id == ident:
                    probe = table.get((source, seq))
                    if probe is not None and not probe.answered and \
                            data[8:] == probe.payload:
                        counted(probe, source, ttl, stamp, len(data))
                        continue
            elif not fast and len(data) >= 28 and data[0] == 0x45 and \
                    (data[2] << 8 | data[3]) == len(data):
                # Raw IPv4 without options: our own requests (loopback) and
                # well-formed replies are the bulk; everything else is parsed fully.
                if data[20] == wire.ICMP_ECHO and data[9] == socket.IPPROTO_ICMP:
                    self.counters.own_requests += 1
                    continue
                kind_, code, _sum, their_id, seq = unpack_id(data, 20)
                if kind_ == reply_type and code == 0 and their_id == ident and \
                        data[9] == socket.IPPROTO_ICMP:
                    probe = table.get((source, seq))
                    if probe is not None and not probe.answered and \
                            data[28:] == probe.payload and checksum(data[20:]) == 0:
                        counted(probe, source, data[8], stamp, len(data) - 20)
                        continue
            if v4:
                parsed = wire.parse_ipv4(data) if raw else \
                    wire.parse_icmp4(data, source, ttl, verify=False)
            else:
                parsed = wire.parse_icmp6(data, source, ttl)
            self._match(parsed, stamp)
        if not raw:
            self._drain_errors()

    def _counted(self, probe: _Probe, source: str, ttl: int | None, stamp: int,
                 length: int) -> None:
        rtt = (stamp - probe.sent_ns) / 1e6
        if rtt < 0.0:
            rtt = 0.0  # the wall clock stepped back between send and receive
        elif rtt > self.max_rtt:
            self.max_rtt = rtt
        target = probe.target
        reply = _reply(probe.seq, source, ttl, rtt, length)
        target.replies.append(reply)
        probe.answered = True
        probe.replied = True
        if probe.in_window:
            probe.in_window = False
            self.outstanding -= 1
        if self.options.on_reply is not None:
            self.options.on_reply(target.name, reply, False)
        target.pending -= 1
        if target.pending == 0 and target.sent >= target.count:
            self.remaining -= 1
            if self.done is not None:
                self.done(target)

    def _match(self, parsed: wire.Parsed, stamp: int) -> None:
        counters = self.counters
        if type(parsed) is wire.Echo:
            if parsed.request:
                counters.own_requests += 1
                return
            if parsed.ident != self.ident:
                counters.foreign += 1
                return
            probe = self.table.get((parsed.source, parsed.seq))
            if probe is None or parsed.payload != probe.payload:
                counters.mismatched += 1
                return
            if not probe.answered:
                self._counted(probe, parsed.source, parsed.ttl, stamp,
                              len(parsed.payload) + 8)
            elif probe.replied:
                probe.target.duplicates += 1
                if self.options.on_reply is not None:
                    rtt = max(0.0, (stamp - probe.sent_ns) / 1e6)
                    self.options.on_reply(probe.target.name, Reply(
                        probe.seq, parsed.source, parsed.ttl, rtt,
                        len(parsed.payload) + 8), True)
            else:
                counters.late += 1  # after its timeout: neither a reply nor a duplicate
            return
        if type(parsed) is wire.Quoted:
            if parsed.ident != self.ident:
                counters.foreign += 1
                return
            target = parsed.target
            if target.startswith("fe80:") and "%" in parsed.reporter:
                # The quoted header carries no scope: a link-local target shares
                # the interface the error arrived on.
                target += parsed.reporter[parsed.reporter.index("%"):]
            self._error(target, parsed.seq, parsed.payload, parsed.reporter,
                        parsed.type, parsed.code, stamp)
            return
        counters.rejected += 1
        reason = parsed.reason  # type: ignore[union-attr]
        counters.reasons[reason] = counters.reasons.get(reason, 0) + 1

    def _error(self, target_addr: str, seq: int, payload: bytes,  # noqa: PLR0917
               reporter: str | None, kind: int, code: int, stamp: int) -> None:
        probe = self.table.get((target_addr, seq))
        if probe is None or probe.answered:
            self.counters.mismatched += 1
            return
        # Routers may quote only part of the payload: compare what they quoted.
        quoted = payload[:wire.COOKIE_SIZE]
        if quoted != probe.payload[:len(quoted)]:
            self.counters.mismatched += 1
            return
        rtt = max(0.0, (stamp - probe.sent_ns) / 1e6)
        error = IcmpError(seq, reporter, kind, code, wire.describe(self.family, kind, code),
                          None, rtt)
        probe.target.errors.append(error)
        probe.answered = True
        if probe.in_window:
            probe.in_window = False
            self.outstanding -= 1
        if self.options.on_error is not None:
            self.options.on_error(probe.target.name, error)
        self._finish_probe(probe)

    def _drain_errors(self) -> None:
        """Datagram sockets queue ICMP errors on the error queue (IP_RECVERR)."""
        level = socket.IPPROTO_IP if self.family == socket.AF_INET else socket.IPPROTO_IPV6
        kind_wanted = _IP_RECVERR if self.family == socket.AF_INET else _IPV6_RECVERR
        while True:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(
                    self.recv_size, self.err_anc, _MSG_ERRQUEUE)
            except InterruptedError:
                continue
            except OSError:
                break  # EAGAIN: the error queue is empty
            stamp = 0
            for cmsg_level, cmsg_type, value in ancdata:
                if cmsg_level == socket.SOL_SOCKET and cmsg_type == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(value)
                    stamp = sec * 1_000_000_000 + nsec
            for cmsg_level, cmsg_type, value in ancdata:
                if cmsg_level != level or cmsg_type != kind_wanted:
                    continue
                try:
                    ext = wire.parse_extended_error(value)
                except ValueError:
                    self.counters.rejected += 1
                    continue
                if ext.origin not in (wire.SO_EE_ORIGIN_ICMP, wire.SO_EE_ORIGIN_ICMP6):
                    continue
                if len(data) < 8 or data[0] not in (wire.ICMP_ECHO, wire.ICMP6_ECHO_REQUEST):
                    self.counters.rejected += 1
                    continue
                _, _, _, ident, seq = _HEADER.unpack_from(data)
                if ident != self.ident:
                    self.counters.foreign += 1
                    continue
                self._error(_host_key(addr), seq, data[8:], ext.offender, ext.type, ext.code,
                            stamp or time.time_ns())



_GC_PAUSE_MAX = 3.0


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector over a burst of acyclic allocations.

    A sweep allocates a few objects per target (states, replies, results),
    none in a reference cycle; reference counting frees them as usual. Left
    running, the collector would traverse the growing heap again and again
    (measured: 10-15% of a 10,000-target sweep). multiping() pauses it for
    a whole sweep planned to last at most _GC_PAUSE_MAX seconds, otherwise
    (and in multiping_iter, whose consumer runs between results) only over
    synchronous bursts, so other greenlets' cyclic garbage is never held
    back for long.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- the compiled engine ------------------------------------------------------

_speed: Any
try:
    _speed = importlib.import_module("gprocket._icmp_speed")
except ImportError:  # not built: the Python engine does the same work, slower
    _speed = None

# gpi_step's status and event kinds (gprocket/_icmp_build.py).
_GPI_DONE, _GPI_READ, _GPI_WRITE, _GPI_AGAIN = 0, 1, 2, 3
_EV_REPLY, _EV_DUP, _EV_ERROR, _EV_SENDFAIL, _EV_DONE, _EV_FINAL = 1, 2, 3, 4, 5, 0x100
# The C side's rejection reasons, in its enum's order.
_REASONS = (
    "truncated: shorter than an ICMP header",
    "bad ICMP checksum",
    "not ICMP",
    "malformed IPv4 header",
    "ICMP error quoting something other than an echo request",
    "ICMP type neither echo nor error",
    "echo with a code other than 0",
    "larger than the receive buffer",
)
ENGINE_ENV = "GPROCKET_ICMP_ENGINE"
_RING = 1 << 17
_MAX_PROBES = (1 << 31) - 1  # the C engine counts probes in an int


def _fast_wanted() -> bool:
    """Whether to use the compiled engine: yes when built, unless the environment says.

    ``GPROCKET_ICMP_ENGINE=python`` forces the pure-Python engine, ``c``
    insists on the compiled one (RuntimeError when it is not built).
    """
    choice = os.environ.get(ENGINE_ENV, "").strip().lower()
    if choice in ("", "auto"):
        return _speed is not None
    if choice == "python":
        return False
    if choice == "c":
        if _speed is None:
            raise RuntimeError(
                f"{ENGINE_ENV}=c but gprocket._icmp_speed is not built: build it with "
                "`python -m gprocket._icmp_build` (needs cffi and a C compiler)")
        return True
    raise ValueError(f"{ENGINE_ENV} must be 'auto', 'c' or 'python', not {choice!r}")


class _FastEngine:
    """The same engine as _Engine with its loop in C (gprocket._icmp_speed).

    Same interface: run() fills each _State and calls ``done`` as targets
    complete; ``counters``, ``window`` and ``batch`` mean the same. Each
    gpi_step() call does a bounded slice of sending and receiving and never
    blocks; between calls this waits on the gevent hub. Per-target TTLs
    (traceroute) are the Python engine's job.
    """

    def __init__(self, isock: IcmpSocket, options: _Options,
                 done: Callable[[_State], None] | None) -> None:
        if _speed is None:
            raise RuntimeError("gprocket._icmp_speed is not built")
        self.isock = isock
        self.family = isock.family
        self.options = options
        self.done = done
        self.ident = isock.ident
        self.counters = _Counters()
        self.seq = 0
        self.window, self.batch = _flow(isock, options.size)
        # Probe slots (None: the default, enough for a long sweep's live
        # requests, a few MB at most); when all are live, sending waits.
        self.ring: int | None = None

    def run(self, targets: Sequence[_State]) -> None:
        """Ping every target; returns when each has all its answers or timeouts."""
        if not targets:
            return
        ffi, lib = _speed.ffi, _speed.lib
        opts = self.options
        v6 = self.family == socket.AF_INET6
        scopes = ffi.NULL
        if v6:
            pton, inet6 = socket.inet_pton, socket.AF_INET6
            packed = b"".join([t.packed or pton(inet6, str(t.sockaddr[0]).partition("%")[0])
                               for t in targets])
            if any(t.sockaddr[3] for t in targets):
                scopes = ffi.new("uint32_t[]", [int(t.sockaddr[3])  # type: ignore[call-overload]
                                                for t in targets])
        else:
            aton = socket.inet_aton
            packed = b"".join([t.packed or aton(t.address) for t in targets])
        ctx = lib.gpi_new(self.isock.sock.fileno(), self.family,
                          int(self.isock.kind == "raw"), self.ident, opts.size, opts.count,
                          round(opts.interval * 1e9), round(opts.timeout * 1e9),
                          len(targets), packed, scopes, self.seq,
                          self.ring or max(_RING, 4 * len(targets)))
        if ctx == ffi.NULL:
            raise MemoryError(f"no memory for {len(targets)} ICMP targets")
        ctx = ffi.gc(ctx, lib.gpi_free)
        ctx.window, ctx.batch = self.window, self.batch
        hub = get_hub()
        fd = self.isock.sock.fileno()
        watcher = hub.loop.io(fd, 1)
        writable = hub.loop.io(fd, 2)
        step, monotonic_ns = lib.gpi_step, time.monotonic_ns
        finished = False
        try:
            while True:
                count = step(ctx)
                if count < 0:
                    raise OSError(errno.EIO, "cannot draw random ICMP payload cookies")
                if count:
                    with _gc_paused():
                        self._events(ctx, count, targets)
                status = ctx.status
                if status == _GPI_DONE:
                    finished = True
                    break
                if status == _GPI_AGAIN:
                    gevent.sleep(0)  # a slice is at most ~1 ms: let other greenlets run
                elif status == _GPI_WRITE:
                    with gevent.Timeout(_SEND_RETRY, False):
                        hub.wait(writable)
                else:
                    delay = (ctx.wake_ns - monotonic_ns()) / 1e9
                    if delay > 0:
                        with gevent.Timeout(delay, False):
                            hub.wait(watcher)
        finally:
            watcher.close()
            writable.close()
            self.seq = lib.gpi_seq(ctx)
            self._count(ctx)
            # Stopped early (killed, interrupted): targets not complete yet
            # still show what was sent to them. (A finished run's final
            # events set every target's count already.)
            if not finished:
                sent = ctx.tsent
                for index, state in enumerate(targets):
                    if state.sent < opts.count:
                        state.sent = sent[index]

    def _count(self, ctx: Any) -> None:
        counters = self.counters
        counters.own_requests = ctx.own_requests
        counters.foreign = ctx.foreign
        counters.rejected = ctx.rejected
        counters.mismatched = ctx.mismatched
        counters.late = ctx.late
        counters.reasons = {reason: ctx.reasons[i] for i, reason in enumerate(_REASONS)
                            if ctx.reasons[i]}

    def _events(self, ctx: Any, count: int, targets: Sequence[_State]) -> None:
        """Turn one step's events into Replies, IcmpErrors and finished targets."""
        buffer = _speed.ffi.buffer

        def ints(pointer: Any, width: int = 4) -> list[int]:
            view = memoryview(buffer(pointer, width * count))
            return view.cast("i" if width == 4 else "q").tolist()

        kinds, indexes, seqs = ints(ctx.ev_kind), ints(ctx.ev_target), ints(ctx.ev_seq)
        ttls, values = ints(ctx.ev_ttl), ints(ctx.ev_value, 8)
        opts = self.options
        on_reply, on_error, done = opts.on_reply, opts.on_error, self.done
        size, sent = 8 + opts.size, opts.count
        new, set_seq, set_source, set_ttl, set_rtt, set_size = (
            _new, _R_SEQ, _R_SOURCE, _R_TTL, _R_RTT, _R_SIZE)
        for i, flagged in enumerate(kinds):
            state = targets[indexes[i]]
            final = flagged & _EV_FINAL
            kind = flagged & ~_EV_FINAL
            if kind == _EV_REPLY:
                # _reply() inlined: this branch runs once per answered target.
                ttl = ttls[i]
                reply: Reply = new(Reply)
                set_seq(reply, seqs[i])
                set_source(reply, state.address)
                set_ttl(reply, None if ttl < 0 else ttl)
                set_rtt(reply, values[i] / 1e6)
                set_size(reply, size)
                state.replies.append(reply)
                if on_reply is not None:
                    on_reply(state.name, reply, False)
            elif kind == _EV_DONE:
                state.sent = values[i]
                if done is not None:
                    done(state)
            elif kind == _EV_DUP:
                state.duplicates += 1
                if on_reply is not None:
                    ttl = ttls[i]
                    on_reply(state.name, _reply(seqs[i], state.address,
                                                None if ttl < 0 else ttl, values[i] / 1e6,
                                                size), True)
            elif kind == _EV_ERROR:
                self._error(state, ctx, i, seqs[i], values[i])
            elif kind == _EV_SENDFAIL:
                err = values[i]
                name = errno.errorcode.get(err, str(err))
                error = IcmpError(seqs[i], None, None, None,
                                  f"sendto: {os.strerror(err)} ({name})", err)
                state.errors.append(error)
                if on_error is not None:
                    on_error(state.name, error)
            if final:
                # This event ended the target's last request: it is complete.
                state.sent = sent
                if done is not None:
                    done(state)

    def _error(self, state: _State, ctx: Any, i: int, seq: int, rtt_ns: int) -> None:
        family = ctx.ev_family[i]
        raw = bytes(_speed.ffi.buffer(ctx.ev_addr + 16 * i, 16))
        reporter: str | None = None
        if family == socket.AF_INET:
            reporter = socket.inet_ntoa(raw[:4])
        elif family == socket.AF_INET6:
            reporter = _host_key((socket.inet_ntop(socket.AF_INET6, raw), 0, 0,
                                  ctx.ev_scope[i]))
        kind, code = ctx.ev_type[i], ctx.ev_code[i]
        error = IcmpError(seq, reporter, kind, code, wire.describe(self.family, kind, code),
                          None, rtt_ns / 1e6)
        state.errors.append(error)
        if self.options.on_error is not None:
            self.options.on_error(state.name, error)


_TTL_OF = operator.attrgetter("ttl")


def _engine(isock: IcmpSocket, options: _Options, done: Callable[[_State], None] | None,
            states: Sequence[_State]) -> _Engine | _FastEngine:
    """The compiled engine when built (and wanted), else the Python one."""
    # Per-target TTLs (1..255, else None) are the Python engine's job; the
    # check runs in C (map, attrgetter): it looks at every target of a sweep.
    if _fast_wanted() and len(states) * options.count <= _MAX_PROBES and \
            not any(map(_TTL_OF, states)):
        return _FastEngine(isock, options, done)
    return _Engine(isock, options, done)


def _validate(count: int, interval: float, timeout: float, size: int, ttl: int | None) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, not {count!r}")
    if interval < 0 or not math.isfinite(interval):
        raise ValueError(f"interval must be >= 0 seconds, not {interval!r}")
    if timeout <= 0 or not math.isfinite(timeout):
        raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
    if not 0 <= size <= 65507:
        raise ValueError(f"size must be 0..65507 bytes, not {size!r}")
    if ttl is not None and not 1 <= ttl <= 255:
        raise ValueError(f"ttl must be 1..255, not {ttl!r}")


@dataclass
class _Plan:
    family: int
    states: list[_State]


def _names(addresses: Iterable[str]) -> list[str]:
    if isinstance(addresses, str | bytes):
        raise TypeError("addresses must be an iterable of str, not one str")
    names = list(addresses)
    if set(map(type, names)) - {str}:  # one pass in C; the loop only names the culprit
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"each address must be a str, not {type(name).__name__}")
    return names


def _plan(addresses: Iterable[str], family: int | None, count: int) -> list[_Plan]:
    """Resolve every address into per-family target lists, each in input order."""
    names = list(addresses)
    v4: list[_State] = []
    v6: list[_State] = []
    resolved: dict[int, list[_State]] = {}
    aton, ntoa = socket.inet_aton, socket.inet_ntoa
    pton, ntop, inet6 = socket.inet_pton, socket.inet_ntop, int(socket.AF_INET6)
    want4, want6 = family != socket.AF_INET6, family != socket.AF_INET
    state = _State
    for index, name in enumerate(names):
        # Fast paths for plain literals (thousands per sweep); resolve() does the rest.
        # A canonical literal is kept as the address itself, one string less per target.
        if ":" in name:
            if want6 and "%" not in name:
                try:
                    packed = pton(inet6, name)
                except OSError:
                    pass
                else:
                    canon = ntop(inet6, packed)
                    if canon == name:
                        canon = name
                    v6.append(state(index, name, canon, (canon, 0, 0, 0), count, None, packed))
                    continue
        elif want4 and name.count(".") == 3:  # inet_aton also takes "10.1" and "0x7f.1"
            try:
                packed = aton(name)
            except OSError:
                pass
            else:
                canon = ntoa(packed)
                if canon == name:
                    canon = name
                v4.append(state(index, name, canon, (canon, 0), count, None, packed))
                continue
        af, canon, sockaddr = resolve(name, family)
        resolved.setdefault(int(af), []).append(state(index, name, canon, sockaddr, count))
    for af, literals in ((int(socket.AF_INET), v4), (inet6, v6)):
        if not literals:
            continue
        states = resolved.get(af)
        if states is None:
            resolved[af] = literals
        else:
            states.extend(literals)
            states.sort(key=lambda target: target.index)
    return [_Plan(socket.AddressFamily(af), states) for af, states in sorted(resolved.items())]


@dataclass(frozen=True)
class _Job:
    """Everything a call asked for, validated, shared by its engines."""

    options: _Options
    family: int | None
    kind: SocketKind
    source: str | None
    interface: str | None
    ttl: int | None
    strategies: str | tuple[str, ...] | None
    helper: str | None


def _job(count: int, interval: float, timeout: float, size: int, ttl: int | None,  # noqa: PLR0917
         source: str | None, interface: str | None, family: int | str | None,
         kind: SocketKind, strategies: str | Sequence[str] | None, helper: str | None,
         on_reply: Callable[[str, Reply, bool], None] | None,
         on_error: Callable[[str, IcmpError], None] | None) -> _Job:
    _validate(count, interval, timeout, size, ttl)
    if kind not in ("auto", "datagram", "raw"):
        raise ValueError(f"socket_kind must be 'auto', 'datagram' or 'raw', not {kind!r}")
    chain = strategies if strategies is None or isinstance(strategies, str) \
        else tuple(strategies)
    return _Job(_Options(count, interval, timeout, size, on_reply, on_error),
                _family_arg(family), kind, source, interface, ttl, chain, helper)


def _prepare(addresses: Iterable[str], job: _Job) -> list[tuple[_Plan, IcmpSocket]]:
    """Resolve every address, then open one socket per family needed."""
    plans = _plan(addresses, job.family, job.options.count)
    opened: list[tuple[_Plan, IcmpSocket]] = []
    try:
        for plan in plans:
            source = job.source
            literal = _literal(source) if source is not None else None
            if literal is not None and literal[0] != plan.family:
                source = None  # a source address applies to its own family's socket only
            opened.append((plan, open_icmp_socket(
                plan.family, kind=job.kind, source=source, interface=job.interface,
                ttl=job.ttl, strategies=job.strategies, helper=job.helper)))
    except BaseException:
        for _, isock in opened:
            isock.close()
        raise
    return opened


def _run(plan: _Plan, isock: IcmpSocket, options: _Options,
         emit: Callable[[int, Host], None]) -> None:
    def done(state: _State) -> None:
        emit(state.index, _host(state, plan.family, isock))

    try:
        _engine(isock, options, done, plan.states).run(plan.states)
    finally:
        isock.close()


def ping(address: str, count: int = 4, interval: float = 1.0,  # noqa: PLR0917
         timeout: float = 2.0, size: int = 56, ttl: int | None = None,
         source: str | None = None, interface: str | None = None,
         family: int | str | None = None, *, socket_kind: SocketKind = "auto",
         strategies: str | Sequence[str] | None = None, helper: str | None = None,
         on_reply: Callable[[str, Reply, bool], None] | None = None,
         on_error: Callable[[str, IcmpError], None] | None = None) -> Host:
    """Send ``count`` echo requests to ``address``, ``interval`` seconds apart.

    Waits up to ``timeout`` seconds for each reply. ``size`` is the payload
    length; its first 8 bytes are the request's random cookie (fewer when
    ``size`` < 8). ``family`` (4, 6, "inet",
    "inet6") picks among a name's addresses; ``source`` binds the socket to a
    local address, ``interface`` to a device. ``socket_kind`` "auto" uses an
    ICMP datagram socket when ping_group_range allows, else a raw socket
    through the ladder (``strategies``, ``helper`` as for gprocket.open).
    ``on_reply(name, reply, duplicate)`` and ``on_error(name, error)`` are
    called as things arrive. Returns a Host. Raises socket.gaierror if the
    name does not resolve, ValueError/TypeError for bad arguments,
    PrivilegeError when no socket can be had.
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    return multiping([address], count=count, interval=interval, timeout=timeout, size=size,
                     ttl=ttl, source=source, interface=interface, family=family,
                     socket_kind=socket_kind, strategies=strategies, helper=helper,
                     on_reply=on_reply, on_error=on_error)[0]


def multiping(addresses: Iterable[str], count: int = 1,  # noqa: PLR0917
              interval: float = 1.0, timeout: float = 2.0, size: int = 56,
              ttl: int | None = None, source: str | None = None,
              interface: str | None = None, family: int | str | None = None, *,
              socket_kind: SocketKind = "auto",
              strategies: str | Sequence[str] | None = None, helper: str | None = None,
              on_reply: Callable[[str, Reply, bool], None] | None = None,
              on_error: Callable[[str, IcmpError], None] | None = None) -> list[Host]:
    """Ping many addresses at once; returns one Host per address, in input order.

    One socket per address family serves every target (never one per
    target: each raw socket gets a copy of every ICMP packet); sends are
    paced so that the replies in flight fit the socket's receive buffer.
    Arguments and errors as in ping().
    """
    job = _job(count, interval, timeout, size, ttl, source, interface, family,
               socket_kind, strategies, helper, on_reply, on_error)
    names = _names(addresses)
    results: list[Host | None] = [None] * len(names)

    def run_all(plan: _Plan, isock: IcmpSocket) -> None:
        try:
            _engine(isock, job.options, None, plan.states).run(plan.states)
        finally:
            isock.close()
        with _gc_paused():
            _hosts(plan.states, plan.family, isock, results)
            # Free the per-target state before the collector runs again, so
            # that its first pass does not traverse what is garbage already.
            plan.states.clear()

    opts = job.options
    # A short sweep keeps the collector paused throughout (see _gc_paused);
    # a long one only over its bursts.
    short = (opts.count - 1) * opts.interval + opts.timeout <= _GC_PAUSE_MAX
    with _gc_paused() if short else nullcontext():
        with _gc_paused():
            work = _prepare(names, job)
        if len(work) == 1:
            run_all(*work[0])
        elif work:
            greenlets = [gevent.spawn(run_all, plan, isock) for plan, isock in work]
            try:
                gevent.joinall(greenlets, raise_error=True)
            finally:
                gevent.killall(greenlets)
        del work
        hosts = [r for r in results if r is not None]
    return hosts


def multiping_iter(addresses: Iterable[str], count: int = 1,  # noqa: PLR0917
                   interval: float = 1.0, timeout: float = 2.0, size: int = 56,
                   ttl: int | None = None, source: str | None = None,
                   interface: str | None = None, family: int | str | None = None, *,
                   socket_kind: SocketKind = "auto",
                   strategies: str | Sequence[str] | None = None,
                   helper: str | None = None,
                   on_reply: Callable[[str, Reply, bool], None] | None = None,
                   on_error: Callable[[str, IcmpError], None] | None = None,
                   ) -> Iterator[Host]:
    """Like multiping(), but yields each Host as soon as it is complete.

    Results come in order of completion. Closing the iterator early stops
    the pinging and closes the sockets. Arguments and errors as in ping().
    """
    job = _job(count, interval, timeout, size, ttl, source, interface, family,
               socket_kind, strategies, helper, on_reply, on_error)
    return _iterate(_names(addresses), job)


def _iterate(names: list[str], job: _Job) -> Iterator[Host]:
    queue: gevent.queue.Queue[Host | BaseException | None] = gevent.queue.Queue()
    with _gc_paused():
        work = _prepare(names, job)
    greenlets = [gevent.spawn(_run, plan, isock, job.options,
                              lambda _index, host: queue.put(host))
                 for plan, isock in work]

    def finisher() -> None:
        try:
            gevent.joinall(greenlets, raise_error=True)
        except BaseException as err:  # the consumer re-raises it
            queue.put(err)
        else:
            queue.put(None)

    closer = gevent.spawn(finisher)
    try:
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        gevent.killall([*greenlets, closer])


def traceroute(address: str, max_hops: int = 30, count: int = 3,  # noqa: PLR0917
               timeout: float = 1.0, size: int = 56, source: str | None = None,
               interface: str | None = None, family: int | str | None = None, *,
               socket_kind: SocketKind = "auto",
               strategies: str | Sequence[str] | None = None,
               helper: str | None = None) -> Trace:
    """Trace the path to ``address`` with ICMP echo probes of growing TTL/hop limit.

    ``count`` probes per hop, every hop probed at once through one socket;
    routers answer "time exceeded" and the target an echo reply. Hops past
    the first one where the target answered (or a router reported it
    unreachable) are dropped. Arguments and errors as in ping().
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    if isinstance(max_hops, bool) or not isinstance(max_hops, int) or not 1 <= max_hops <= 255:
        raise ValueError(f"max_hops must be 1..255, not {max_hops!r}")
    job = _job(count, 0.0, timeout, size, None, source, interface, family, socket_kind,
               strategies, helper, None, None)
    ((plan, isock),) = _prepare([address], job)
    first = plan.states[0]
    states = [_State(ttl - 1, first.name, first.address, first.sockaddr, count, ttl)
              for ttl in range(1, max_hops + 1)]
    try:
        _Engine(isock, job.options, lambda state: None).run(states)
    finally:
        isock.close()
    exceeded = (wire.ICMP_TIME_EXCEEDED if plan.family == socket.AF_INET
                else wire.ICMP6_TIME_EXCEEDED)
    hops: list[Hop] = []
    for state in states:
        responders: list[str] = []
        rtts: list[float] = []
        final: list[IcmpError] = []
        for reply in state.replies:
            responders.append(reply.source)
            rtts.append(reply.rtt)
        for error in state.errors:
            if error.reporter is not None:
                responders.append(error.reporter)
            if error.rtt is not None:
                rtts.append(error.rtt)
            if error.type != exceeded:
                final.append(error)
        hop = Hop(state.ttl or 0, state.sent, tuple(dict.fromkeys(responders)), tuple(rtts),
                  bool(state.replies), tuple(final))
        hops.append(hop)
        if hop.reached or hop.errors:
            break
    return Trace(first.address, first.name, plan.family, tuple(hops), isock.kind, isock.rung)
