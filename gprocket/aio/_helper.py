"""The one-shot helper (and the helper through ``sudo -n``) for asyncio.

Started by the same code as the gevent front's one-shot (its argument vector
and environment from ``_helper.one_shot_command``, errors from
``raise_for_reply``, the descriptor checked by ``verify``); the channel is
driven by the loop's reader callbacks and the exit seen through a pidfd.
Cancelled or timed out at any step, the helper is killed and reaped and any
descriptor received is closed.
"""

from __future__ import annotations

import asyncio
import errno
import os

from .._errors import HelperError, RungRefused, RungUnavailable
from .._fdpass import verify
from .._helper import DEFAULT_TIMEOUT, INSTALL_FIX, one_shot_command, raise_for_reply
from .._spec import Request
from .._wire import encode_request
from ._channel import receive_reply, send_message
from ._spawn import AsyncChild, spawn

__all__ = ["one_shot"]


async def _no_reply(child: AsyncChild, timeout: float) -> HelperError:
    try:
        status = await child.exited(timeout)
    except TimeoutError:
        status = None
    said = child.stderr_text()
    return HelperError(
        f"{child.argv[0]} exited with status {status} without replying"
        + (f": {said}" if said else "")
    )


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
    fd: int | None = None
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
            failure = await _no_reply(child, timeout)
            if sudo:
                raise RungRefused(f"sudo -n {path} refused: {failure}", errno.EPERM,
                                  "allow the helper in sudoers: capsetup sudoers")
            raise failure
        reply, fd = got
        if reply.id != 1:
            raise HelperError(f"the helper answered request id {reply.id}, expected 1")
        # The helper exits after its one reply: let its exit overlap the checks.
        child.channel.close()
        raise_for_reply(reply, request)
        # verify owns the descriptor from here (it closes one it refuses):
        # forget ours first, so that it is never closed twice.
        received, fd = fd, None
        checked = verify(received, request, reply)
        # The helper holds its copy (a bound port) until it exits: wait for that.
        try:
            await child.exited(timeout)
        except BaseException:
            os.close(checked)
            raise
        return checked
    finally:
        if fd is not None:
            os.close(fd)
        child.close()
