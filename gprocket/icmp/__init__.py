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

import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext

import gevent
import gevent.queue

from gprocket.icmp import _wire as wire
from gprocket.icmp._engine import _Engine

# ENGINE_ENV (the variable that picks the engine) stays public here, explicitly.
from gprocket.icmp._fast import ENGINE_ENV as ENGINE_ENV
from gprocket.icmp._fast import _engine
from gprocket.icmp._gc import _GC_PAUSE_MAX, _gc_paused
from gprocket.icmp._plan import _Job, _job, _names, _Plan, _prepare
from gprocket.icmp._resolve import resolve
from gprocket.icmp._results import Hop, Host, IcmpError, Reply, Trace
from gprocket.icmp._socket import IcmpSocket, SocketKind
from gprocket.icmp._state import _host, _hosts, _Options, _State

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
    job = _trace_job(address, max_hops, count, timeout, size, source, interface, family,
                     socket_kind, strategies, helper)
    ((plan, isock),) = _prepare([address], job)
    states = _trace_states(plan, count, max_hops)
    try:
        _Engine(isock, job.options, lambda state: None).run(states)
    finally:
        isock.close()
    return _trace(plan, states, isock)


def _trace_job(address: str, max_hops: int, count: int, timeout: float,  # noqa: PLR0917
               size: int, source: str | None, interface: str | None,
               family: int | str | None, socket_kind: SocketKind,
               strategies: str | Sequence[str] | None, helper: str | None) -> _Job:
    """traceroute()'s arguments, validated (shared with gprocket.aio)."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    if isinstance(max_hops, bool) or not isinstance(max_hops, int) or not 1 <= max_hops <= 255:
        raise ValueError(f"max_hops must be 1..255, not {max_hops!r}")
    return _job(count, 0.0, timeout, size, None, source, interface, family, socket_kind,
                strategies, helper, None, None)


def _trace_states(plan: _Plan, count: int, max_hops: int) -> list[_State]:
    """One target per hop: the same address with TTL 1..max_hops."""
    first = plan.states[0]
    return [_State(ttl - 1, first.name, first.address, first.sockaddr, count, ttl)
            for ttl in range(1, max_hops + 1)]


def _trace(plan: _Plan, states: list[_State], isock: IcmpSocket) -> Trace:
    """The Trace from the probed hops (those past the end dropped)."""
    first = plan.states[0]
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
