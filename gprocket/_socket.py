"""``gprocket.Socket``: a gevent socket that remembers which rung opened it."""

from __future__ import annotations

import gevent.socket

__all__ = ["Socket"]


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
        super().__init__(family, type, proto, fileno)
        self.rung = rung

    def _extra_repr(self) -> str:
        return f" rung={self.rung!r}" if self.rung else ""
