"""ICMP results: the frozen dataclasses ping, multiping and traceroute return.

Also the hot-loop constructor of a Reply without a dataclass __init__. Like
h11's _events.py this module imports nothing of the package: the engines'
state (_state) builds a Host from what it counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Reply:
    """One counted echo reply: sequence, source, TTL (IPv4) or hop limit (IPv6).

    ``size`` is the ICMP message size (header + payload), the figure iputils
    prints as "64 bytes from"; ``rtt`` is in milliseconds.
    """

    seq: int
    source: str
    ttl: int | None
    rtt: float
    size: int


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about one of our requests, or a local send failure.

    For an ICMP error, ``reporter`` is the router (or host) that sent it and
    ``type``/``code`` are the ICMP(v6) ones; a local failure (sendto refused
    by the routing table) has ``errno`` set and no type. ``rtt`` is the time
    from the request to the error, in milliseconds (None for local failures).
    """

    seq: int
    reporter: str | None
    type: int | None
    code: int | None
    description: str
    errno: int | None = None
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class Host:
    """What pinging one address gave: counts, replies, errors, statistics.

    Shaped like icmplib's Host (``is_alive``, ``packet_loss``, ``min_rtt``,
    ``avg_rtt``, ``max_rtt``, ``jitter``) plus iputils' ``mdev``, the
    duplicates, every reply and every ICMP error, and how the socket was
    obtained (``transport`` "datagram" or "raw", ``rung``).
    """

    address: str
    name: str
    family: int
    sent: int
    replies: tuple[Reply, ...]
    duplicates: int
    errors: tuple[IcmpError, ...]
    transport: str
    rung: str

    @property
    def rtts(self) -> tuple[float, ...]:
        """Each counted reply's RTT in milliseconds, in arrival order."""
        return tuple(r.rtt for r in self.replies)

    @property
    def received(self) -> int:
        """Distinct requests answered (duplicates not included)."""
        return len(self.replies)

    @property
    def is_alive(self) -> bool:
        return bool(self.replies)

    @property
    def packet_loss(self) -> float:
        """Lost fraction of the requests sent, 0.0 to 1.0 (0.0 when none were sent)."""
        if not self.sent:
            return 0.0
        return (self.sent - self.received) / self.sent

    @property
    def min_rtt(self) -> float:
        return min(self.rtts) if self.rtts else 0.0

    @property
    def max_rtt(self) -> float:
        return max(self.rtts) if self.rtts else 0.0

    @property
    def avg_rtt(self) -> float:
        return sum(self.rtts) / len(self.rtts) if self.rtts else 0.0

    @property
    def mdev(self) -> float:
        """iputils' mean deviation: sqrt(mean(rtt^2) - mean(rtt)^2)."""
        if not self.rtts:
            return 0.0
        mean = self.avg_rtt
        square = sum(r * r for r in self.rtts) / len(self.rtts)
        return math.sqrt(max(square - mean * mean, 0.0))

    @property
    def jitter(self) -> float:
        """Mean absolute difference between consecutive RTTs (icmplib's jitter)."""
        if len(self.rtts) < 2:
            return 0.0
        steps = [abs(b - a) for a, b in zip(self.rtts, self.rtts[1:], strict=False)]
        return sum(steps) / len(steps)


@dataclass(frozen=True, slots=True)
class Hop:
    """One TTL (hop limit) of a traceroute: who answered and how fast.

    ``addresses`` lists the distinct responders in order (several when load
    balancing spreads the probes); ``reached`` says the target itself
    answered; ``errors`` holds what ended the path here (e.g. unreachable).
    """

    ttl: int
    sent: int
    addresses: tuple[str, ...]
    rtts: tuple[float, ...]
    reached: bool
    errors: tuple[IcmpError, ...]

    @property
    def address(self) -> str | None:
        """The first responder, or None when every probe went unanswered ("*")."""
        return self.addresses[0] if self.addresses else None


@dataclass(frozen=True, slots=True)
class Trace:
    """A traceroute: one Hop per TTL up to the target (or to max_hops)."""

    address: str
    name: str
    family: int
    hops: tuple[Hop, ...]
    transport: str
    rung: str

    @property
    def reached(self) -> bool:
        return any(hop.reached for hop in self.hops)


# Hot-loop constructors: a sweep builds a Reply and a Host per target. A
# frozen dataclass's __init__ sets each field through object.__setattr__;
# setting the slots directly is half the cost and gives the same object
# (test_icmp compares them). Unpacking fields() breaks loudly on a new field.
_new = object.__new__
_R_SEQ, _R_SOURCE, _R_TTL, _R_RTT, _R_SIZE = (
    getattr(Reply, f.name).__set__ for f in fields(Reply))



def _reply(seq: int, source: str, ttl: int | None, rtt: float, size: int) -> Reply:
    """Reply(seq, source, ttl, rtt, size), faster."""
    reply: Reply = _new(Reply)
    _R_SEQ(reply, seq)
    _R_SOURCE(reply, source)
    _R_TTL(reply, ttl)
    _R_RTT(reply, rtt)
    _R_SIZE(reply, size)
    return reply
