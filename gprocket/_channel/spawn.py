"""Start the helper without a Python fork and without blocking the gevent hub.

``os.posix_spawn`` (vfork + execve in the C library) starts the helper from
an argument vector, never through a shell. Its channel is one end of an
AF_UNIX/SOCK_SEQPACKET socketpair, made the child's standard input and left
blocking (the helper reads it synchronously); only our end is wrapped as a
gevent socket. The child is reaped through a pidfd that the hub watches, so
waiting for it never blocks other greenlets, and a pid can never be reused
under us. Every path closes every descriptor and reaps the child.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket as _stdsocket
from collections.abc import Sequence
from dataclasses import dataclass, field

import gevent
import gevent.socket
from gevent.monkey import get_original
from gevent.socket import wait_read

__all__ = ["Child", "spawn", "start"]



@dataclass(eq=False)
class Child:
    """A running helper: its pid, pidfd, our end of the channel, its stderr."""

    argv: tuple[str, ...]
    pid: int
    pidfd: int
    channel: gevent.socket.socket
    stderr: int
    status: int | None = field(default=None)
    reaping: bool = field(default=False)

    def wait(self, timeout: float | None) -> int | None:
        """Wait cooperatively for the child to exit and reap it.

        Returns the exit code (negative signal number when killed), or None
        when another reaper (gevent's SIGCHLD watcher) collected it first.
        On timeout the child is killed and reaped, then TimeoutError raised.
        """
        if self.pidfd < 0:
            return self.status
        try:
            wait_read(self.pidfd, timeout, timeout_exc=TimeoutError(f"{self.argv[0]} did not exit"))
        except BaseException:
            self.kill()
            raise
        return self._reap()

    def kill(self) -> None:
        """SIGKILL the child through its pidfd and reap it (blocks only while it dies)."""
        if self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already exited: still a zombie to reap
        except PermissionError:
            # sudo runs as root: it ends when its command (the helper) does,
            # which happens at channel EOF; never block the hub on it.
            if not self.reaping:
                self.reaping = True
                self._reap_in_background()
            return
        self._reap()

    def _reap_in_background(self) -> None:
        """Reap a child we may not signal once it leaves (gprocket.aio: a task)."""
        gevent.spawn(self._reap_later)

    def _reap_later(self) -> None:
        if self.pidfd < 0:
            return
        with contextlib.suppress(TimeoutError):
            wait_read(self.pidfd, 10.0, timeout_exc=TimeoutError())
        # Never block the hub on a process we may not kill: if it still runs,
        # init reaps it once we are gone.
        self._reap(block=False)

    def _reap(self, block: bool = True) -> int | None:
        if self.pidfd < 0:
            return self.status
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            self.status = os.waitstatus_to_exitcode(status) if pid else None
        except ChildProcessError:
            self.status = None  # reaped by someone else (gevent's child watcher)
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

    def shutdown_blocking(self, timeout: float) -> None:
        """Wait without the hub (interpreter exit) for the child to leave; kill it if late."""
        if self.pidfd >= 0:
            poller = get_original("select", "poll")()
            poller.register(self.pidfd, select.POLLIN)
            if not poller.poll(int(timeout * 1000)):
                try:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                except PermissionError:
                    # sudo (root) ends with its helper; do not block exit on it.
                    os.close(self.pidfd)
                    self.pidfd = -1
            if self.pidfd >= 0:
                self._reap()
        if self.stderr >= 0:
            os.close(self.stderr)
            self.stderr = -1

    def close(self) -> None:
        """Close our end of the channel and stderr; kill and reap if still running."""
        self.channel.close()
        if self.stderr >= 0:
            os.close(self.stderr)
            self.stderr = -1
        self.kill()


def start(argv: Sequence[str], env: dict[str, str] | None = None
          ) -> tuple[int, int, _stdsocket.socket, int]:
    """Start ``argv`` with a channel on its stdin, without a fork and without waiting.

    Returns (pid, pidfd, our end of the channel as a blocking stdlib socket,
    the non-blocking read end of its stderr). The event-loop fronts (gevent
    here, asyncio in gprocket.aio) wrap the channel and watch the pidfd their
    own way. Raises OSError if it cannot start; nothing is left open then.
    """
    ours, theirs = _stdsocket.socketpair(
        _stdsocket.AF_UNIX, _stdsocket.SOCK_SEQPACKET | _stdsocket.SOCK_CLOEXEC
    )
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(err_read, False)  # ours only: the child's stdout/stderr stay blocking
    pid = -1
    try:
        # dup2 onto 0/1/2 clears close-on-exec on the copies the child keeps.
        # stdout shares the stderr pipe: the helper only ever writes errors.
        actions = [
            (os.POSIX_SPAWN_DUP2, theirs.fileno(), 0),
            (os.POSIX_SPAWN_DUP2, err_write, 1),
            (os.POSIX_SPAWN_DUP2, err_write, 2),
        ]
        pid = os.posix_spawn(argv[0], list(argv), env or {}, file_actions=actions)
        pidfd = os.pidfd_open(pid)
    except BaseException:
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        ours.close()
        os.close(err_read)
        raise
    finally:
        theirs.close()
        os.close(err_write)
    return pid, pidfd, ours, err_read


def spawn(argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` with the channel on its stdin; raises OSError if it cannot start."""
    pid, pidfd, ours, err_read = start(argv, env)
    channel = gevent.socket.socket(
        _stdsocket.AF_UNIX, _stdsocket.SOCK_SEQPACKET, 0, fileno=ours.detach()
    )
    return Child(tuple(argv), pid, pidfd, channel, err_read)
