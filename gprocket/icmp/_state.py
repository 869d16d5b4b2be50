"""Per-target state and per-call options shared by the planner and the engines; a
target's state made into its Host (the results import nothing of the package)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from gprocket.icmp._results import Host, IcmpError, Reply
from gprocket.icmp._socket import IcmpSocket


class State:
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
class Options:
    count: int
    interval: float
    timeout: float
    size: int
    on_reply: Callable[[str, Reply, bool], None] | None = None
    on_error: Callable[[str, IcmpError], None] | None = None
    # Called with the target's name after each request leaves (or fails to):
    # `gprocket ping` reports iputils' "time", which ends at the last send.
    on_send: Callable[[str], None] | None = None


@dataclass
class Counters:
    """What the matcher threw away, and why (the tests read these)."""

    own_requests: int = 0
    foreign: int = 0
    rejected: int = 0
    mismatched: int = 0
    late: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


# What an engine's steps() waits for between slices of work; each front
# (gevent: choose_engine._drive, asyncio: gprocket.aio) waits its own way.
# (READ, seconds): readable or the time passed; (WRITE, seconds): room to
# send or the time passed; (YIELD, 0): let other tasks run, then go on.
READ, WRITE, YIELD = 1, 2, 3
Wait = tuple[int, float]

_new = object.__new__
(_H_ADDRESS, _H_NAME, _H_FAMILY, _H_SENT, _H_REPLIES, _H_DUPLICATES, _H_ERRORS,
 _H_TRANSPORT, _H_RUNG) = (getattr(Host, f.name).__set__ for f in fields(Host))


def host_result(state: State, family: int, isock: IcmpSocket) -> Host:
    """The public result for a finished (or stopped) target."""
    host: Host = _new(Host)
    _H_ADDRESS(host, state.address)
    _H_NAME(host, state.name)
    _H_FAMILY(host, family)
    _H_SENT(host, state.sent)
    _H_REPLIES(host, tuple(state.replies))
    _H_DUPLICATES(host, state.duplicates)
    _H_ERRORS(host, tuple(state.errors) if state.errors else ())
    _H_TRANSPORT(host, isock.kind)
    _H_RUNG(host, isock.rung)
    return host


def host_results(states: Sequence[State], family: int, isock: IcmpSocket,
                 results: list[Host | None]) -> None:
    """host_result() for every state into results[state.index]: the sweep's last hot loop."""
    kind, rung, empty = isock.kind, isock.rung, ()
    for state in states:
        host: Host = _new(Host)
        _H_ADDRESS(host, state.address)
        _H_NAME(host, state.name)
        _H_FAMILY(host, family)
        _H_SENT(host, state.sent)
        _H_REPLIES(host, tuple(state.replies))
        _H_DUPLICATES(host, state.duplicates)
        _H_ERRORS(host, tuple(state.errors) if state.errors else empty)
        _H_TRANSPORT(host, kind)
        _H_RUNG(host, rung)
        results[state.index] = host
