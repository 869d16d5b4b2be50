"""Start the helper for asyncio: posix_spawn, a non-blocking channel, a pidfd.

The process is started by the same code as the gevent front
(``gprocket._spawn.start``: posix_spawn from an argument vector, the
SEQPACKET channel on its stdin); only the waits differ: the channel is a
non-blocking stdlib socket driven by the loop's reader callbacks, and the
child's exit is seen as its pidfd becoming readable, so nothing here ever
blocks the event loop for longer than reaping a child that has exited (or
was just SIGKILLed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
from collections.abc import Sequence

from .._spawn import start
from ._wait import readable

__all__ = ["AsyncChild", "spawn"]

# Reaping tasks of children we may not signal (sudo runs as root): kept
# referenced until they finish.
_REAPERS: set[asyncio.Task[None]] = set()


class AsyncChild:
    """A running helper: pid, pidfd, our non-blocking end of the channel, its stderr."""

    def __init__(self, argv: Sequence[str], pid: int, pidfd: int, channel: socket.socket,
                 stderr: int) -> None:
        self.argv = tuple(argv)
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel
        self.stderr = stderr
        self.status: int | None = None
        channel.setblocking(False)

    async def wait(self, timeout: float | None) -> int | None:
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

    def kill(self) -> None:
        """SIGKILL the child through its pidfd and reap it (waits only while it dies)."""
        if self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already exited: still a zombie to reap
        except PermissionError:
            # sudo runs as root and ends when its command (the helper) does,
            # at channel EOF: reap it from the loop, never block on it.
            self._reap_later()
            return
        self._reap()

    def _reap_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._reap(block=False)
            return

        async def reaper() -> None:
            with contextlib.suppress(Exception):
                await readable(self.pidfd, 10.0)
            self._reap(block=False)

        task = loop.create_task(reaper())
        _REAPERS.add(task)
        task.add_done_callback(_REAPERS.discard)

    def _reap(self, block: bool = True) -> int | None:
        if self.pidfd < 0:
            return self.status
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            self.status = os.waitstatus_to_exitcode(status) if pid else None
        except ChildProcessError:
            self.status = None  # reaped by someone else
        os.close(self.pidfd)
        self.pidfd = -1
        return self.status

    def stderr_text(self) -> str:
        """What the child wrote on stderr so far (non-blocking, at most 4 KiB)."""
        if self.stderr < 0:
            return ""
        try:
            data = os.read(self.stderr, 4096)
        except BlockingIOError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def close_channel(self) -> None:
        """Close our end of the channel (the helper sees EOF)."""
        self.channel.close()

    def close(self) -> None:
        """Close our end of the channel and stderr; kill and reap if still running."""
        self.channel.close()
        if self.stderr >= 0:
            os.close(self.stderr)
            self.stderr = -1
        self.kill()

    def shutdown_blocking(self, timeout: float) -> None:
        """Without a loop (interpreter exit): let the child leave, kill it if late."""
        self.channel.close()
        if self.pidfd >= 0:
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            if not poller.poll(int(timeout * 1000)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            self._reap(block=True)
        if self.stderr >= 0:
            os.close(self.stderr)
            self.stderr = -1


def spawn(argv: Sequence[str], env: dict[str, str] | None = None) -> AsyncChild:
    """Start ``argv`` with the channel on its stdin; raises OSError if it cannot start."""
    pid, pidfd, ours, err_read = start(argv, env)
    return AsyncChild(argv, pid, pidfd, ours, err_read)
