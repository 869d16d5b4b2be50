"""gprocket._api.acquire_in_thread: no gevent hub outlives a ladder call in a foreign thread."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import gevent
from gevent._hub_local import get_hub_if_exists

from gprocket import SocketRequest
from gprocket._api import acquire_in_thread

REQUEST = SocketRequest(0, protocol="udp", ip="127.0.0.1")


class CooperativeRung:
    """A rung that waits cooperatively (as the helper rungs do), so it needs a hub."""

    def __init__(self, name: str) -> None:
        self.name = name

    def acquire(self, request: SocketRequest) -> int:
        gevent.sleep(0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return sock.detach()


def _in_thread(call: Callable[[], int], *, hub_first: bool = False) -> tuple[bool, bool]:
    """(had a hub before, has a hub after) the call, in a new native thread."""
    seen: list[bool] = []

    def body() -> None:
        if hub_first:
            gevent.get_hub()
        seen.append(get_hub_if_exists() is not None)
        os.close(call())
        seen.append(get_hub_if_exists() is not None)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert len(seen) == 2
    return seen[0], seen[1]


def test_a_thread_without_a_hub_is_left_without_one() -> None:
    rung = CooperativeRung("helper")
    assert _in_thread(lambda: acquire_in_thread(REQUEST, strategies=[rung]).fd) == (False, False)


def test_a_broker_keeps_its_threads_hub() -> None:
    rung = CooperativeRung("broker")
    assert _in_thread(lambda: acquire_in_thread(REQUEST, strategies=[rung]).fd) == (False, True)


def test_a_thread_that_had_a_hub_keeps_it() -> None:
    rung = CooperativeRung("helper")
    assert _in_thread(lambda: acquire_in_thread(REQUEST, strategies=[rung]).fd,
                      hub_first=True) == (True, True)


def test_the_main_thread_keeps_its_hub() -> None:
    acquired = acquire_in_thread(REQUEST, strategies=[CooperativeRung("helper")])
    os.close(acquired.fd)
    assert acquired.rung == "helper"
    assert get_hub_if_exists() is not None
