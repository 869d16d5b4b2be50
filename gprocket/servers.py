"""Listeners for gevent's StreamServer and DatagramServer on any port.

gevent servers take ``listener`` as an address or as an already-bound socket.
A gprocket socket is a gevent socket, so it drops straight in::

    sock = gprocket.open(53, protocol="udp", family="inet6")
    DatagramServer(sock, handle).serve_forever()

The helpers here add the address syntax gevent users write (``':53'``,
``'[::]:53'``, ``'127.0.0.1:53'``) and build the server in one call. Binding
goes through the privilege ladder, whose first rungs (inherited, plain) are
the ordinary unprivileged bind: a port the kernel already allows is bound in
this process, and a helper or capability is used only when binding needs it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gevent.server import DatagramServer, StreamServer

from ._api import open as gp_open
from ._socket import Socket

__all__ = [
    "Address",
    "ListenAddress",
    "datagram_server",
    "listener",
    "needs_privilege",
    "parse_address",
    "stream_server",
]

Address = str | int | tuple[str, int] | tuple[str, int, int, int]

_STREAM_PROTOCOLS = ("tcp", "sctp")
_DATAGRAM_PROTOCOLS = ("udp",)


@dataclass(frozen=True)
class ListenAddress:
    """A parsed listening address: family, numeric ip (wildcard if ''), port."""

    family: int
    ip: str
    port: int
    scope_id: int = 0

    @property
    def family_name(self) -> str:
        """``"inet"`` or ``"inet6"``, as gprocket.open spells it."""
        return "inet6" if self.family == socket.AF_INET6 else "inet"

    def __str__(self) -> str:
        if self.family == socket.AF_INET6:
            scope = f"%{self.scope_id}" if self.scope_id else ""
            return f"[{self.ip or '::'}{scope}]:{self.port}"
        return f"{self.ip or '0.0.0.0'}:{self.port}"  # noqa: S104 - displayed, not bound


def _port(text: str, address: object) -> int:
    if not text.isdigit():
        raise ValueError(f"address {address!r}: port {text!r} is not a number")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"address {address!r}: port {port} is out of range 0..65535")
    return port


def _numeric(host: str, port: int, address: object) -> ListenAddress:
    """Turn a host (literal, '' or a name) into a numeric ListenAddress."""
    if host in ("", "*"):
        return ListenAddress(socket.AF_INET, "", port)
    literal, _, scope = host.partition("%")
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        ip = None
    if ip is not None:
        scope_id = 0
        if scope:
            if ip.version != 6:
                raise ValueError(f"address {address!r}: a scope (%{scope}) needs an IPv6 address")
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return ListenAddress(family, str(ip), port, scope_id)
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_NUMERICSERV)
    except socket.gaierror as err:
        raise ValueError(f"address {address!r}: cannot resolve {host!r}: {err}") from err
    family, _, _, _, sockaddr = infos[0]
    scope_id = int(sockaddr[-1]) if family == socket.AF_INET6 else 0
    return ListenAddress(int(family), str(sockaddr[0]), port, scope_id)


def parse_address(address: Address) -> ListenAddress:
    """Parse a listening address the way gevent servers accept it.

    ``53`` or ``'53'`` or ``':53'`` is the IPv4 wildcard (as in gevent);
    ``'[::]:53'`` the IPv6 wildcard; ``'127.0.0.1:53'``, ``'[::1]:53'``,
    ``'[fe80::1%eth0]:53'`` and ``'localhost:53'`` (resolved now) name one
    address; a tuple ``(host, port)`` or ``(host, port, flowinfo, scope_id)``
    works as for socket.bind. Raises ValueError for anything else.
    """
    if isinstance(address, bool):
        raise TypeError("address must be a str, an int or a tuple, not bool")
    if isinstance(address, int):
        if not 0 <= address <= 65535:
            raise ValueError(f"port {address} is out of range 0..65535")
        return ListenAddress(socket.AF_INET, "", address)
    if isinstance(address, tuple):
        if len(address) not in (2, 4) or not isinstance(address[0], str) \
                or not isinstance(address[1], int):
            raise ValueError(f"address {address!r} must be (host, port) or "
                             "(host, port, flowinfo, scope_id)")
        parsed = _numeric(address[0], _port(str(address[1]), address), address)
        if len(address) == 4 and address[3]:
            if parsed.family != socket.AF_INET6:
                raise ValueError(f"address {address!r}: scope_id needs an IPv6 address")
            parsed = ListenAddress(parsed.family, parsed.ip, parsed.port, int(address[3]))
        return parsed
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, an int or a tuple, not {type(address).__name__}")
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"address {address!r} must look like '[::1]:53'")
        parsed = _numeric(host, _port(rest[1:], address), address)
        if parsed.family != socket.AF_INET6:
            raise ValueError(f"address {address!r}: brackets are for IPv6 addresses")
        return parsed
    host, sep, port_text = text.rpartition(":")
    if not sep:
        return ListenAddress(socket.AF_INET, "", _port(text, address))
    if ":" in host:
        raise ValueError(f"address {address!r}: write an IPv6 address in brackets, "
                         f"e.g. '[{host}]:{port_text}'")
    return _numeric(host, _port(port_text, address), address)


def unprivileged_port_start() -> int:
    """The first port this network namespace lets anyone bind (default 1024)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def needs_privilege(port: int) -> bool:
    """True when binding `port` needs CAP_NET_BIND_SERVICE in this namespace.

    Says nothing about whether this process has it: that is the ladder's
    business (its plain rung simply tries).
    """
    return 0 < port < unprivileged_port_start()


def listener(address: Address, protocol: str = "tcp", *, backlog: int | None = None,
             reuseaddr: bool | None = None, reuseport: bool = False,
             dualstack: bool = False, interface: str | None = None,
             namespace: str | None = None, strategies: Sequence[str] | str | None = None,
             helper: str | None = None) -> Socket:
    """A bound (and, for tcp, listening) gprocket socket for `address`.

    `protocol` is "tcp" or "udp" (or "sctp"). The socket comes from
    ``gprocket.open``: an inherited socket if socket activation passed one,
    else an ordinary bind when the kernel allows it, else the next rungs of
    the ladder. `dualstack` makes an IPv6 wildcard listener accept IPv4 too.
    Raises ValueError for a bad address, PrivilegeError when no rung can bind
    a privileged port, OSError (EADDRINUSE, ...) from the kernel.
    """
    if protocol not in _STREAM_PROTOCOLS + _DATAGRAM_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} must be one of tcp, udp, sctp")
    parsed = parse_address(address)
    family = parsed.family_name
    if dualstack:
        if parsed.family != socket.AF_INET6 or parsed.ip not in ("", "::"):
            raise ValueError("dualstack needs the IPv6 wildcard address '[::]:PORT'")
        family = "unspec"  # gprocket.open's spelling of a dual-stack [::] socket
    if protocol not in _STREAM_PROTOCOLS and backlog is not None:
        raise ValueError("backlog applies to tcp and sctp listeners only")
    return gp_open(parsed.port, protocol=protocol, family=family, ip=parsed.ip or None,
                   scope_id=parsed.scope_id, interface=interface, backlog=backlog,
                   namespace=namespace, reuseaddr=reuseaddr, reuseport=reuseport,
                   strategies=strategies, helper=helper)


def stream_server(address: Address, handle: Callable[..., Any], *,
                  spawn: Any = "default", protocol: str = "tcp",
                  **listener_options: Any) -> StreamServer:
    """A gevent StreamServer on `address`, its listener from :func:`listener`.

    `handle(socket, address)` serves each connection in its own greenlet
    (or as `spawn` says). The server is not started: call ``start()`` or
    ``serve_forever()``. Raises what :func:`listener` raises.
    """
    if protocol not in _STREAM_PROTOCOLS:
        raise ValueError(f"stream servers speak tcp or sctp, not {protocol!r}")
    sock = listener(address, protocol, **listener_options)
    return StreamServer(sock, handle, spawn=spawn)


def datagram_server(address: Address, handle: Callable[..., Any], *,
                    spawn: Any = "default", **listener_options: Any) -> DatagramServer:
    """A gevent DatagramServer on `address` (UDP), its socket from :func:`listener`.

    `handle(data, address)` is called for each datagram; reply with
    ``server.sendto(reply, address)``. The server is not started. Raises
    what :func:`listener` raises.
    """
    sock = listener(address, "udp", **listener_options)
    return DatagramServer(sock, handle, spawn=spawn)
