"""The one-shot helper (and the helper through ``sudo -n``) for asyncio.

Started by the same code as the gevent front's one-shot (its argument vector
and environment from ``_channel.helper.one_shot_command``, the reply and its
descriptor judged by ``checked_descriptor``, a silent exit by
``no_reply_error``); only the waits are the loop's: the channel driven by
its reader callbacks, the exit seen through a pidfd.
Cancelled or timed out at any step, the helper is killed and reaped and any
descriptor received is closed.
"""

from __future__ import annotations

import asyncio
import os

from .._channel.helper import (
    DEFAULT_TIMEOUT,
    INSTALL_FIX,
    checked_descriptor,
    no_reply_error,
    one_shot_command,
)
from .._channel.wire import encode_request
from .._errors import HelperError, RungRefused, RungUnavailable
from .._spec import Request
from ._channel import receive_reply, send_message
from ._spawn import AsyncChild, spawn

__all__ = ["one_shot"]


async def _no_reply(child: AsyncChild, path: str, timeout: float,
                    *, sudo: bool) -> HelperError | RungRefused:
    try:
        status = await child.exited(timeout)
    except TimeoutError:
        status = None
    return no_reply_error(path, child.argv[0], status, child.stderr_text(), sudo=sudo)


async def one_shot(path: str, request: Request, *, sudo: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> int:
    """Start the helper once (through ``sudo -n`` if asked), get one descriptor.

    Never blocks the loop; waits at most ``timeout`` for each step. Raises
    PolicyDenied, OSError (kernel refusal), HelperError (the helper misbehaved
    or timed out) or RungRefused (sudo said no); on every path, cancellation
    included, no process or descriptor is left behind.
    """
    argv, env = one_shot_command(path, request, sudo=sudo)
    try:
        child = spawn(argv, env)
    except OSError as err:
        raise RungUnavailable(f"cannot start {argv[0]}: {err.strerror}", INSTALL_FIX) from err
    try:
        try:
            async with asyncio.timeout(timeout):
                await send_message(child.channel, encode_request(request, 1))
                got = await receive_reply(child.channel)
        except TimeoutError:
            raise HelperError(f"the helper did not answer within {timeout} s") from None
        except (BrokenPipeError, ConnectionResetError):
            got = None
        if got is None:
            raise await _no_reply(child, path, timeout, sudo=sudo)
        # The helper exits after its one reply: let its exit overlap the checks.
        child.channel.close()
        # The checks own the descriptor from here (they close one they refuse).
        reply, received = got
        checked = checked_descriptor(request, reply, received, rid=1)
        # The helper holds its copy (a bound port) until it exits: wait for that.
        try:
            await child.exited(timeout)
        except BaseException:
            os.close(checked)
            raise
        return checked
    finally:
        child.close()
