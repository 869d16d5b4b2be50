"""ICMP and ICMPv6 echo for asyncio: ping, multiping, multiping_iter, traceroute.

The arguments, results and matching are gprocket.icmp's: the same planning
(``icmp._plan``), socket configuration (``icmp._socket.configure``) and
engines (the compiled ``icmp._speed`` one when built, else the pure-Python
one). Each engine's ``steps()`` is its work without its waits; here they are
awaited through the loop (reader/writer callbacks and ``asyncio.sleep``)
instead of the gevent hub. A raw socket, when ping sockets are not allowed,
comes from gprocket.aio's ladder, so the broker never blocks the loop.
Cancelled, a sweep stops sending at once and closes its sockets.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import nullcontext
from types import TracebackType

import gprocket

from ..icmp._engine import Engine
from ..icmp._fast import choose_engine
from ..icmp._gc import GC_PAUSE_MAX, gc_paused
from ..icmp._plan import Job, Plan, make_job, make_plans, source_for, target_names
from ..icmp._results import Host, IcmpError, Reply, Trace
from ..icmp._socket import (
    IcmpSocket,
    SocketKind,
    configure,
    datagram_first,
    family_and_protocol,
    raw_names,
    with_datagram_attempt,
)
from ..icmp._state import READ, YIELD, State, Wait, host_result, host_results
from ..icmp._traceroute import trace_job, trace_result, trace_states
from ._api import open as aio_open
from ._wait import readable, writable

__all__ = ["MultipingIter", "multiping", "multiping_iter", "open_icmp_socket", "ping",
           "traceroute"]

_OnReply = Callable[[str, Reply, bool], None] | None
_OnError = Callable[[str, IcmpError], None] | None


async def _drive(steps: Generator[Wait, None, None], fd: int) -> None:
    """Run an engine's steps() on the event loop: its only waits."""
    try:
        for kind, delay in steps:
            if kind == YIELD:
                await asyncio.sleep(0)
            elif kind == READ:
                await readable(fd, delay)
            else:
                await writable(fd, delay)
    finally:
        # Cancelled: the engine's own cleanup runs now, and it sends no more.
        steps.close()


async def open_icmp_socket(family: int | str, *, kind: SocketKind = "auto",
                           source: str | None = None, interface: str | None = None,
                           ttl: int | None = None,
                           strategies: str | Sequence[str] | None = None,
                           helper: str | None = None) -> IcmpSocket:
    """gprocket.icmp._socket.open_icmp_socket, with the raw socket awaited."""
    af, _proto = family_and_protocol(family)
    sock, refusal = datagram_first(family, kind)
    rung = "plain"
    if sock is None:
        fam, protocol = raw_names(af)
        try:
            sock = await aio_open(0, protocol=protocol, family=fam, ip=source,
                                  interface=interface, strategies=strategies, helper=helper)
        except gprocket.PrivilegeError as err:
            if refusal is None:
                raise
            raise with_datagram_attempt(err, refusal) from err
        rung = sock.rung
    return configure(sock, af, rung, source=source, interface=interface, ttl=ttl)


async def _prepare(names: Iterable[str], job: Job) -> list[tuple[Plan, IcmpSocket]]:
    """Resolve every address (literals without the resolver), one socket per family."""
    loop = asyncio.get_running_loop()
    names = list(names)
    if all(_is_literal(name) for name in names):
        with gc_paused():
            plans = make_plans(names, job.family, job.options.count)
    else:
        # Names go through getaddrinfo: in a worker thread, not on the loop.
        plans = await loop.run_in_executor(None, make_plans, names, job.family, job.options.count)
    opened: list[tuple[Plan, IcmpSocket]] = []
    try:
        for plan in plans:
            chain = job.strategies if job.strategies is None or isinstance(job.strategies, str) \
                else list(job.strategies)
            opened.append((plan, await open_icmp_socket(
                plan.family, kind=job.kind, source=source_for(plan, job),
                interface=job.interface, ttl=job.ttl, strategies=chain, helper=job.helper)))
    except BaseException:
        for _, isock in opened:
            isock.close()
        raise
    return opened


def _is_literal(name: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
        except OSError:
            continue
        return True
    return False


async def ping(address: str, count: int = 4, interval: float = 1.0,  # noqa: PLR0917
               timeout: float = 2.0, size: int = 56, ttl: int | None = None,
               source: str | None = None, interface: str | None = None,
               family: int | str | None = None, *, socket_kind: SocketKind = "auto",
               strategies: str | Sequence[str] | None = None, helper: str | None = None,
               on_reply: _OnReply = None, on_error: _OnError = None) -> Host:
    """gprocket.icmp.ping for asyncio: the same arguments, a Host."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    hosts = await multiping([address], count=count, interval=interval, timeout=timeout,
                            size=size, ttl=ttl, source=source, interface=interface,
                            family=family, socket_kind=socket_kind, strategies=strategies,
                            helper=helper, on_reply=on_reply, on_error=on_error)
    return hosts[0]


async def _run_all(plan: Plan, isock: IcmpSocket, job: Job,
                   results: list[Host | None]) -> None:
    try:
        engine = choose_engine(isock, job.options, None, plan.states)
        await _drive(engine.steps(plan.states), isock.sock.fileno())
    finally:
        isock.close()
    with gc_paused():
        host_results(plan.states, plan.family, isock, results)
        plan.states.clear()


async def _gather(coros: list[asyncio.Task[None]]) -> None:
    """Wait for every task; on the first failure or a cancellation, cancel the rest."""
    try:
        await asyncio.gather(*coros)
    finally:
        for task in coros:
            task.cancel()
        await asyncio.gather(*coros, return_exceptions=True)


async def multiping(addresses: Iterable[str], count: int = 1,  # noqa: PLR0917
                    interval: float = 1.0, timeout: float = 2.0, size: int = 56,
                    ttl: int | None = None, source: str | None = None,
                    interface: str | None = None, family: int | str | None = None, *,
                    socket_kind: SocketKind = "auto",
                    strategies: str | Sequence[str] | None = None, helper: str | None = None,
                    on_reply: _OnReply = None, on_error: _OnError = None) -> list[Host]:
    """gprocket.icmp.multiping for asyncio: one Host per address, in input order."""
    job = make_job(count, interval, timeout, size, ttl, source, interface, family,
                   socket_kind, strategies, helper, on_reply, on_error)
    names = target_names(addresses)
    results: list[Host | None] = [None] * len(names)
    opts = job.options
    short = (opts.count - 1) * opts.interval + opts.timeout <= GC_PAUSE_MAX
    with gc_paused() if short else nullcontext():
        work = await _prepare(names, job)
        if len(work) == 1:
            await _run_all(*work[0], job, results)
        elif work:
            loop = asyncio.get_running_loop()
            await _gather([loop.create_task(_run_all(plan, isock, job, results))
                           for plan, isock in work])
        del work
        return [r for r in results if r is not None]


class MultipingIter:
    """The async iterator of multiping_iter(): Hosts in order of completion.

    Pinging starts at the first ``__anext__``. ``aclose()`` (or leaving an
    ``async with`` block) stops it at once and closes the sockets; an
    iterator dropped unfinished is stopped when collected.
    """

    def __init__(self, names: list[str], job: Job) -> None:
        self._names = names
        self._job = job
        self._queue: asyncio.Queue[Host | BaseException | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._finished = False

    def __aiter__(self) -> MultipingIter:
        return self

    async def _start(self) -> None:
        self._started = True
        work = await _prepare(self._names, self._job)
        loop = asyncio.get_running_loop()
        put = self._queue.put_nowait
        for plan, isock in work:
            self._tasks.append(loop.create_task(self._one(plan, isock, put)))
        self._tasks.append(loop.create_task(self._finisher(list(self._tasks))))

    async def _one(self, plan: Plan, isock: IcmpSocket,
                   put: Callable[[Host | BaseException | None], None]) -> None:
        def done(state: State) -> None:
            put(host_result(state, plan.family, isock))

        try:
            engine = choose_engine(isock, self._job.options, done, plan.states)
            await _drive(engine.steps(plan.states), isock.sock.fileno())
        finally:
            isock.close()

    async def _finisher(self, tasks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*tasks)
        except BaseException as err:  # the consumer re-raises it
            self._queue.put_nowait(err)
        else:
            self._queue.put_nowait(None)

    async def __anext__(self) -> Host:
        if self._finished:
            raise StopAsyncIteration
        if not self._started:
            try:
                await self._start()
            except BaseException:
                await self.aclose()
                raise
        item = await self._queue.get()
        if item is None:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        return item

    async def aclose(self) -> None:
        """Stop pinging now (no further request is sent) and close the sockets."""
        self._finished = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> MultipingIter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __del__(self) -> None:
        for task in self._tasks:
            if not task.done() and not task.get_loop().is_closed():
                task.cancel()


def multiping_iter(addresses: Iterable[str], count: int = 1,  # noqa: PLR0917
                   interval: float = 1.0, timeout: float = 2.0, size: int = 56,
                   ttl: int | None = None, source: str | None = None,
                   interface: str | None = None, family: int | str | None = None, *,
                   socket_kind: SocketKind = "auto",
                   strategies: str | Sequence[str] | None = None, helper: str | None = None,
                   on_reply: _OnReply = None, on_error: _OnError = None) -> MultipingIter:
    """gprocket.icmp.multiping_iter for asyncio: ``async for host in ...``.

    Arguments are validated here, before anything starts.
    """
    job = make_job(count, interval, timeout, size, ttl, source, interface, family,
                   socket_kind, strategies, helper, on_reply, on_error)
    return MultipingIter(target_names(addresses), job)


async def traceroute(address: str, max_hops: int = 30, count: int = 3,  # noqa: PLR0917
                     timeout: float = 1.0, size: int = 56, source: str | None = None,
                     interface: str | None = None, family: int | str | None = None, *,
                     socket_kind: SocketKind = "auto",
                     strategies: str | Sequence[str] | None = None,
                     helper: str | None = None) -> Trace:
    """gprocket.icmp.traceroute for asyncio: the same arguments, a Trace."""
    job = trace_job(address, max_hops, count, timeout, size, source, interface, family,
                    socket_kind, strategies, helper)
    ((plan, isock),) = await _prepare([address], job)
    states = trace_states(plan, count, max_hops)
    try:
        await _drive(Engine(isock, job.options, lambda state: None).steps(states),
                     isock.sock.fileno())
    finally:
        isock.close()
    return trace_result(plan, states, isock)


