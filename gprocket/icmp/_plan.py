"""Planning a call: validated arguments, addresses resolved per family, sockets opened."""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gprocket.icmp._resolve import _family_arg, _literal, resolve
from gprocket.icmp._results import IcmpError, Reply
from gprocket.icmp._socket import IcmpSocket, SocketKind, open_icmp_socket
from gprocket.icmp._state import Options, State


def _validate(count: int, interval: float, timeout: float, size: int, ttl: int | None) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, not {count!r}")
    if interval < 0 or not math.isfinite(interval):
        raise ValueError(f"interval must be >= 0 seconds, not {interval!r}")
    if timeout <= 0 or not math.isfinite(timeout):
        raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
    if not 0 <= size <= 65507:
        raise ValueError(f"size must be 0..65507 bytes, not {size!r}")
    if ttl is not None and not 1 <= ttl <= 255:
        raise ValueError(f"ttl must be 1..255, not {ttl!r}")


@dataclass
class Plan:
    family: int
    states: list[State]


def target_names(addresses: Iterable[str]) -> list[str]:
    if isinstance(addresses, str | bytes):
        raise TypeError("addresses must be an iterable of str, not one str")
    names = list(addresses)
    if set(map(type, names)) - {str}:  # one pass in C; the loop only names the culprit
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"each address must be a str, not {type(name).__name__}")
    return names


def make_plans(addresses: Iterable[str], family: int | None, count: int) -> list[Plan]:
    """Resolve every address into per-family target lists, each in input order."""
    names = list(addresses)
    v4: list[State] = []
    v6: list[State] = []
    resolved: dict[int, list[State]] = {}
    aton, ntoa = socket.inet_aton, socket.inet_ntoa
    pton, ntop, inet6 = socket.inet_pton, socket.inet_ntop, int(socket.AF_INET6)
    want4, want6 = family != socket.AF_INET6, family != socket.AF_INET
    state = State
    for index, name in enumerate(names):
        # Fast paths for plain literals (thousands per sweep); resolve() does the rest.
        # A canonical literal is kept as the address itself, one string less per target.
        if ":" in name:
            if want6 and "%" not in name:
                try:
                    packed = pton(inet6, name)
                except OSError:
                    pass
                else:
                    canon = ntop(inet6, packed)
                    if canon == name:
                        canon = name
                    v6.append(state(index, name, canon, (canon, 0, 0, 0), count, None, packed))
                    continue
        elif want4 and name.count(".") == 3:  # inet_aton also takes "10.1" and "0x7f.1"
            try:
                packed = aton(name)
            except OSError:
                pass
            else:
                canon = ntoa(packed)
                if canon == name:
                    canon = name
                v4.append(state(index, name, canon, (canon, 0), count, None, packed))
                continue
        af, canon, sockaddr = resolve(name, family)
        resolved.setdefault(int(af), []).append(state(index, name, canon, sockaddr, count))
    for af, literals in ((int(socket.AF_INET), v4), (inet6, v6)):
        if not literals:
            continue
        states = resolved.get(af)
        if states is None:
            resolved[af] = literals
        else:
            states.extend(literals)
            states.sort(key=lambda target: target.index)
    return [Plan(socket.AddressFamily(af), states) for af, states in sorted(resolved.items())]


@dataclass(frozen=True)
class Job:
    """Everything a call asked for, validated, shared by its engines."""

    options: Options
    family: int | None
    kind: SocketKind
    source: str | None
    interface: str | None
    ttl: int | None
    strategies: str | tuple[str, ...] | None
    helper: str | None


def make_job(count: int, interval: float, timeout: float, size: int, ttl: int | None,  # noqa: PLR0917
             source: str | None, interface: str | None, family: int | str | None,
             kind: SocketKind, strategies: str | Sequence[str] | None, helper: str | None,
             on_reply: Callable[[str, Reply, bool], None] | None,
             on_error: Callable[[str, IcmpError], None] | None, *,
             on_send: Callable[[str], None] | None = None) -> Job:
    _validate(count, interval, timeout, size, ttl)
    if kind not in ("auto", "datagram", "raw"):
        raise ValueError(f"socket_kind must be 'auto', 'datagram' or 'raw', not {kind!r}")
    chain = strategies if strategies is None or isinstance(strategies, str) \
        else tuple(strategies)
    return Job(Options(count, interval, timeout, size, on_reply, on_error, on_send),
               _family_arg(family), kind, source, interface, ttl, chain, helper)


def source_for(plan: Plan, job: Job) -> str | None:
    """The source address for ``plan``'s socket: one applies to its own family only."""
    source = job.source
    literal = _literal(source) if source is not None else None
    if literal is not None and literal[0] != plan.family:
        return None
    return source


def prepare(addresses: Iterable[str], job: Job) -> list[tuple[Plan, IcmpSocket]]:
    """Resolve every address, then open one socket per family needed."""
    plans = make_plans(addresses, job.family, job.options.count)
    opened: list[tuple[Plan, IcmpSocket]] = []
    try:
        for plan in plans:
            opened.append((plan, open_icmp_socket(
                plan.family, kind=job.kind, source=source_for(plan, job), interface=job.interface,
                ttl=job.ttl, strategies=job.strategies, helper=job.helper)))
    except BaseException:
        for _, isock in opened:
            isock.close()
        raise
    return opened
