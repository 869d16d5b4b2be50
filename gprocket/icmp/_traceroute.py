"""traceroute's own steps, shared by gprocket.icmp and gprocket.aio: its
arguments validated, one target per hop, and the Trace from the probed hops."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from gprocket.icmp import _wire as wire
from gprocket.icmp._plan import Job, Plan, make_job
from gprocket.icmp._results import Hop, IcmpError, Trace
from gprocket.icmp._socket import IcmpSocket, SocketKind
from gprocket.icmp._state import State

__all__ = ["trace_job", "trace_result", "trace_states"]


def trace_job(address: str, max_hops: int, count: int, timeout: float,  # noqa: PLR0917
              size: int, source: str | None, interface: str | None,
              family: int | str | None, socket_kind: SocketKind,
              strategies: str | Sequence[str] | None, helper: str | None) -> Job:
    """traceroute()'s arguments, validated (shared with gprocket.aio)."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    if isinstance(max_hops, bool) or not isinstance(max_hops, int) or not 1 <= max_hops <= 255:
        raise ValueError(f"max_hops must be 1..255, not {max_hops!r}")
    return make_job(count, 0.0, timeout, size, None, source, interface, family, socket_kind,
                    strategies, helper, None, None)


def trace_states(plan: Plan, count: int, max_hops: int) -> list[State]:
    """One target per hop: the same address with TTL 1..max_hops."""
    first = plan.states[0]
    return [State(ttl - 1, first.name, first.address, first.sockaddr, count, ttl)
            for ttl in range(1, max_hops + 1)]


def trace_result(plan: Plan, states: list[State], isock: IcmpSocket) -> Trace:
    """The Trace from the probed hops (those past the end dropped)."""
    first = plan.states[0]
    exceeded = (wire.ICMP_TIME_EXCEEDED if plan.family == socket.AF_INET
                else wire.ICMP6_TIME_EXCEEDED)
    hops: list[Hop] = []
    for state in states:
        responders: list[str] = []
        rtts: list[float] = []
        final: list[IcmpError] = []
        for reply in state.replies:
            responders.append(reply.source)
            rtts.append(reply.rtt)
        for error in state.errors:
            if error.reporter is not None:
                responders.append(error.reporter)
            if error.rtt is not None:
                rtts.append(error.rtt)
            if error.type != exceeded:
                final.append(error)
        hop = Hop(state.ttl or 0, state.sent, tuple(dict.fromkeys(responders)), tuple(rtts),
                  bool(state.replies), tuple(final))
        hops.append(hop)
        if hop.reached or hop.errors:
            break
    return Trace(first.address, first.name, plan.family, tuple(hops), isock.kind, isock.rung)
