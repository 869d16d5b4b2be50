"""Per-target state and per-call options shared by the planner, the engines and the results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gprocket._icmp_results import IcmpError, Reply


class _State:
    __slots__ = ("address", "count", "duplicates", "errors", "index", "name", "packed",
                 "pending", "replies", "sent", "sockaddr", "ttl")

    def __init__(self, index: int, name: str, address: str, sockaddr: tuple[object, ...],  # noqa: PLR0917
                 count: int, ttl: int | None = None, packed: bytes | None = None) -> None:
        self.index = index
        self.packed = packed  # the address in network order, when planning had it
        self.ttl = ttl  # per-target TTL/hop limit (traceroute); None: the socket's
        self.name = name
        self.address = address
        self.sockaddr = sockaddr
        self.count = count
        self.sent = 0
        self.pending = 0
        self.duplicates = 0
        self.replies: list[Reply] = []
        self.errors: list[IcmpError] = []


@dataclass
class _Options:
    count: int
    interval: float
    timeout: float
    size: int
    on_reply: Callable[[str, Reply, bool], None] | None = None
    on_error: Callable[[str, IcmpError], None] | None = None


@dataclass
class _Counters:
    """What the matcher threw away, and why (the tests read these)."""

    own_requests: int = 0
    foreign: int = 0
    rejected: int = 0
    mismatched: int = 0
    late: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


# What an engine's steps() waits for between slices of work; each front
# (gevent: _icmp_engine._drive, asyncio: gprocket.aio) waits its own way.
# (_READ, seconds): readable or the time passed; (_WRITE, seconds): room to
# send or the time passed; (_YIELD, 0): let other tasks run, then go on.
_READ, _WRITE, _YIELD = 1, 2, 3
_Wait = tuple[int, float]
