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

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext

import gevent
import gevent.queue

from gprocket.icmp import _wire as wire
from gprocket.icmp._engine import Engine

# ENGINE_ENV (the variable that picks the engine) stays public here, explicitly.
from gprocket.icmp._fast import ENGINE_ENV as ENGINE_ENV
from gprocket.icmp._fast import choose_engine
from gprocket.icmp._gc import GC_PAUSE_MAX, gc_paused
from gprocket.icmp._plan import Job, Plan, make_job, prepare, target_names
from gprocket.icmp._resolve import resolve
from gprocket.icmp._results import Hop, Host, IcmpError, Reply, Trace
from gprocket.icmp._socket import IcmpSocket, SocketKind
from gprocket.icmp._state import Options, State, host_result, host_results
from gprocket.icmp._traceroute import trace_job, trace_result, trace_states

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
    "traceroute", "wire",
]


def _run(plan: Plan, isock: IcmpSocket, options: Options,
         emit: Callable[[int, Host], None]) -> None:
    def done(state: State) -> None:
        emit(state.index, host_result(state, plan.family, isock))

    try:
        choose_engine(isock, options, done, plan.states).run(plan.states)
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
    job = make_job(count, interval, timeout, size, ttl, source, interface, family,
                   socket_kind, strategies, helper, on_reply, on_error)
    names = target_names(addresses)
    results: list[Host | None] = [None] * len(names)

    def run_all(plan: Plan, isock: IcmpSocket) -> None:
        try:
            choose_engine(isock, job.options, None, plan.states).run(plan.states)
        finally:
            isock.close()
        with gc_paused():
            host_results(plan.states, plan.family, isock, results)
            # Free the per-target state before the collector runs again, so
            # that its first pass does not traverse what is garbage already.
            plan.states.clear()

    opts = job.options
    # A short sweep keeps the collector paused throughout (see gc_paused);
    # a long one only over its bursts.
    short = (opts.count - 1) * opts.interval + opts.timeout <= GC_PAUSE_MAX
    with gc_paused() if short else nullcontext():
        with gc_paused():
            work = prepare(names, job)
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
    job = make_job(count, interval, timeout, size, ttl, source, interface, family,
                   socket_kind, strategies, helper, on_reply, on_error)
    return _iterate(target_names(addresses), job)


def _iterate(names: list[str], job: Job) -> Iterator[Host]:
    queue: gevent.queue.Queue[Host | BaseException | None] = gevent.queue.Queue()
    with gc_paused():
        work = prepare(names, job)
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
    job = trace_job(address, max_hops, count, timeout, size, source, interface, family,
                    socket_kind, strategies, helper)
    ((plan, isock),) = prepare([address], job)
    states = trace_states(plan, count, max_hops)
    try:
        Engine(isock, job.options, lambda state: None).run(states)
    finally:
        isock.close()
    return trace_result(plan, states, isock)
