"""Start the helper for asyncio: posix_spawn, a non-blocking channel, a pidfd.

The process is started and reaped by the same code as the gevent front
(``gprocket._channel.spawn``: posix_spawn from an argument vector, the SEQPACKET
channel on its stdin, reaping through the pidfd); only the waits differ: the
channel is a non-blocking stdlib socket driven by the loop's reader
callbacks, and the child's exit is seen as its pidfd becoming readable. So
nothing here blocks the event loop for longer than reaping a child that has
exited (or was just SIGKILLed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from .._channel.spawn import Child, start
from ._wait import readable

__all__ = ["AsyncChild", "spawn"]

# Reaping tasks of children we may not signal (sudo runs as root): kept
# referenced until they finish.
_REAPERS: set[asyncio.Task[None]] = set()


class AsyncChild(Child):
    """A running helper whose channel is a non-blocking stdlib socket.

    ``wait()`` of the gevent front would park a greenlet: use ``exited()``.
    """

    async def exited(self, timeout: float | None) -> int | None:
        """Wait (without blocking the loop) for the child to exit, and reap it.

        Returns the exit code (negative signal number when killed). On
        timeout (TimeoutError) or cancellation the child is killed and reaped.
        """
        if self.pidfd < 0:
            return self.status
        try:
            if not await readable(self.pidfd, timeout):
                raise TimeoutError(f"{self.argv[0]} did not exit within {timeout} s")
        except BaseException:
            self.kill()
            raise
        return self._reap()

    def _reap_in_background(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._reap(block=False)
            return

        async def reaper() -> None:
            with contextlib.suppress(Exception):
                await readable(self.pidfd, 10.0)
            # Never block the loop on a process we may not kill.
            self._reap(block=False)

        task = loop.create_task(reaper())
        _REAPERS.add(task)
        task.add_done_callback(_REAPERS.discard)


def spawn(argv: Sequence[str], env: dict[str, str] | None = None) -> AsyncChild:
    """Start ``argv`` with the channel on its stdin; raises OSError if it cannot start."""
    pid, pidfd, ours, err_read = start(argv, env)
    ours.setblocking(False)
    return AsyncChild(tuple(argv), pid, pidfd, ours, err_read)
