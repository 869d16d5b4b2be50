"""The persistent helper for asyncio: one broker per event loop per helper path.

The same broker process as the gevent front's (``gprocket._ladder.broker``: its
argument vector comes from ``_channel.helper.helper_argv``, requests are encoded by
``_channel.wire``, replies read by ``_channel.fdpass`` and judged, descriptor included, by
``_channel.helper.checked_descriptor``), driven
by the event loop instead of a hub. Requests are pipelined by id. A lone
request reads before it parks, as the gevent client does (polling while
``_channel.fdpass.Poll`` says it pays, else one read). A reader
callback (``loop.add_reader`` on the channel) stays registered while the
session lives: it reads queued replies while requests are due and completes
the future of each; a reply whose requester was cancelled finds no future and its
descriptor is closed at once, so a cancelled acquisition never leaks (a
bound port is not held by a queued reply). The reader also notices the
broker's exit (end of file), which fails every request in flight; the next
request starts a new broker, and a request the dead broker never read is
sent to the new one. A broker that does not answer within ``timeout`` is
killed and its requests fail with HelperError.

There is one broker per event loop, helper path and network namespace (a
broker enters its namespace at start, ``--netns NAME``, and can never leave
it). A broker belongs to the event loop (and so the thread) that started it:
its channel is watched by that loop, and the helper's PR_SET_PDEATHSIG
fires when the starting thread exits. ``close()`` (or ``aclose_all()``)
stops it; brokers of loops that were closed are stopped when the next
broker starts, and every broker at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import itertools
import os
import threading

from .._channel.fdpass import Poll, receive_now
from .._channel.helper import (
    DEFAULT_TIMEOUT,
    SPIN_SECONDS,
    check_namespace,
    check_runnable,
    checked_descriptor,
    helper_argv,
)
from .._channel.wire import Reply, encode_request
from .._errors import HelperError
from .._spec import Request
from ._channel import send_message
from ._spawn import AsyncChild, spawn

__all__ = ["AsyncBroker", "aclose_all", "get_broker", "shutdown_all"]

_Result = tuple[Reply, int | None]
_REGISTRY: dict[tuple[asyncio.AbstractEventLoop, str, str | None], AsyncBroker] = {}
# Loops of several threads may look brokers up at once.
_REGISTRY_LOCK = threading.Lock()


class _Unsent(Exception):
    """The request never reached the broker: its peer end was already closed."""


class _Session:
    """One running broker process and the requests in flight on it."""

    def __init__(self, child: AsyncChild, loop: asyncio.AbstractEventLoop,
                 timeout: float) -> None:
        self.child = child
        self.loop = loop
        self.timeout = timeout
        # id -> its future; the first entry is the oldest request in flight.
        self.pending: dict[int, asyncio.Future[_Result]] = {}
        self.since: dict[int, float] = {}
        self.watchdog: asyncio.TimerHandle | None = None
        self.ids = itertools.count(1)
        self.dead: str | None = None
        self.fd = child.channel.fileno()
        self.reaper: asyncio.Task[None] | None = None
        # As the gevent client does (docs/ARCHITECTURE.md "Polling only while
        # it pays"): a lone request polls briefly for its reply before it
        # parks, while polls find replies; never with one CPU, where the
        # broker needs it to answer.
        self.poll = Poll(SPIN_SECONDS if len(os.sched_getaffinity(0)) > 1 else 0.0,
                         peer=child.pid)
        loop.add_reader(self.fd, self._readable)

    def next_id(self) -> int:
        return next(self.ids) & 0xFFFFFFFF or next(self.ids)

    def _readable(self, poll: Poll | None = None) -> None:
        """The reader callback: hand queued replies to their requests' futures
        (with ``poll``, the first read polls for one to come as long as it says).

        It reads while requests are still due and stops once none is: a last
        read only to meet EAGAIN would cost a system call per reply. Anything
        left (a cancelled request's reply, end of file) keeps the channel
        readable, and the loop calls back for it.
        """
        while self.dead is None:
            try:
                got = receive_now(self.child.channel, poll=poll)
                poll = None
            except BlockingIOError:
                return
            except (OSError, HelperError) as err:
                self.fail(f"the broker channel failed: {err}")
                return
            if got is None:
                self.fail("the broker closed the channel")
                return
            self.since.pop(got[0].id, None)
            future = self.pending.pop(got[0].id, None)
            if future is None or future.done():
                # Its requester was cancelled: nobody will take the descriptor.
                if got[1] is not None:
                    os.close(got[1])
                continue
            future.set_result(got)
            if not self.pending:
                return

    def _watch(self) -> None:
        """Kill a broker that stops answering: one timer per session, not per request."""
        self.watchdog = None
        if self.dead is not None or not self.pending:
            return
        oldest = next(iter(self.since.values()), None)
        if oldest is not None and self.loop.time() - oldest > self.timeout:
            # Replies come strictly in order: one late reply stalls them all.
            self.fail(f"the broker did not answer within {self.timeout} s", kill=True)
            return
        self.watchdog = self.loop.call_later(min(self.timeout / 4, 1.0), self._watch)

    async def call(self, message: bytes, rid: int) -> _Result:
        """Send ``message`` (id ``rid``) and wait for its reply.

        Raises _Unsent when the broker was gone before the message could
        reach it, HelperError when it died, failed or did not answer within
        the session's timeout.
        """
        future: asyncio.Future[_Result] = self.loop.create_future()
        self.pending[rid] = future
        self.since[rid] = self.loop.time()
        try:
            try:
                try:
                    # One SEQPACKET message: sent whole at once, or not at all.
                    sent = self.child.channel.send(message)
                    if sent != len(message):
                        raise OSError(errno.EMSGSIZE, "short send on a SEQPACKET channel")
                except BlockingIOError:
                    await send_message(self.child.channel, message)
            except BrokenPipeError as err:
                # EPIPE: the peer end was closed, so nothing was delivered.
                self.fail("the broker exited")
                raise _Unsent(str(err)) from err
            except OSError as err:
                self.fail(f"cannot send to the broker: {err}")
                raise HelperError(f"cannot send to the broker: {err}") from err
            # A lone request reads before it parks, as the gevent reader
            # does: polling while the Poll says it pays, else one read (the
            # broker, woken by the send, often answers before we get here).
            if len(self.pending) == 1:
                self._readable(self.poll)
            if not future.done() and self.watchdog is None:
                self.watchdog = self.loop.call_later(min(self.timeout / 4, 1.0), self._watch)
            return await future
        except BaseException:
            # Cancelled (or failed) after its reply came: nobody else will close it.
            if future.done() and not future.cancelled() and future.exception() is None:
                fd = future.result()[1]
                if fd is not None:
                    os.close(fd)
            elif not future.done():
                # Its reply may still come: the reader closes it (no future then).
                future.cancel()
            raise
        finally:
            self.pending.pop(rid, None)
            self.since.pop(rid, None)

    def fail(self, reason: str, *, kill: bool = False) -> None:
        """Mark dead, fail every request in flight, stop and reap the process."""
        futures, self.pending = self.pending, {}
        self.since = {}
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        for future in futures.values():
            if not future.done():
                future.set_exception(HelperError(
                    f"the broker died with this request in flight: {self.dead or reason}"))
        if self.dead is not None:
            return
        self.dead = reason
        self.loop.remove_reader(self.fd)
        self.child.channel.close()
        said = self.child.stderr_text()
        if said:
            self.dead = f"{reason}: {said}"
        if kill:
            self.child.close()
        else:
            self.reaper = self.loop.create_task(self._reap())

    async def _reap(self) -> None:
        # At channel EOF the broker leaves by itself; a second is plenty.
        with contextlib.suppress(TimeoutError):
            await self.child.exited(1.0)
        self.child.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: close our copies, never signal or reap the parent's broker."""
        self.dead = "inherited across fork"
        futures, self.pending, self.since = self.pending, {}, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(HelperError(
                    "the broker belongs to the parent process (forked)"))
        self.child.channel.close()
        for owned in (self.child.pidfd, self.child.stderr):
            if owned >= 0:
                os.close(owned)
        self.child.pidfd = self.child.stderr = -1

    def shutdown_blocking(self, timeout: float) -> None:
        """Without the loop (interpreter exit, a closed loop): stop the process."""
        if self.dead is None:
            self.dead = "shut down"
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)
        self.child.channel.close()
        self.child.shutdown_blocking(timeout)


class AsyncBroker:
    """A lazily started broker for the helper at ``path``, used from one event loop,
    for the requests into one network ``namespace`` (None: the caller's)."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop,
                 timeout: float = DEFAULT_TIMEOUT, namespace: str | None = None) -> None:
        self.path = path
        self.loop = loop
        self.namespace = namespace
        self.timeout = timeout
        self._session: _Session | None = None
        self._owner = os.getpid()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running broker's pid, or None when none runs."""
        session = self._session
        if session is None or session.dead is not None or self._owner != os.getpid():
            return None
        return session.child.pid

    def _live_session(self) -> _Session:
        if self._owner != os.getpid():
            # A forked child never touches its parent's broker.
            old, self._session, self._owner = self._session, None, os.getpid()
            if old is not None:
                old.abandon_after_fork()
        session = self._session
        if session is None or session.dead is not None:
            # Never awaits between the check and the start: one start per need.
            check_runnable(self.path)
            try:
                child = spawn(helper_argv(self.path, broker=True, namespace=self.namespace))
            except OSError as err:
                raise HelperError(
                    f"cannot start the broker {self.path}: {err.strerror}") from err
            session = self._session = _Session(child, self.loop, self.timeout)
            self.starts += 1
        return session

    async def request(self, request: Request) -> int:
        """A checked descriptor for ``request`` from the broker.

        Raises PolicyDenied, OSError (kernel refusal with its errno),
        RungUnavailable (helper cannot run here) or HelperError (the broker
        died, broke the protocol, or did not answer within ``timeout``).
        Cancelled, it leaves nothing behind: the reply's descriptor, when it
        comes, is closed. A request for another namespace than the broker's is
        a ValueError, refused before anything is sent.
        """
        check_namespace(self.namespace, request)
        session = self._live_session()
        rid = session.next_id()
        try:
            reply, fd = await session.call(encode_request(request, rid), rid)
        except _Unsent as err:
            # The broker died while idle: a new one may serve the request.
            session = self._live_session()
            rid = session.next_id()
            try:
                reply, fd = await session.call(encode_request(request, rid), rid)
            except _Unsent as again:
                raise HelperError(
                    f"the broker {self.path} exited before it could read a request: {again}"
                ) from err
        return checked_descriptor(request, reply, fd)

    async def aclose(self) -> None:
        """Stop the broker and reap it; the next request starts a new one."""
        session, self._session = self._session, None
        if session is None or self._owner != os.getpid():
            return
        session.fail("closed")
        if session.reaper is not None:
            await session.reaper


def _sweep() -> None:
    """Stop the brokers of event loops that were closed (nobody can use them)."""
    with _REGISTRY_LOCK:
        gone = [_REGISTRY.pop(key) for key in list(_REGISTRY) if key[0].is_closed()]
    for broker in gone:
        session, broker._session = broker._session, None
        if session is not None and broker._owner == os.getpid():
            session.shutdown_blocking(1.0)


def get_broker(path: str, namespace: str | None = None) -> AsyncBroker:
    """The running event loop's broker for the helper at ``path`` serving
    requests into ``namespace``, made on first use."""
    loop = asyncio.get_running_loop()
    key = (loop, path, namespace)
    broker = _REGISTRY.get(key)
    if broker is None:
        _sweep()
        with _REGISTRY_LOCK:
            broker = _REGISTRY.setdefault(key, AsyncBroker(path, loop, namespace=namespace))
    return broker


async def aclose_all() -> None:
    """Stop every broker of the running event loop (each is restarted on demand)."""
    loop = asyncio.get_running_loop()
    with _REGISTRY_LOCK:
        mine = [_REGISTRY.pop(key) for key in list(_REGISTRY) if key[0] is loop]
    for broker in mine:
        await broker.aclose()


def shutdown_all(timeout: float = 1.0) -> None:
    """Stop every broker of this process (called at interpreter exit)."""
    with _REGISTRY_LOCK:
        brokers = list(_REGISTRY.values())
        _REGISTRY.clear()
    for broker in brokers:
        session, broker._session = broker._session, None
        if session is not None and broker._owner == os.getpid():
            session.shutdown_blocking(timeout)


atexit.register(shutdown_all)
