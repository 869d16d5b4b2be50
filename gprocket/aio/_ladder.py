"""The privilege ladder for asyncio: the same rungs, order and errors, awaited.

The chain comes from ``gprocket._ladder.resolve`` (names, the environment,
strategy objects) and every failure is recorded by its ``Tally``, so the
PrivilegeError lists each rung's reason and names the same fix as the gevent
front. Rungs that are one system call (inherited, plain, capabilities, and
any strategy object whose ``acquire`` returns an int) run inline; the
broker, one-shot helper and sudo rungs are awaited without blocking the
loop. A strategy object whose ``acquire`` returns an awaitable is awaited.
A namespaced plain open (root only) runs on a fresh native thread, joined
at once: setns, socket, setns back.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from .._channel.helper import PACKAGED, check_runnable, locate, sudo_path
from .._errors import Attempt, PolicyDenied, RungRefused, RungUnavailable
from .._ladder import (
    BrokerStrategy,
    HelperStrategy,
    PlainStrategy,
    StrategySpec,
    SudoStrategy,
    Tally,
    resolve,
)
from .._ladder.netns import enter_and_run
from .._spec import Request
from ._broker import get_broker
from ._helper import one_shot

__all__ = ["run"]

T = TypeVar("T")
HelperPath = str | os.PathLike[str] | None


def _on_native_thread(namespace: str, work: Callable[[], T]) -> T:
    """Run ``work`` inside /run/netns/NAMESPACE on a fresh thread (no gevent hub)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.append(enter_and_run(namespace, work))
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=body, name=f"gprocket-netns-{namespace}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class _Plain(PlainStrategy):
    in_namespace = staticmethod(_on_native_thread)


async def _broker(helper: HelperPath, request: Request) -> int:
    return await get_broker(locate(helper), request.namespace).request(request)


async def _one_shot(helper: HelperPath, request: Request) -> int:
    path = locate(helper)
    check_runnable(path)
    return await one_shot(path, request)


async def _sudo(helper: HelperPath, request: Request) -> int:
    sudo_path()
    try:
        path = locate(helper)
    except RungUnavailable:
        if not PACKAGED.exists():
            raise
        path = str(PACKAGED)
    return await one_shot(path, request, sudo=True)


async def _acquire(strategy: object, request: Request) -> int:
    """One rung's descriptor: the async form of the known rungs, else its own acquire."""
    if isinstance(strategy, BrokerStrategy):
        return await _broker(strategy.helper, request)
    if isinstance(strategy, HelperStrategy):
        return await _one_shot(strategy.helper, request)
    if isinstance(strategy, SudoStrategy):
        return await _sudo(strategy.helper, request)
    if type(strategy) is PlainStrategy:
        return _Plain().acquire(request)
    got = strategy.acquire(request)  # type: ignore[attr-defined]
    if inspect.isawaitable(got):
        got = await got
    if isinstance(got, bool) or not isinstance(got, int):
        raise TypeError(f"strategy {strategy!r} returned {type(got).__name__}, not a descriptor")
    return got


async def run(
    request: Request,
    strategies: str | Sequence[StrategySpec] | None = None,
    helper: HelperPath = None,
) -> tuple[int, str, tuple[Attempt, ...]]:
    """Walk the ladder; returns (descriptor, rung name, failed attempts before it).

    Raises what gprocket._ladder.run raises: PrivilegeError listing every
    attempt and the fix, OSError for a kernel error no rung would change,
    HelperError when the helper misbehaved.
    """
    tally = Tally()
    for strategy in resolve(strategies, helper):
        try:
            fd = await _acquire(strategy, request)
        except (RungUnavailable, RungRefused, PolicyDenied, OSError) as err:
            if not tally.failed(strategy.name, err):
                raise
        else:
            return fd, strategy.name, tuple(tally.attempts)
    raise tally.error(request)
