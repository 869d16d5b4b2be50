"""gprocket.Socket and ``disown``: a descriptor is closed once, by its one owner."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Callable

import gevent.socket
import pytest

from gprocket._socket import Socket, disown


def _sentinel_at(fd: int) -> None:
    """What another thread would get next: a file under the number just freed."""
    spare = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    if spare != fd:
        os.dup2(spare, fd, inheritable=False)
        os.close(spare)


@pytest.mark.parametrize("wrap", [
    lambda fd: socket.socket(fileno=fd),
    lambda fd: gevent.socket.socket(fileno=fd),
    lambda fd: Socket(fileno=fd, rung="plain"),
], ids=["stdlib", "gevent", "gprocket"])
def test_a_disowned_wrapper_never_closes_the_number_again(
        wrap: Callable[[int], object]) -> None:
    # As after a wrapper's __init__ failed past taking the descriptor: the
    # caller closes it, and the wrapper, once collected, must not close again.
    fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
    wrapper = wrap(fd)
    disown(wrapper, fd)
    os.close(fd)
    _sentinel_at(fd)
    try:
        del wrapper
        gc.collect()
        assert os.readlink(f"/proc/self/fd/{fd}") == "/dev/null"
    finally:
        os.close(fd)


def test_disown_leaves_a_wrapper_that_never_took_the_descriptor_alone() -> None:
    fd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
    try:
        disown(socket.socket.__new__(socket.socket), fd)  # never initialised
        disown(gevent.socket.socket.__new__(gevent.socket.socket), fd)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            disown(other, fd)  # holds another descriptor: untouched
            assert other.fileno() >= 0
        os.fstat(fd)
    finally:
        os.close(fd)
