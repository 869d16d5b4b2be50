"""The one-shot rungs: ``helper`` (one helper process per descriptor, procket's
model) and ``sudo`` (the same helper through ``sudo -n``), and the gevent
front's one-shot client both use.

What both fronts share (finding and judging the helper, its command line,
reading its reply) is in gprocket._channel.helper; gprocket.aio has its own
awaited one-shot.
"""

from __future__ import annotations

import os

from .._channel.fdpass import receive
from .._channel.helper import (
    DEFAULT_TIMEOUT,
    INSTALL_FIX,
    PACKAGED,
    check_runnable,
    checked_descriptor,
    locate,
    no_reply_error,
    one_shot_command,
    sudo_path,
)
from .._channel.spawn import Child, spawn
from .._channel.wire import encode_request
from .._errors import HelperError, RungRefused, RungUnavailable
from .._spec import Request

__all__ = ["HelperStrategy", "SudoStrategy", "one_shot"]


class HelperStrategy:
    """One helper process per descriptor (procket's model)."""

    name = "helper"

    def __init__(self, helper: str | os.PathLike[str] | None = None) -> None:
        self.helper = helper

    def acquire(self, request: Request) -> int:
        """Start the helper once for this request."""
        path = locate(self.helper)
        check_runnable(path)
        return one_shot(path, request)


class SudoStrategy:
    """The helper through ``sudo -n``: never prompts, fails fast without a rule."""

    name = "sudo"

    def __init__(self, helper: str | os.PathLike[str] | None = None) -> None:
        self.helper = helper

    def acquire(self, request: Request) -> int:
        """Run the helper as root through sudo for this one request."""
        sudo_path()
        try:
            path = locate(self.helper)
        except RungUnavailable:
            if not PACKAGED.exists():
                raise
            path = str(PACKAGED)
        return one_shot(path, request, sudo=True)


def _no_reply(child: Child, path: str, timeout: float, *, sudo: bool) -> HelperError | RungRefused:
    try:
        status = child.wait(timeout)
    except TimeoutError:
        status = None
    return no_reply_error(path, child.argv[0], status, child.stderr_text(), sudo=sudo)




def one_shot(
    path: str, request: Request, *, sudo: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Start the helper once (through ``sudo -n`` if asked), get one descriptor.

    A namespaced request starts it with ``--netns NAME``: it enters the
    namespace before it drops its privileges, then serves the request there.

    Never blocks the gevent hub and never waits longer than ``timeout``
    for any step. Raises PolicyDenied, OSError (kernel refusal), HelperError
    (the helper misbehaved or timed out) or RungRefused (sudo said no); no
    process or descriptor is left behind on any path.
    """
    argv, env = one_shot_command(path, request, sudo=sudo)
    try:
        child = spawn(argv, env)
    except OSError as err:
        raise RungUnavailable(f"cannot start {argv[0]}: {err.strerror}", INSTALL_FIX) from err
    try:
        child.channel.settimeout(timeout)
        try:
            child.channel.sendall(encode_request(request, 1))
            got = receive(child.channel)
        except TimeoutError:
            raise HelperError(f"the helper did not answer within {timeout} s") from None
        except (BrokenPipeError, ConnectionResetError):
            got = None
        if got is None:
            raise _no_reply(child, path, timeout, sudo=sudo)
        # A one-shot helper exits after its one reply: closing our end now
        # lets its exit overlap the checks below instead of following them.
        child.channel.close()
        # The checks own the descriptor from here (they close one they refuse).
        reply, received = got
        checked = checked_descriptor(request, reply, received, rid=1)
        # The helper holds its copy of the descriptor (a bound port) until it
        # exits: wait for that, so closing ours really releases the port.
        try:
            child.wait(timeout)
        except BaseException:
            os.close(checked)
            raise
        return checked
    finally:
        child.close()
