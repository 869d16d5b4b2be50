"""The persistent helper: one ``gprocket-helper --broker`` per client process.

Started lazily on the first request, it serves every later request over the
same socketpair. Greenlets pipeline their requests, each tagged with an id;
one reader greenlet matches replies to waiters (AsyncResult), so no request
blocks the hub or another request. Every wait is bounded: a broker that
stops answering is killed and its in-flight requests fail with HelperError;
a broker that died is restarted by the next request. After ``os.fork`` the
child never touches the parent's broker (it closes its copy of the channel
and starts its own on demand). ``close()`` and interpreter exit shut it down.

The broker belongs to the OS thread that started it: its channel is a
gevent socket of that thread's hub, and the helper's PR_SET_PDEATHSIG fires
when that thread (not the process) exits. So there is one broker per helper
path per thread that asks, which for a gevent program is the one hub thread.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import threading
import time
import weakref
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from ._errors import HelperError
from ._fdpass import close_fds, receive, verify
from ._helper import DEFAULT_TIMEOUT, check_runnable, raise_for_reply
from ._spawn import Child, spawn
from ._spec import Request
from ._wire import encode_request

__all__ = ["Broker", "get_broker", "shutdown_all"]

_BROKERS: weakref.WeakSet[Broker] = weakref.WeakSet()
_REGISTRY: dict[tuple[str, int], Broker] = {}
_REGISTRY_LOCK = threading.Lock()


class _Session:
    """One running broker process and the requests in flight on it."""

    def __init__(self, child: Child, timeout: float) -> None:
        self.child = child
        self.timeout = timeout
        # id -> (waiter, when it was registered); dicts keep insertion order,
        # so the first entry is the oldest request still waiting.
        self.pending: dict[int, tuple[AsyncResult[tuple[Any, int | None]], float]] = {}
        self.ids = itertools.count(1)
        self.send_lock = Semaphore()
        self.dead: str | None = None
        self.reader = gevent.spawn(self._read_loop)
        self.watchdog = gevent.spawn(self._watch)

    def _watch(self) -> None:
        """Kill a broker that stops answering: one timer per session, not per request."""
        tick = min(self.timeout / 4, 1.0)
        while self.dead is None:
            gevent.sleep(tick)
            if self.dead is None and self.pending:
                _, oldest = next(iter(self.pending.values()))
                if time.monotonic() - oldest > self.timeout:
                    # Replies come strictly in order: one late reply stalls them all.
                    self.fail(f"the broker did not answer within {self.timeout} s", kill=True)

    def next_id(self) -> int:
        return next(self.ids) & 0xFFFFFFFF or next(self.ids)

    def _read_loop(self) -> None:
        reason = "the broker closed the channel"
        try:
            while self.dead is None:
                got = receive(self.child.channel)
                if got is None:
                    break
                reply, fd = got
                entry = self.pending.pop(reply.id, None)
                if entry is None:
                    # Its requester is gone (killed greenlet): nobody will take this one.
                    close_fds([] if fd is None else [fd])
                    continue
                entry[0].set((reply, fd))
        except (OSError, HelperError) as err:
            reason = f"the broker channel failed: {err}"
        finally:
            self.fail(reason)

    def fail(self, reason: str, *, kill: bool = False, wait: bool = False) -> None:
        """Mark dead, fail every waiter, stop and reap the process.

        A broker that stopped answering is killed at once (``kill``); one
        whose channel ended gets a second to exit by itself, reaped in the
        background or, with ``wait``, before this returns.
        """
        if self.dead is not None:
            return
        self.dead = reason
        waiters, self.pending = self.pending, {}
        for waiter, _ in waiters.values():
            waiter.set_exception(
                HelperError(f"the broker died with this request in flight: {reason}")
            )
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
        waiters, self.pending = self.pending, {}
        for waiter, _ in waiters.values():
            waiter.set_exception(HelperError("the broker belongs to the parent process (forked)"))

    def shutdown_blocking(self, timeout: float) -> None:
        """At exit: close the channel and let the broker leave, killing it if late."""
        if self.dead is None:
            self.dead = "shut down"
        self.child.channel.close()
        self.child.shutdown_blocking(timeout)


class Broker:
    """A lazily started broker for the helper at ``path``.

    ``request()`` may be called from any number of greenlets at once.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
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
                    child = spawn([self.path, "--broker"])
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
        session = self._live_session()
        rid = session.next_id()
        message = encode_request(request, rid)
        waiter: AsyncResult[tuple[Any, int | None]] = AsyncResult()
        session.pending[rid] = (waiter, time.monotonic())
        try:
            with session.send_lock:
                # One SEQPACKET message: sent whole or not at all.
                if session.child.channel.send(message) != len(message):
                    raise OSError(errno.EMSGSIZE, "short send on a SEQPACKET channel")
            # Bounded: the session's watchdog fails every waiter of a broker
            # that stops answering, and the reader fails them when it dies.
            reply, fd = waiter.get()
        except OSError as err:
            session.fail(f"cannot send to the broker: {err}")
            raise HelperError(f"cannot send to the broker: {err}") from err
        finally:
            session.pending.pop(rid, None)
        if fd is not None and not reply.ok:
            os.close(fd)
        raise_for_reply(reply, request)
        return verify(fd, request, reply)

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


def get_broker(path: str) -> Broker:
    """This thread's broker for the helper at ``path``, created on first use."""
    key = (path, threading.get_ident())
    broker = _REGISTRY.get(key)
    if broker is None:
        with _REGISTRY_LOCK:
            broker = _REGISTRY.setdefault(key, Broker(path))
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
