"""Validated, immutable descriptions of what to open.

Every option is checked and turned into numbers here, before any rung runs
or any process starts: a bad option raises ValueError or TypeError naming
the problem. The rest of gprocket only ever sees these frozen objects.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict, Unpack

__all__ = [
    "DEFAULT_BACKLOG",
    "DEVICE_ALLOWLIST",
    "DeviceRequest",
    "IPAddress",
    "Request",
    "SocketOptions",
    "SocketRequest",
    "TunRequest",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_BACKLOG = 128
IFNAMSIZ = 16
NETNS_MAX = 31
DEVICE_ALLOWLIST = ("net/tun",)
ETH_P_ALL = 0x0003

_FAMILIES: dict[str, int] = {
    "inet": socket.AF_INET,
    "inet6": socket.AF_INET6,
    "packet": socket.AF_PACKET,
}
_TYPES: dict[str, int] = {
    "stream": socket.SOCK_STREAM,
    "dgram": socket.SOCK_DGRAM,
    "raw": socket.SOCK_RAW,
    "seqpacket": socket.SOCK_SEQPACKET,
}
_PROTOCOLS: dict[str, int] = {
    "tcp": socket.IPPROTO_TCP,
    "udp": socket.IPPROTO_UDP,
    "icmp": socket.IPPROTO_ICMP,
    "icmp6": socket.IPPROTO_ICMPV6,
    "ipv6-icmp": socket.IPPROTO_ICMPV6,
    "icmpv6": socket.IPPROTO_ICMPV6,
    "sctp": socket.IPPROTO_SCTP,
    "raw": socket.IPPROTO_RAW,
    "ip": socket.IPPROTO_IP,
}
# The socket type a protocol implies when no type is given.
_DEFAULT_TYPE = {
    socket.IPPROTO_TCP: socket.SOCK_STREAM,
    socket.IPPROTO_UDP: socket.SOCK_DGRAM,
    socket.IPPROTO_SCTP: socket.SOCK_STREAM,
}
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


def _check_int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _lookup(what: str, value: object, names: dict[str, int]) -> int:
    if isinstance(value, str):
        try:
            return names[value.lower()]
        except KeyError:
            known = ", ".join(sorted(names))
            raise ValueError(f"unknown {what} {value!r}: use one of {known} or an int") from None
    return _check_int(what, value)


def _check_name(what: str, value: str, limit: int) -> str:
    """Names travel to the helper, which allows only these characters."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    raw = value.encode("utf-8", "surrogateescape")
    if not raw or len(raw) > limit:
        raise ValueError(f"{what} {value!r} must be 1 to {limit} bytes long")
    if not _NAME_RE.fullmatch(value) or value[0] in ".-":
        raise ValueError(
            f"{what} {value!r} may hold only A-Z a-z 0-9 . _ - and may not start with . or -"
        )
    return value


def _check_interface(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"interface must be a str, not {type(value).__name__}")
    return _check_name("interface", value, IFNAMSIZ - 1)


def _check_namespace(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"namespace must be a str, not {type(value).__name__}")
    if "/" in value:
        raise ValueError(
            f"namespace {value!r} looks like a path: give the name of a namespace "
            "under /run/netns (as 'ip netns add NAME' creates it)"
        )
    return _check_name("namespace", value, NETNS_MAX)


def _check_ip(value: object) -> IPAddress | None:
    if value is None:
        return None
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if not isinstance(value, str):
        raise TypeError(f"ip must be a str or an ipaddress object, not {type(value).__name__}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"ip {value!r} is not an IPv4 or IPv6 address") from None


def _dual_capable(address: IPAddress | None) -> bool:
    """Whether an IPv6 socket bound to ``address`` can stay dual-stack.

    Linux forces IPV6_V6ONLY on when bind() gets any other address
    (net/ipv6/af_inet6.c, __inet6_bind): only the wildcard and the
    IPv4-mapped addresses leave it as the program set it.
    """
    if address is None:
        return True
    return isinstance(address, ipaddress.IPv6Address) and (
        address.is_unspecified or address.ipv4_mapped is not None)


def _check_bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


class SocketOptions(TypedDict, total=False):
    """The options of a socket, all optional: the keywords of ``SocketRequest``,
    ``open``, ``open_fd`` and ``gprocket.aio``'s ``open`` and ``open_fd``.

    Defined once here; those signatures take them as
    ``**options: Unpack[SocketOptions]``, so mypy and editors check each by
    name and type. What each means, and its default:

    - ``family``: "inet", "inet6", "packet", "unspec" (a dual-stack IPv6
      socket bound to ``::``) or an AF_* number; default inet6 for an IPv6
      ``ip`` or an icmp6 ``protocol``, else inet.
    - ``type``: "stream", "dgram", "raw", "seqpacket" or a number; default
      the one ``protocol`` implies (tcp stream, udp dgram, others raw),
      stream when neither is given.
    - ``protocol``: "tcp", "udp", "icmp", "icmp6", "sctp", "raw", "ip" or a
      number; default the type's own (tcp, udp). For family "packet", the
      ethertype as an int (default 0x0003, ETH_P_ALL).
    - ``ip``: the address to bind (str or ipaddress object); default the
      family's wildcard.
    - ``scope_id``: the IPv6 scope (interface index) of ``ip``; default 0.
    - ``interface``: bind to this device (SO_BINDTODEVICE; for packet
      sockets, the interface to capture on); default none.
    - ``backlog``: the listen backlog of a stream or seqpacket socket
      (returned listening); default 128.
    - ``namespace``: open it in this network namespace (a name under
      /run/netns); default the caller's.
    - ``reuseaddr``: SO_REUSEADDR; default on for stream sockets.
    - ``reuseport``: SO_REUSEPORT; default off.
    """

    family: str | int | None
    type: str | int | None
    protocol: str | int | None
    ip: str | IPAddress | None
    scope_id: int
    interface: str | None
    backlog: int | None
    namespace: str | None
    reuseaddr: bool | None
    reuseport: bool


def _check_options(options: Mapping[str, object], where: str) -> None:
    """Refuse a name that is not an option, as Python would an unknown keyword."""
    for name in options:
        if name not in SocketOptions.__optional_keys__:
            known = ", ".join(SocketOptions.__annotations__)
            raise TypeError(
                f"{where}() got an unexpected keyword argument {name!r} "
                f"(the socket options are {known})"
            )


def socket_request(port: int, options: SocketOptions, where: str) -> SocketRequest:
    """``SocketRequest(port, **options)`` for a function ``where`` that takes the options.

    Checks the names first, so that ``where`` refuses ``dualstack`` (an option
    of SocketRequest only) and a misspelt name as Python would its own keyword.
    """
    _check_options(options, where)
    # A program asks for the same socket again and again (a server per
    # restart, a client per query): the checked request, with the wire
    # message and the descriptor checks it carries once encoded, is kept
    # per argument list (types included: 53.0 and True must still be refused).
    try:
        key = (type(port), port, *((name, type(value), value)
                                   for name, value in sorted(options.items())))
        found = _REQUESTS.get(key)
    except TypeError:  # an unhashable option: SocketRequest names what is wrong
        return SocketRequest(port, **options)
    if found is None:
        found = SocketRequest(port, **options)
        if len(_REQUESTS) >= _REQUESTS_KEPT:
            # Bounded by starting over: no iteration another thread could upset.
            _REQUESTS.clear()
        _REQUESTS[key] = found
    return found


_REQUESTS: dict[tuple[object, ...], SocketRequest] = {}
_REQUESTS_KEPT = 256


@dataclass(frozen=True, init=False)
class SocketRequest:
    """A socket to open, with every option checked and turned into numbers.

    ``family`` is AF_INET, AF_INET6 or AF_PACKET; ``"unspec"`` means
    "what the address can serve", as the kernel decides it: with no ip (or
    ``::``, or an IPv4-mapped ``::ffff:a.b.c.d``) a dual-stack IPv6 socket
    (IPV6_V6ONLY off); with a specific IPv6 address an IPv6-only socket (the
    kernel makes any socket bound to one IPv6-only); with an IPv4 address an
    inet socket. ``dualstack=True`` asks for IPV6_V6ONLY off explicitly and is
    refused for a specific non-mapped IPv6 address, which the kernel would
    make IPv6-only anyway; an IPv4-mapped address is always dual-stack (the
    kernel refuses to bind one IPv6-only). ``type`` and
    ``protocol`` are numbers; for stream and datagram sockets a protocol of 0
    becomes the one the kernel would pick (tcp, udp) so the descriptor can be
    checked against it. For family ``packet`` the protocol is the ethertype
    in host order. Stream sockets are returned listening with ``backlog``
    (default 128). The keywords are those of SocketOptions (each described
    there) and ``dualstack`` (IPV6_V6ONLY off on an inet6 socket). Raises ValueError
    or TypeError naming the bad option.
    """

    port: int
    family: int
    type: int
    protocol: int
    ip: IPAddress | None
    scope_id: int
    interface: str | None
    backlog: int | None
    namespace: str | None
    reuseaddr: bool
    reuseport: bool
    dualstack: bool

    def __init__(
        self, port: int = 0, *, dualstack: bool = False, **options: Unpack[SocketOptions]
    ) -> None:
        _check_options(options, "SocketRequest")
        family = options.get("family")
        type = options.get("type")
        protocol = options.get("protocol")
        backlog = options.get("backlog")
        reuseaddr = options.get("reuseaddr")
        port = _check_int("port", port)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 0..65535")
        address = _check_ip(options.get("ip"))
        dual = _check_bool("dualstack", dualstack)

        if (isinstance(family, str) and family.lower() == "unspec") or family == socket.AF_UNSPEC:
            if address is not None and address.version == 4:
                fam: int = socket.AF_INET
            else:
                fam = socket.AF_INET6
                dual = dual or _dual_capable(address)
        elif family is None:
            fam = self._infer_family(address, protocol)
        else:
            fam = _lookup("family", family, _FAMILIES)
            if fam not in _FAMILIES.values():
                raise ValueError(
                    f"family {fam} is not supported: gprocket opens inet, inet6 and packet sockets"
                )
        if dual and fam != socket.AF_INET6:
            raise ValueError("dualstack applies to IPv6 sockets only (family 'inet6' or 'unspec')")
        if fam == socket.AF_INET6 and address is not None:
            if dual and not _dual_capable(address):
                raise ValueError(
                    f"dualstack needs the wildcard '::' or an IPv4-mapped address, not {address}: "
                    "the kernel makes a socket bound to a specific IPv6 address IPv6-only "
                    "(leave dualstack off, or use family 'unspec')"
                )
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                dual = True  # the kernel binds v4-mapped addresses only with IPV6_V6ONLY off

        if fam == socket.AF_PACKET:
            typ, proto = self._packet_type_protocol(type, protocol)
            if address is not None:
                raise ValueError("packet sockets have no IP address: give interface= instead")
            if port:
                raise ValueError("packet sockets have no port: use port 0")
        else:
            typ, proto = self._inet_type_protocol(fam, type, protocol)
            if address is not None and (address.version == 6) != (fam == socket.AF_INET6):
                raise ValueError(f"ip {address} does not match family {_family_name(fam)}")
            if typ == socket.SOCK_RAW and port:
                raise ValueError("raw sockets have no port: use port 0")

        scope = _check_int("scope_id", options.get("scope_id", 0))
        if scope and fam != socket.AF_INET6:
            raise ValueError("scope_id applies to IPv6 addresses only")
        if not 0 <= scope <= 0xFFFFFFFF:
            raise ValueError(f"scope_id {scope} is out of range 0..4294967295")

        if backlog is None:
            blog = DEFAULT_BACKLOG if typ in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET) else None
        else:
            blog = _check_int("backlog", backlog)
            if typ not in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
                raise ValueError("backlog applies to stream and seqpacket sockets only")
            if not 0 <= blog <= 65535:
                raise ValueError(f"backlog {blog} is out of range 0..65535")
        if fam == socket.AF_PACKET:
            blog = None

        if reuseaddr is None:
            # Servers restarting on their port expect this (socketserver does it too).
            reuse = typ == socket.SOCK_STREAM and fam != socket.AF_PACKET
        else:
            reuse = _check_bool("reuseaddr", reuseaddr)

        object.__setattr__(self, "port", port)
        object.__setattr__(self, "family", int(fam))
        object.__setattr__(self, "type", int(typ))
        object.__setattr__(self, "protocol", proto)
        object.__setattr__(self, "ip", address)
        object.__setattr__(self, "scope_id", scope)
        object.__setattr__(self, "interface", _check_interface(options.get("interface")))
        object.__setattr__(self, "backlog", blog)
        object.__setattr__(self, "namespace", _check_namespace(options.get("namespace")))
        object.__setattr__(self, "reuseaddr", reuse)
        reuseport = _check_bool("reuseport", options.get("reuseport", False))
        object.__setattr__(self, "reuseport", reuseport)
        object.__setattr__(self, "dualstack", dual)

    @staticmethod
    def _infer_family(address: IPAddress | None, protocol: object) -> int:
        if address is not None:
            return socket.AF_INET6 if address.version == 6 else socket.AF_INET
        if isinstance(protocol, str) and protocol.lower() in ("icmp6", "icmpv6", "ipv6-icmp"):
            return socket.AF_INET6
        return socket.AF_INET

    @staticmethod
    def _packet_type_protocol(type_: object, protocol: object) -> tuple[int, int]:
        typ = socket.SOCK_RAW if type_ is None else _lookup("type", type_, _TYPES)
        if typ not in (socket.SOCK_RAW, socket.SOCK_DGRAM):
            raise ValueError("packet sockets are of type raw or dgram")
        if protocol is None:
            return typ, ETH_P_ALL
        if isinstance(protocol, str):
            raise ValueError(
                f"protocol {protocol!r}: for family 'packet' give the ethertype as an int "
                "(0x0003 = ETH_P_ALL)"
            )
        proto = _check_int("protocol", protocol)
        if not 0 <= proto <= 0xFFFF:
            raise ValueError(f"ethertype {proto:#x} is out of range 0..0xffff")
        return typ, proto

    @staticmethod
    def _inet_type_protocol(fam: int, type_: object, protocol: object) -> tuple[int, int]:
        if protocol is None:
            proto = None
        else:
            proto = _lookup("protocol", protocol, _PROTOCOLS)
            if not 0 <= proto <= 255:
                raise ValueError(f"protocol {proto} is out of range 0..255")
        if type_ is None:
            if proto is None:
                typ: int = socket.SOCK_STREAM
                proto = socket.IPPROTO_TCP
            else:
                typ = _DEFAULT_TYPE.get(proto, socket.SOCK_RAW)
        else:
            typ = _lookup("type", type_, _TYPES)
            if typ not in _TYPES.values():
                raise ValueError(f"socket type {typ} is not one of stream, dgram, raw, seqpacket")
        if proto is None or (proto == socket.IPPROTO_IP and typ != socket.SOCK_RAW):
            # The kernel's choice for protocol 0, spelled out so the
            # descriptor can be checked against it (SO_PROTOCOL reports it).
            if typ == socket.SOCK_STREAM:
                proto = socket.IPPROTO_TCP
            elif typ == socket.SOCK_DGRAM:
                proto = socket.IPPROTO_UDP
            elif typ == socket.SOCK_SEQPACKET:
                proto = socket.IPPROTO_SCTP
            else:
                raise ValueError("raw sockets need a protocol (icmp, icmp6, raw or a number)")
        if proto == socket.IPPROTO_ICMP and fam != socket.AF_INET:
            raise ValueError("protocol icmp is IPv4's: use icmp6 with family 'inet6'")
        if proto == socket.IPPROTO_ICMPV6 and fam != socket.AF_INET6:
            raise ValueError("protocol icmp6 is IPv6's: use icmp with family 'inet'")
        if typ == socket.SOCK_STREAM and proto not in (socket.IPPROTO_TCP, socket.IPPROTO_SCTP):
            raise ValueError(f"stream sockets carry tcp or sctp, not protocol {proto}")
        if typ == socket.SOCK_DGRAM and proto not in (
            socket.IPPROTO_UDP,
            socket.IPPROTO_ICMP,
            socket.IPPROTO_ICMPV6,
            socket.IPPROTO_UDPLITE,
        ):
            raise ValueError(f"datagram sockets carry udp or icmp, not protocol {proto}")
        return typ, proto

    def __hash__(self) -> int:
        # Requests key several small caches (wire template, expected address,
        # needed capabilities): hash the fields once, not per lookup.
        try:
            return self.__dict__["_hash"]  # type: ignore[no-any-return]
        except KeyError:
            value = hash(tuple(getattr(self, name) for name in _SOCKET_FIELDS))
            self.__dict__["_hash"] = value
            return value

    @property
    def needs_bind(self) -> bool:
        """True when bind() is called: a port, an address or a scope was given.

        Otherwise the kernel binds on first use (listen, send), as the helper does.
        """
        return self.family != socket.AF_PACKET and (
            bool(self.port) or self.ip is not None or bool(self.scope_id)
        )

    @property
    def bind_ip(self) -> str:
        """The address to bind: the given one or the family's wildcard."""
        if self.ip is not None:
            return str(self.ip)
        return "::" if self.family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104 - the wildcard is the request

    def describe(self) -> str:
        """A short human description used in error messages."""
        if self.family == socket.AF_PACKET:
            where = f" on {self.interface}" if self.interface else ""
            return f"packet socket (ethertype {self.protocol:#06x}){where}"
        proto = _protocol_name(self.protocol)
        fam = "dual-stack inet6" if self.dualstack else _family_name(self.family)
        if self.type == socket.SOCK_RAW:
            text = f"raw {proto} socket ({fam})"
        else:
            text = f"{proto} port {self.port} on {self.bind_ip} ({fam})"
        if self.interface:
            text += f" bound to {self.interface}"
        if self.namespace:
            text += f" in namespace {self.namespace}"
        return text


@dataclass(frozen=True, init=False)
class TunRequest:
    """A TUN or TAP device to create, or (``attach``) an existing one to attach to.

    ``mode`` is "tun" (IP packets) or "tap" (Ethernet frames); ``name`` is
    the interface name, or None for the kernel's choice (tun0, tap0, ...).
    ``packet_info`` keeps the 4-byte header (IFF_NO_PI when False).
    ``addr4``/``addr6`` are interfaces ("10.0.0.1/24"). ``attach`` opens a
    queue of the existing device ``name`` (the caller's own: the helper checks
    its owner and group) and configures nothing. Raises ValueError or
    TypeError naming the bad option.
    """

    name: str | None
    mode: str
    packet_info: bool
    multiqueue: bool
    persist: bool
    up: bool
    mtu: int
    addr4: ipaddress.IPv4Interface | None
    addr6: ipaddress.IPv6Interface | None
    namespace: str | None
    attach: bool

    def __init__(  # noqa: PLR0917 - the contract allows positional options
        self,
        name: str | None = None,
        mode: str = "tun",
        packet_info: bool = False,
        multiqueue: bool = False,
        persist: bool = False,
        up: bool = False,
        mtu: int = 0,
        addr4: str | ipaddress.IPv4Interface | None = None,
        addr6: str | ipaddress.IPv6Interface | None = None,
        namespace: str | None = None,
        attach: bool = False,
    ) -> None:
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"name must be a str, not {type(name).__name__}")
            _check_name("tun name", name, IFNAMSIZ - 1)
        if _check_bool("attach", attach):
            if name is None:
                raise ValueError("attach needs the name of the existing device")
            if persist or up or mtu or addr4 is not None or addr6 is not None:
                raise ValueError(
                    "attach configures nothing: persist, up, mtu and addresses are for a new device"
                )
        if mode not in ("tun", "tap"):
            raise ValueError(f"mode {mode!r} must be 'tun' or 'tap'")
        mtu = _check_int("mtu", mtu)
        if mtu and not 68 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} is out of range 68..65535 (0 leaves it)")
        v4 = _check_iface(addr4, 4)
        v6 = _check_iface(addr6, 6)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "packet_info", _check_bool("packet_info", packet_info))
        object.__setattr__(self, "multiqueue", _check_bool("multiqueue", multiqueue))
        object.__setattr__(self, "persist", _check_bool("persist", persist))
        object.__setattr__(self, "up", _check_bool("up", up))
        object.__setattr__(self, "mtu", mtu)
        object.__setattr__(self, "addr4", v4)
        object.__setattr__(self, "addr6", v6)
        object.__setattr__(self, "namespace", _check_namespace(namespace))
        object.__setattr__(self, "attach", attach)

    @property
    def flags(self) -> int:
        """The TUNSETIFF flags: IFF_TUN/IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE."""
        flags = 0x0001 if self.mode == "tun" else 0x0002
        if not self.packet_info:
            flags |= 0x1000
        if self.multiqueue:
            flags |= 0x0100
        return flags

    def describe(self) -> str:
        """A short human description used in error messages."""
        what = f"{self.mode.upper()} device {self.name or '(kernel-named)'}"
        return f"existing {what}" if self.attach else what


def _check_iface(
    value: object, version: int
) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    if value is None:
        return None
    kind = ipaddress.IPv4Interface if version == 4 else ipaddress.IPv6Interface
    if isinstance(value, kind):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"addr{version} must be a str or {kind.__name__}, not {type(value).__name__}"
        )
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"addr{version} {value!r} is not an IPv{version} address/prefix") from None


@dataclass(frozen=True, init=False)
class DeviceRequest:
    """A character device from the allowlist (``net/tun``), opened read-write."""

    name: str

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if name not in DEVICE_ALLOWLIST:
            raise ValueError(
                f"device {name!r} is not allowed: only {', '.join(DEVICE_ALLOWLIST)} can be opened"
            )
        object.__setattr__(self, "name", name)

    @property
    def namespace(self) -> None:
        """Devices are opened in the caller's own namespace."""
        return None

    @property
    def path(self) -> str:
        """The device's path under /dev."""
        return f"/dev/{self.name}"

    def describe(self) -> str:
        """A short human description used in error messages."""
        return f"device {self.path}"


Request = SocketRequest | TunRequest | DeviceRequest
_SOCKET_FIELDS = tuple(field.name for field in dataclasses.fields(SocketRequest))


def _family_name(fam: int) -> str:
    for name, value in _FAMILIES.items():
        if value == fam:
            return name
    return str(fam)


def _protocol_name(proto: int) -> str:
    for name, value in _PROTOCOLS.items():
        if value == proto:
            return name
    return f"protocol {proto}"
