"""Entering a network namespace: the package's one setns(2).

The switch is per thread, so a namespaced open runs on a fresh native thread
(``in_namespace``, a one-thread gevent ThreadPool; gprocket.aio uses a plain
thread) that enters /run/netns/NAME, opens the descriptor and returns to its
own namespace before exiting: the hub thread and its greenlets never leave
theirs. Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

from gevent.threadpool import ThreadPool

__all__ = ["CLONE_NEWNET", "enter_and_run", "in_namespace", "thread_in_namespace"]

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def thread_in_namespace(namespace: str) -> Iterator[None]:
    """Run this thread inside /run/netns/NAMESPACE for the block, then back.

    Needs CAP_SYS_ADMIN. The switch is per thread: use it on a thread of
    your own (``in_namespace``), or around a block that never yields to
    other greenlets (tests/support/lab.py). Sockets made inside stay there.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise OSError(
                err.errno, f"no network namespace named {namespace!r} under /run/netns"
            ) from err
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def enter_and_run(namespace: str, work: Callable[[], T]) -> T:
    """``work()`` inside /run/netns/NAMESPACE on this thread; a descriptor it
    returned is closed if the way home fails (nobody would receive it)."""
    done: list[T] = []
    try:
        with thread_in_namespace(namespace):
            done.append(work())
    except BaseException:
        if done and isinstance(done[0], int):
            os.close(done[0])
        raise
    return done[0]


def in_namespace(namespace: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a fresh native thread inside /run/netns/NAMESPACE."""
    pool = ThreadPool(1)
    try:
        result: T = pool.apply(enter_and_run, (namespace, work))
        return result
    finally:
        pool.kill()
