"""gprocket for asyncio: the same privileges, awaited, never blocking the loop.

``await open(...)``, ``await open_fd(...)`` and ``await acquire(request)``
walk the same privilege ladder as ``gprocket.open`` (the same request specs,
wire codec, policy and descriptor checks); the broker and one-shot helper
are driven by the event loop's reader callbacks and a pidfd. ICMP
(``ping``, ``multiping``, ``multiping_iter``, ``traceroute``) runs the same
engines as ``gprocket.icmp``; ``ring`` iterates a TPACKET_V3 capture ring;
``open_tun`` gives a TUN/TAP device with async read and write.
"""

from __future__ import annotations

from ._api import Socket, acquire, open, open_fd
from ._broker import aclose_all
from ._icmp import MultipingIter, multiping, multiping_iter, ping, traceroute
from ._ring import AsyncRing, blocks, next_block, ring
from ._tun import AsyncTunTap, open_tun

__all__ = [
    "AsyncRing",
    "AsyncTunTap",
    "MultipingIter",
    "Socket",
    "aclose_all",
    "acquire",
    "blocks",
    "multiping",
    "multiping_iter",
    "next_block",
    "open",
    "open_fd",
    "open_tun",
    "ping",
    "ring",
    "traceroute",
]
