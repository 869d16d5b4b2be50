"""The pure-Python ICMP engine: one socket, many targets, paced sends, strict matching."""

from __future__ import annotations

import errno
import heapq
import math
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence

import gevent
from gevent.hub import get_hub

from gprocket.icmp import _wire as wire
from gprocket.icmp._resolve import host_key
from gprocket.icmp._results import IcmpError, Reply, _reply
from gprocket.icmp._socket import SO_TIMESTAMPNS, IcmpSocket
from gprocket.icmp._state import READ, WRITE, YIELD, Counters, Options, State, Wait

_IP_TTL = socket.IP_TTL
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_TIMESPEC = struct.Struct("=qq")
_HEADER = struct.Struct("!BBHHH")
_INT = struct.Struct("=i")


class _Probe:
    __slots__ = ("answered", "deadline", "in_window", "key", "payload", "replied", "sent_mono",
                 "sent_ns", "seq", "target")

    def __init__(self, target: State, seq: int, payload: bytes, sent_ns: int,  # noqa: PLR0917
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


# Reply buffer room reserved per outstanding request (see Engine.__init__).
_TRUESIZE = 1280
_BATCH = 256
_MIN_WINDOW = 16
_SEND_RETRY = 0.01  # longest wait for send-buffer room before trying again


def _drive(steps: Generator[Wait, None, None], fd: int) -> None:
    """Run an engine's steps() on the gevent hub: its only waits."""
    hub = get_hub()
    watcher = hub.loop.io(fd, 1)
    writable = hub.loop.io(fd, 2)
    try:
        for kind, delay in steps:
            if kind == YIELD:
                gevent.sleep(0)
            else:
                with gevent.Timeout(delay, False):
                    hub.wait(watcher if kind == READ else writable)
    finally:
        steps.close()
        watcher.close()
        writable.close()


def _flow(isock: IcmpSocket, size: int) -> tuple[int, int]:
    """Flow control: (window, batch), the requests that may await a reply at once."""
    # Measured on Linux 6.x: a queued 64-byte reply costs ~830 bytes of
    # budget; large payloads round their buffer up, hence 2 * size.
    per_reply = _TRUESIZE + 2 * size
    if isock.kind == "raw" and isock.family == socket.AF_INET and not isock.filtered:
        per_reply *= 2  # an unfiltered raw IPv4 socket also queues our own requests
    window = max(_MIN_WINDOW, isock.rcvbuf // per_reply)
    return window, max(1, min(_BATCH, window // 2))


class Engine:
    """One socket, many targets: paced sends, non-blocking drains, strict matching.

    The hot loops are written for CPython: locals instead of attributes, a
    fast path for the common well-formed reply, one monotonic clock reading
    per batch (RTTs use the kernel's receive time stamp and a wall-clock
    stamp taken just before each send).
    """

    def __init__(self, isock: IcmpSocket, options: Options,
                 done: Callable[[State], None] | None) -> None:
        self.isock = isock
        self.sock = isock.sock
        self.family = isock.family
        self.options = options
        self.done = done
        self.ident = isock.ident
        self.raw = isock.kind == "raw"
        self.table: dict[tuple[str, int], _Probe] = {}
        self.counters = Counters()
        self.seq = 0
        self.remaining = 0
        self.window, self.batch = _flow(isock, options.size)
        self.outstanding = 0
        self.max_rtt = 0.0
        self.recv_size = 65535
        self.anc_size = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_INT.size) + 64
        self.err_anc = socket.CMSG_SPACE(512)

    # -- sending

    def run(self, targets: Sequence[State]) -> None:
        """Ping every target; returns when each has all its answers or timeouts."""
        _drive(self.steps(targets), self.sock.fileno())

    def steps(self, targets: Sequence[State]) -> Generator[Wait, None, None]:
        """The engine without its waits: yields what it waits for next (see Wait)."""
        opts = self.options
        # Every target is due at once for its first request, in order; after
        # that it waits in a heap of (due time, order, target) for its next one.
        fresh, pos, total = list(targets), 0, len(targets)
        due: list[tuple[float, int, State]] = []
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
        on_send = opts.on_send
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
                        if on_send is not None:
                            on_send(target.name)
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
                    if on_send is not None:
                        on_send(target.name)
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
                    yield WRITE, _SEND_RETRY
                    continue
                if sent_now:
                    batches += 1
                    if batches % 8 == 0:
                        yield YIELD, 0.0  # let other greenlets run during long bursts
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
                    yield READ, delay
        finally:
            # Stopped early (closed: killed or cancelled) or done: no more sends.
            self.seq = seq

    def _get_ttl(self) -> int:
        if self.family == socket.AF_INET:
            return self.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
        return self.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)

    def _set_ttl(self, ttl: int) -> None:
        if self.family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)

    def _send_failed(self, target: State, seq: int, err: OSError) -> None:
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
            source = addr[0] if v4 or not addr[3] else host_key(addr)
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
                self._error(host_key(addr), seq, data[8:], ext.offender, ext.type, ext.code,
                            stamp or time.time_ns())
