"""Waiting for a descriptor through the running event loop's reader callbacks.

The one wait every async front here is built on (the seam a trio front
would replace with ``trio.lowlevel.wait_readable``): a future completed by
``loop.add_reader``/``add_writer`` and the callback removed on every path,
cancellation included, so the loop never watches a descriptor nobody waits on.
"""

from __future__ import annotations

import asyncio

__all__ = ["readable", "writable"]


def _wake(future: asyncio.Future[None]) -> None:
    """A reader/writer callback: complete ``future`` unless it is done already."""
    if not future.done():
        future.set_result(None)


async def _ready(fd: int, timeout: float | None, write: bool) -> bool:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, future)
    else:
        loop.add_reader(fd, _wake, future)
    try:
        if timeout is None:
            await future
            return True
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        return True
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def readable(fd: int, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable; False when ``timeout`` seconds passed first."""
    return await _ready(fd, timeout, False)


async def writable(fd: int, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is writable; False when ``timeout`` seconds passed first."""
    return await _ready(fd, timeout, True)
