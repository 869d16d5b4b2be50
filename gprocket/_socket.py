"""``gprocket.Socket``: a gevent socket that remembers which rung opened it."""

from __future__ import annotations

from typing import Any

import gevent.socket

__all__ = ["Socket", "disown"]


def disown(wrapper: object, fd: int) -> None:
    """After wrapping ``fd`` in ``wrapper`` failed, leave ``fd`` to the caller alone.

    A socket object that got as far as taking the descriptor closes it when
    it is collected; the caller closes it too, and the second close would hit
    whatever another thread was given under that number meanwhile. So the
    wrapper (or gevent's inner socket) is detached when it holds ``fd``.
    """
    inner: Any = wrapper
    if isinstance(wrapper, gevent.socket.socket):
        try:
            # Not getattr: gevent's __getattr__ forwards to _sock, recursing
            # when _sock itself was never set.
            inner = object.__getattribute__(wrapper, "_sock")
        except AttributeError:
            return  # failed before it wrapped the descriptor
    try:
        taken = inner.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return  # never got the descriptor
    if taken:
        inner.detach()


class Socket(gevent.socket.socket):  # type: ignore[misc]
    """A cooperative socket (gevent) around a gprocket descriptor.

    ``rung`` names the ladder rung that provided it ("plain",
    "capabilities", "broker", "helper", "sudo", "inherited"); it is "" for
    sockets made from it (``dup``). It drops straight into
    ``StreamServer(listener=sock)`` and ``DatagramServer(listener=sock)``.
    """

    __slots__ = ("rung",)

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
        rung: str = "",
    ) -> None:
        try:
            super().__init__(family, type, proto, fileno)
        except BaseException:
            if fileno is not None:
                disown(self, fileno)  # the caller's to close, once
            raise
        self.rung = rung

    def _extra_repr(self) -> str:
        return f" rung={self.rung!r}" if self.rung else ""
