"""Cooperative I/O on any descriptor (TUN/TAP devices, character devices, pipes).

A descriptor is put in non-blocking mode; every call first tries the system
call and, only on EAGAIN, parks the calling greenlet on a libev io watcher until
the kernel says the descriptor is ready. So one greenlet waiting for a packet
never blocks the hub. :class:`FdIO` keeps its two watchers for its whole life
(creating a watcher per wait, as ``gevent.socket.wait_read`` does, costs more
than the read itself on a busy device); the module-level functions are for
one-off use on a descriptor you do not wrap.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

import gevent
from gevent.hub import get_hub

__all__ = [
    "FdIO",
    "make_nonblocking",
    "read",
    "readv",
    "wait_readable",
    "wait_writable",
    "write",
    "writev",
]

_READ = 1  # libev EV_READ
_WRITE = 2  # libev EV_WRITE
_Buffer = bytes | bytearray | memoryview
T = TypeVar("T")


def nonblocking_call(wait: Callable[[float | None], None], timeout: float | None,
                     call: Callable[..., T], *args: Any) -> T:
    """Return ``call(*args)``, calling ``wait(timeout)`` and trying again while it would block.

    The one retry loop behind every cooperative read, write, readv, writev,
    recvmsg and sendmsg (trio's ``_nonblocking_helper``): *call* is a
    non-blocking system call, *wait* parks the greenlet until the descriptor
    is ready and raises TimeoutError when *timeout* passes. Python retries
    EINTR itself (PEP 475); InterruptedError is still treated as "try again"
    for a call that surfaces it. Any other OSError propagates unchanged.
    """
    while True:
        try:
            return call(*args)
        except (BlockingIOError, InterruptedError):
            wait(timeout)


def make_nonblocking(fd: int) -> bool:
    """Put *fd* in non-blocking mode; return whether it was blocking before.

    Raises OSError (EBADF) if *fd* is not an open descriptor.
    """
    was_blocking = os.get_blocking(fd)
    if was_blocking:
        os.set_blocking(fd, False)
    return was_blocking


def _timeout_error(what: str, timeout: float) -> TimeoutError:
    return TimeoutError(errno.ETIMEDOUT, f"{what} timed out after {timeout} s")


def _wait(fd: int, events: int, timeout: float | None, what: str) -> None:
    hub = get_hub()
    watcher = hub.loop.io(fd, events)
    try:
        if timeout is None:
            hub.wait(watcher)
        else:
            with gevent.Timeout(timeout, _timeout_error(what, timeout)):
                hub.wait(watcher)
    finally:
        watcher.close()


def wait_readable(fd: int, timeout: float | None = None) -> None:
    """Park the current greenlet until *fd* is readable.

    Raises TimeoutError (errno ETIMEDOUT) after *timeout* seconds.
    """
    _wait(fd, _READ, timeout, f"waiting to read descriptor {fd}")


def wait_writable(fd: int, timeout: float | None = None) -> None:
    """Park the current greenlet until *fd* is writable.

    Raises TimeoutError (errno ETIMEDOUT) after *timeout* seconds.
    """
    _wait(fd, _WRITE, timeout, f"waiting to write descriptor {fd}")


def read(fd: int, n: int, timeout: float | None = None) -> bytes:
    """Read at most *n* bytes from *fd* (made non-blocking), waiting cooperatively.

    For a packet device one call returns one whole packet. Returns b"" at end
    of file. Raises TimeoutError, or OSError with the kernel's errno.
    """
    make_nonblocking(fd)
    return nonblocking_call(partial(wait_readable, fd), timeout, os.read, fd, n)


def write(fd: int, data: _Buffer, timeout: float | None = None) -> int:
    """Write *data* to *fd* (made non-blocking) with one system call once writable.

    Returns the number of bytes the kernel took (a packet device takes the whole
    packet or fails). Raises TimeoutError, or OSError with the kernel's errno.
    """
    make_nonblocking(fd)
    return nonblocking_call(partial(wait_writable, fd), timeout, os.write, fd, data)


def readv(fd: int, buffers: Sequence[bytearray | memoryview], timeout: float | None = None) -> int:
    """Scatter one read from *fd* into *buffers* in order; return the byte count.

    Raises TimeoutError, or OSError with the kernel's errno.
    """
    make_nonblocking(fd)
    return nonblocking_call(partial(wait_readable, fd), timeout, os.readv, fd, buffers)


def writev(fd: int, buffers: Sequence[_Buffer], timeout: float | None = None) -> int:
    """Gather *buffers* into one write to *fd*; return the byte count.

    For a packet device the buffers form one packet (e.g. a header and a
    payload kept apart). Raises TimeoutError, or OSError with the kernel's errno.
    """
    make_nonblocking(fd)
    return nonblocking_call(partial(wait_writable, fd), timeout, os.writev, fd, buffers)


class FdIO:
    """A descriptor with cooperative, message-at-a-time read and write.

    Takes ownership of *fd* when *own* is true (the default): :meth:`close`
    closes it. Closing wakes every greenlet parked on the descriptor with
    OSError(EBADF) before the descriptor itself is closed, so libev never
    watches a closed (or reused) number.
    """

    __slots__ = ("__weakref__", "_fd", "_hub", "_own", "_read_watcher", "_write_watcher")

    # Once closed, _fd is -1: a system call on it fails with EBADF by itself,
    # so the hot paths need no separate "is it closed" test.

    def __init__(self, fd: int, *, own: bool = True) -> None:
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"fd must be an int descriptor, not {type(fd).__name__}")
        make_nonblocking(fd)
        self._fd = fd
        self._own = own
        self._hub = get_hub()
        self._read_watcher: Any = self._hub.loop.io(fd, _READ)
        self._write_watcher: Any = self._hub.loop.io(fd, _WRITE)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._fd < 0

    def fileno(self) -> int:
        """The descriptor; raises OSError(EBADF) once closed."""
        self._check_open()
        return self._fd

    def _check_open(self) -> None:
        if self._fd < 0:
            raise OSError(errno.EBADF, "descriptor is closed")

    def _park(self, watcher: Any, timeout: float | None, what: str) -> None:
        if timeout is None:
            self._hub.wait(watcher)
        else:
            with gevent.Timeout(timeout, _timeout_error(what, timeout)):
                self._hub.wait(watcher)

    # The waits of the retry loop: a closed FdIO never reaches them (its
    # system calls fail with EBADF first), and close() wakes a parked one.
    def _park_read(self, timeout: float | None) -> None:
        self._park(self._read_watcher, timeout, "read")

    def _park_write(self, timeout: float | None) -> None:
        self._park(self._write_watcher, timeout, "write")

    def wait_readable(self, timeout: float | None = None) -> None:
        """Park until readable; raises TimeoutError, or OSError(EBADF) if closed meanwhile."""
        self._check_open()
        self._park(self._read_watcher, timeout, "read")

    def wait_writable(self, timeout: float | None = None) -> None:
        """Park until writable; raises TimeoutError, or OSError(EBADF) if closed meanwhile."""
        self._check_open()
        self._park(self._write_watcher, timeout, "write")

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """One read of at most *n* bytes (one packet on a packet device).

        Raises TimeoutError, or OSError with the kernel's errno (EBADF once closed).
        """
        return nonblocking_call(self._park_read, timeout, os.read, self._fd, n)

    def readinto(self, buffer: bytearray | memoryview, timeout: float | None = None) -> int:
        """One read into *buffer*; returns the byte count."""
        return self.readv([buffer], timeout)

    def readv(self, buffers: Sequence[bytearray | memoryview], timeout: float | None = None) -> int:
        """One scattering read into *buffers*; returns the byte count."""
        return nonblocking_call(self._park_read, timeout, os.readv, self._fd, buffers)

    def write(self, data: _Buffer, timeout: float | None = None) -> int:
        """One write of *data* (one packet on a packet device); returns the byte count."""
        return nonblocking_call(self._park_write, timeout, os.write, self._fd, data)

    def writev(self, buffers: Sequence[_Buffer], timeout: float | None = None) -> int:
        """One gathering write of *buffers*; returns the byte count."""
        return nonblocking_call(self._park_write, timeout, os.writev, self._fd, buffers)

    def read_batch(self, n: int, max_count: int = 64, timeout: float | None = None) -> list[bytes]:
        """Wait for the first message, then take what is already queued, up to *max_count*.

        Each item is one read of at most *n* bytes. Returns at least one item
        (b"" only at end of file). Raises TimeoutError if nothing arrives in time.
        """
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, not {max_count}")
        first = self.read(n, timeout)
        batch = [first]
        if not first:
            return batch
        fd = self._fd
        os_read = os.read
        try:
            while len(batch) < max_count:
                data = os_read(fd, n)
                batch.append(data)
                if not data:
                    break
        except BlockingIOError:
            pass
        return batch

    def write_batch(self, messages: Iterable[_Buffer], timeout: float | None = None) -> int:
        """Write each message with its own system call, waiting when the kernel pushes back.

        Returns the number of messages written. Stops at the first error, which
        is raised (OSError with its errno; messages before it were written).
        """
        count = 0
        fd = self._fd
        os_write = os.write
        for message in messages:
            self._check_open()
            try:
                os_write(fd, message)
            except BlockingIOError:
                self.write(message, timeout)
            count += 1
        return count

    def close(self) -> None:
        """Wake waiters with OSError(EBADF), then close the descriptor if owned. Idempotent."""
        fd = self._fd
        if fd < 0:
            return
        self._fd = -1
        watchers = [self._read_watcher, self._write_watcher]
        self._read_watcher = self._write_watcher = None
        error = OSError(errno.EBADF, "descriptor was closed in another greenlet")
        if self._own:
            self._hub.cancel_waits_close_and_then(watchers, error, os.close, fd)
        else:
            self._hub.cancel_waits_close_and_then(watchers, error, _noop)

    def __enter__(self) -> FdIO:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<{type(self).__name__} {state}>"


def _noop() -> None:
    return None
