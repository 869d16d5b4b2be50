"""ICMP address resolution: literals without the resolver, names through gevent's."""

from __future__ import annotations

import socket

from gevent import socket as gsocket


def resolve(address: str, family: int | None = None) -> tuple[int, str, tuple[object, ...]]:
    """Resolve ``address`` to (family, canonical address, sockaddr), cooperatively.

    Literal addresses never touch the resolver; names go through gevent's
    resolver so other greenlets keep running. A scope ("fe80::1%eth0") is
    kept. Raises socket.gaierror for names that do not resolve and ValueError
    for an address of the wrong family.
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    if "%" in address:
        return _scoped(address, family)
    literal = _literal(address)
    if literal is not None:
        af, canon = literal
        if family is not None and af != family:
            raise ValueError(f"{address} is not an {_family_name(family)} address")
        sockaddr: tuple[object, ...] = (canon, 0) if af == socket.AF_INET else (canon, 0, 0, 0)
        return af, canon, sockaddr
    try:
        infos = gsocket.getaddrinfo(address, None, family or 0, socket.SOCK_RAW)
    except UnicodeError as err:  # the idna codec refuses labels like "" or 64+ chars
        raise socket.gaierror(socket.EAI_NONAME, f"{address}: {err}") from None
    for af, _type, _proto, _canon, sockaddr in infos:
        if af in (socket.AF_INET, socket.AF_INET6):
            return int(af), host_key(tuple(sockaddr)), tuple(sockaddr)
    raise socket.gaierror(socket.EAI_NONAME, f"{address}: no IPv4 or IPv6 address")


_IFNAMES: dict[int, str] = {}


def host_key(sockaddr: tuple[object, ...]) -> str:
    """The address as shown and matched: scoped IPv6 gets "%interface" back."""
    host = str(sockaddr[0])
    if len(sockaddr) < 4 or not sockaddr[3] or "%" in host:
        return host
    scope = int(sockaddr[3])  # type: ignore[call-overload]
    name = _IFNAMES.get(scope)
    if name is None:
        try:
            name = socket.if_indextoname(scope)
        except OSError:
            name = str(scope)
        _IFNAMES[scope] = name
    return f"{host}%{name}"


def _scoped(address: str, family: int | None) -> tuple[int, str, tuple[object, ...]]:
    """"fe80::1%eth0" (or "%2"): an IPv6 literal and the interface it is scoped to."""
    host, _, zone = address.partition("%")
    if family == socket.AF_INET:
        raise ValueError(f"{address} is not an IPv4 address")
    try:
        _, canon = _v6(host)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME,
                              f"{address}: a scope needs an IPv6 address literal") from None
    try:
        scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    except OSError:
        raise socket.gaierror(socket.EAI_NONAME, f"{address}: no interface {zone!r}") from None
    sockaddr = (canon, 0, 0, scope)
    return socket.AF_INET6, host_key(sockaddr), sockaddr


def _literal(address: str) -> tuple[int, str] | None:
    if "%" in address:
        return None
    try:
        if ":" in address:
            return _v6(address)
        if address.count(".") == 3:  # inet_aton would also take "10.1" and "0x7f.1"
            return socket.AF_INET, socket.inet_ntoa(socket.inet_aton(address))
    except OSError:
        pass
    return None


def _v6(address: str) -> tuple[int, str]:
    return socket.AF_INET6, socket.inet_ntop(socket.AF_INET6,
                                             socket.inet_pton(socket.AF_INET6, address))


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def _family_arg(family: int | str | None) -> int | None:
    if family in (None, 0, "unspec"):
        return None
    if family in (4, "inet", socket.AF_INET):
        return socket.AF_INET
    if family in (6, "inet6", socket.AF_INET6):
        return socket.AF_INET6
    raise ValueError(f"family must be 4, 6, 'inet', 'inet6' or None, not {family!r}")
