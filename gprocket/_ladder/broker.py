"""The broker rung: one persistent ``gprocket-helper --broker`` per client process.

Started lazily on the first request, it serves every later request over the
same socketpair. Greenlets pipeline their requests, each tagged with an id.
There is no standing reader: the first waiting requester reads the channel
itself (leader) and hands every reply that is not its own to that request's
greenlet (follower); when its own reply comes it passes the reading on to a
follower. A lone request therefore costs one send, one cooperative wait and
one recvmsg, with no greenlet switch besides the hub's. A reply whose
requester was killed is still read (by a short-lived reader when nobody
else is reading), so the descriptor it carries is closed at once. No request blocks
the hub or another request. Every wait is bounded: a broker that stops
answering is killed and its in-flight requests fail with HelperError; a
broker that died is restarted by the next request (a request the dead
broker never received is sent to the new one). After ``os.fork`` the child
never touches the parent's broker (it closes its copy of the channel and
starts its own on demand). ``close()`` and interpreter exit shut it down.

The broker belongs to the OS thread that started it: its channel is a
gevent socket of that thread's hub, and the helper's PR_SET_PDEATHSIG fires
when that thread (not the process) exits. A broker also serves one network
namespace: it enters /run/netns/NAME at start (``--netns NAME``) and drops
CAP_SYS_ADMIN before it reads a request, so it can never change namespace
again. So there is one broker per helper path, thread that asks and
namespace, which for a gevent program is one per namespace it uses.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import socket
import threading
import time
import weakref
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub
from gevent.lock import Semaphore

from .._channel.fdpass import Poll, receive
from .._channel.helper import (
    DEFAULT_TIMEOUT,
    SPIN_SECONDS,
    check_namespace,
    check_runnable,
    checked_descriptor,
    helper_argv,
    locate,
)
from .._channel.spawn import Child, spawn
from .._channel.wire import Reply, encode_request
from .._errors import HelperError
from .._spec import Request

__all__ = ["Broker", "BrokerStrategy", "get_broker", "shutdown_all"]

_BROKERS: weakref.WeakSet[Broker] = weakref.WeakSet()
_REGISTRY: dict[tuple[str, int, str | None], Broker] = {}
_REGISTRY_LOCK = threading.Lock()


class _Unsent(Exception):
    """The request never reached the broker: its peer end was already closed."""


class _Slot:
    """One request in flight: when it was sent, and its outcome once known."""

    __slots__ = ("error", "result", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.result: tuple[Reply, int | None] | None = None
        self.error: HelperError | None = None


class _Session:
    """One running broker process and the requests in flight on it."""

    def __init__(self, child: Child, timeout: float) -> None:
        self.child = child
        self.timeout = timeout
        # id -> slot; dicts keep insertion order, so the first entry is the
        # oldest request still waiting.
        self.pending: dict[int, _Slot] = {}
        # Requesters parked until their reply (or the reading) is handed to them.
        self.followers: dict[_Slot, Waiter[Any]] = {}
        self.reading = False
        # Requests whose requester left (killed) before its reply came: their
        # replies must still be read, to close the descriptors they carry.
        self.orphans = 0
        self.ids = itertools.count(1)
        self.send_lock = Semaphore()
        # The non-blocking socket under the gevent one (gevent keeps it as _sock).
        self.raw: socket.socket = child.channel._sock
        self.spin = SPIN_SECONDS if len(os.sched_getaffinity(0)) > 1 else 0.0
        self.poll = Poll(self.spin, peer=child.pid)
        self.dead: str | None = None
        self.loop = get_hub().loop
        # The broker's exit, noticed while idle (nobody reads the channel
        # then): a watcher on the pidfd, which costs nothing per request.
        self.exit_watch = self.loop.io(child.pidfd, 1)
        self.exit_watch.start(self._exited)
        self.watchdog = gevent.spawn(self._watch)

    def _watch(self) -> None:
        """Kill a broker that stops answering: one timer per session, not per request."""
        tick = min(self.timeout / 4, 1.0)
        while self.dead is None:
            gevent.sleep(tick)
            if self.dead is None and self.pending:
                oldest = next(iter(self.pending.values())).since
                if time.monotonic() - oldest > self.timeout:
                    # Replies come strictly in order: one late reply stalls them all.
                    self.fail(f"the broker did not answer within {self.timeout} s", kill=True)

    def _exited(self) -> None:
        # Runs in the hub. With requests in flight their reader meets the
        # channel's end after any replies the broker sent before it died.
        self.exit_watch.stop()
        if not self.pending:
            self.fail("the broker exited")

    def next_id(self) -> int:
        return next(self.ids) & 0xFFFFFFFF or next(self.ids)

    def call(self, message: bytes, rid: int) -> tuple[Reply, int | None]:
        """Send ``message`` (request id ``rid``) and wait for its reply.

        Raises _Unsent when the broker was gone before the message could
        reach it, HelperError when it died or failed with the request in
        flight.
        """
        slot = _Slot(time.monotonic())
        self.pending[rid] = slot
        sent = -1
        try:
            try:
                # One SEQPACKET message: sent whole or not at all. Straight to
                # the non-blocking socket when no sender waits for room; the
                # gevent socket (which waits) only when the queue is full.
                try:
                    if self.send_lock.locked():
                        raise BlockingIOError
                    sent = self.raw.send(message)
                except BlockingIOError:
                    with self.send_lock:
                        sent = self.child.channel.send(message)
                if sent != len(message):
                    raise OSError(errno.EMSGSIZE, "short send on a SEQPACKET channel")
            except BrokenPipeError as err:
                # EPIPE: the peer end was closed, so nothing was delivered.
                self.fail("the broker exited")
                raise _Unsent(str(err)) from err
            except OSError as err:
                self.fail(f"cannot send to the broker: {err}")
                raise HelperError(f"cannot send to the broker: {err}") from err
            # Bounded: the watchdog fails every request of a broker that stops
            # answering, and a reader that meets the channel's end fails them all.
            while slot.result is None:
                if slot.error is not None:
                    raise slot.error
                if self.reading:
                    self._follow(slot)
                else:
                    self._lead(slot)
            return slot.result
        except BaseException:
            # Killed or failed after its reply arrived: nobody else will close it.
            if slot.result is not None and slot.result[1] is not None:
                os.close(slot.result[1])
            elif sent > 0 and slot.error is None and self.dead is None:
                # Killed with its reply still to come: someone must read it.
                self.pending.pop(rid, None)
                self.orphans += 1
                self._pass_reading()
            raise
        finally:
            self.pending.pop(rid, None)

    def _follow(self, slot: _Slot) -> None:
        waiter: Waiter[Any] = Waiter()
        self.followers[slot] = waiter
        try:
            waiter.get()
        finally:
            self.followers.pop(slot, None)

    def _wake(self, slot: _Slot) -> None:
        waiter = self.followers.pop(slot, None)
        if waiter is not None:
            # Waiter.switch belongs to the hub: it runs it on its next turn.
            self.loop.run_callback(waiter.switch, None)

    def _lead(self, slot: _Slot | None) -> None:
        """Read replies, handing each to its requester, until ``slot``'s comes
        (with None: until every orphaned reply has been read and closed)."""
        self.reading = True
        try:
            while (
                slot.result is None and slot.error is None
                if slot is not None
                else self.orphans > 0 and self.dead is None
            ):
                try:
                    got = receive(self.child.channel, poll=self.poll)
                except (OSError, HelperError) as err:
                    self.fail(f"the broker channel failed: {err}")
                    return
                if got is None:
                    self.fail("the broker closed the channel")
                    return
                owner = self.pending.pop(got[0].id, None)
                if owner is None:
                    # Its requester is gone (killed greenlet): nobody will take this one.
                    self.orphans = max(0, self.orphans - 1)
                    if got[1] is not None:
                        os.close(got[1])
                    continue
                owner.result = got
                if owner is not slot:
                    self._wake(owner)
        finally:
            self.reading = False
            self._pass_reading()

    def _pass_reading(self) -> None:
        """Make sure someone reads while any reply is still due."""
        if self.reading or self.dead is not None:
            return
        if self.followers:
            # A follower's reply may still be coming: it reads next.
            self._wake(next(iter(self.followers)))
        elif self.orphans:
            # Only replies nobody waits for: a short-lived reader closes
            # their descriptors (a bound port must not stay held in the queue).
            self.reading = True
            gevent.spawn(self._drain)

    def _drain(self) -> None:
        self.reading = False
        self._lead(None)

    def fail(self, reason: str, *, kill: bool = False, wait: bool = False) -> None:
        """Mark dead, fail every waiter, stop and reap the process.

        A broker that stopped answering is killed at once (``kill``); one
        whose channel ended gets a second to exit by itself, reaped in the
        background or, with ``wait``, before this returns. Safe to call from
        the hub (no blocking unless ``wait``).
        """
        slots, self.pending = self.pending, {}
        for slot in slots.values():
            # Also a request that slipped in after the death was noticed.
            slot.error = HelperError(
                f"the broker died with this request in flight: {self.dead or reason}"
            )
            self._wake(slot)
        if self.dead is not None:
            return
        self.dead = reason
        self.exit_watch.stop()
        # Closing cancels a leader's wait on the channel (it sees EBADF).
        self.child.channel.close()
        said = self.child.stderr_text()
        if said:
            self.dead = f"{reason}: {said}"
        if kill:
            self.child.close()
        elif wait:
            self._reap()
        else:
            gevent.spawn(self._reap)

    def _reap(self) -> None:
        with contextlib.suppress(TimeoutError):  # wait() killed and reaped it
            self.child.wait(1.0)
        self.child.close()

    def abandon_after_fork(self) -> None:
        """In a forked child: forget the parent's broker without touching it."""
        self.dead = "inherited across fork"
        self.exit_watch.stop()
        channel = self.child.channel
        raw = getattr(channel, "_sock", None)
        fd = raw.detach() if raw is not None else -1
        if fd >= 0:
            os.close(fd)
        for owned in (self.child.pidfd, self.child.stderr):
            if owned >= 0:
                os.close(owned)
        # The process is the parent's: never signal or reap it from here.
        self.child.pidfd = -1
        self.child.stderr = -1
        slots, self.pending = self.pending, {}
        for slot in slots.values():
            slot.error = HelperError("the broker belongs to the parent process (forked)")
            self._wake(slot)

    def shutdown_blocking(self, timeout: float) -> None:
        """At exit: close the channel and let the broker leave, killing it if late."""
        if self.dead is None:
            self.dead = "shut down"
        self.exit_watch.stop()
        self.child.channel.close()
        self.child.shutdown_blocking(timeout)


class Broker:
    """A lazily started broker for the helper at ``path``, serving ``namespace``.

    ``request()`` may be called from any number of greenlets at once; every
    request must name the broker's namespace (None: the one it started in).
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT,
                 namespace: str | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.namespace = namespace
        self._owner = os.getpid()
        self._session: _Session | None = None
        self._start_lock = Semaphore()
        self.starts = 0
        _BROKERS.add(self)

    @property
    def pid(self) -> int | None:
        """The running broker's pid, or None when none runs."""
        session = self._session
        if session is None or session.dead is not None or self._owner != os.getpid():
            return None
        return session.child.pid

    def _live_session(self) -> _Session:
        if self._owner != os.getpid():
            self._after_fork()
        session = self._session
        if session is not None and session.dead is None:
            return session
        with self._start_lock:
            session = self._session
            if session is None or session.dead is not None:
                check_runnable(self.path)
                try:
                    child = spawn(helper_argv(self.path, broker=True, namespace=self.namespace))
                except OSError as err:
                    raise HelperError(
                        f"cannot start the broker {self.path}: {err.strerror}"
                    ) from err
                session = self._session = _Session(child, self.timeout)
                self.starts += 1
            return session

    def request(self, request: Request) -> int:
        """A checked descriptor for ``request`` from the broker.

        Raises PolicyDenied, OSError (kernel refusal with its errno),
        RungUnavailable (helper cannot run here) or HelperError (the broker
        died, broke the protocol, or did not answer within ``timeout``).
        """
        check_namespace(self.namespace, request)
        session = self._live_session()
        rid = session.next_id()
        try:
            reply, fd = session.call(encode_request(request, rid), rid)
        except _Unsent as err:
            # The broker died while idle and its end was closed before we
            # wrote: the request never reached it, so a new broker may serve it.
            session = self._live_session()
            rid = session.next_id()
            try:
                reply, fd = session.call(encode_request(request, rid), rid)
            except _Unsent as again:
                raise HelperError(
                    f"the broker {self.path} exited before it could read a request: {again}"
                ) from err
        return checked_descriptor(request, reply, fd)

    def close(self) -> None:
        """Stop the broker and reap it; the next request starts a new one.

        The broker exits at channel EOF; one that has not within a second is
        killed. In-flight requests fail with HelperError.
        """
        session, self._session = self._session, None
        if session is not None and self._owner == os.getpid():
            session.fail("closed", wait=True)

    def _after_fork(self) -> None:
        session, self._session = self._session, None
        self._owner = os.getpid()
        if session is not None:
            session.abandon_after_fork()


def get_broker(path: str, namespace: str | None = None) -> Broker:
    """This thread's broker for the helper at ``path`` in ``namespace``, made on first use."""
    key = (path, threading.get_ident(), namespace)
    broker = _REGISTRY.get(key)
    if broker is None:
        with _REGISTRY_LOCK:
            broker = _REGISTRY.setdefault(key, Broker(path, namespace=namespace))
    return broker


def _after_fork_in_child() -> None:
    for broker in list(_BROKERS):
        broker._after_fork()


def shutdown_all(timeout: float = 1.0) -> None:
    """Stop every broker of this process (called at interpreter exit)."""
    for broker in list(_BROKERS):
        session, broker._session = broker._session, None
        if session is not None and broker._owner == os.getpid() and session.dead is None:
            session.shutdown_blocking(timeout)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(shutdown_all)


class BrokerStrategy:
    """The persistent helper shared by the whole process."""

    name = "broker"

    def __init__(self, helper: str | os.PathLike[str] | None = None) -> None:
        self.helper = helper

    def acquire(self, request: Request) -> int:
        """Ask this process's broker (started on first use)."""
        return get_broker(locate(self.helper), request.namespace).request(request)
