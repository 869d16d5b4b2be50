"""scapy with every socket from gprocket's privilege ladder.

Two ways to run scapy as an unprivileged user:

* unmodified, under ``gprocket run script.py``: monkey patching hands scapy's
  own ``socket(AF_PACKET, ...)`` and ``socket(AF_INET, SOCK_RAW, ...)``
  calls descriptors from the ladder;
* directly, with no patching: :func:`install` points scapy's socket
  configuration (``conf.L2socket``, ``conf.L2listen``, ``conf.L3socket``,
  ``conf.L3socket6``) at this module's classes. ``sr``, ``sr1``, ``srp``,
  ``srp1``, ``send``, ``sendp``, ``sniff``, ``AsyncSniffer``, ``arping`` and
  everything else scapy builds on them then need only a policy entry
  (``allow SUBJECT packet``; ``allow SUBJECT raw 255`` too for IP to the
  loopback interface).

The classes subclass scapy's Linux classes and change only where the socket
comes from and how a filter is compiled; receiving, sending, dissecting and
closing are scapy's own code:

* the packet socket is opened with ethertype 0 (it queues nothing), then the
  filter is attached, promiscuous mode set, and only then is it bound to the
  interface and ethertype: no frame from before the filter is ever read, so
  scapy's flush of early frames is not needed;
* ``filter=`` is a tcpdump expression compiled by libpcap through
  :func:`gprocket.packet.bpf.compile_expression` for the interface's link type
  (scapy's ``conf.except_filter`` is honoured, ``nofilter=1`` skips both),
  so no tcpdump and no privileged libpcap handle is involved;
* ``promisc=`` (default ``conf.sniff_promisc``) is a packet membership held
  for the socket's lifetime, as in scapy;
* each socket's ``rung`` says which rung of the ladder served it.

scapy sends IP to the loopback interface through ``L3RawSocket``
(``AF_INET``/``IPPROTO_RAW``), which its interface provider picks itself
instead of asking ``conf``; :func:`install` therefore also replaces
``scapy.supersocket.L3RawSocket`` and ``L3RawSocket6``, which that provider
looks up on every call. :func:`uninstall` restores all six.

scapy needs no home directory: it creates ``~/.config/scapy`` and
``~/.cache/scapy`` (or under ``$XDG_CONFIG_HOME``/``$XDG_CACHE_HOME``) when
it can and silently does without them otherwise.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

try:
    import scapy.supersocket as _supersocket
    from scapy.arch import linux as _linux
    from scapy.config import conf
    from scapy.data import (
        ARPHRD_TO_DLT,
        DLT_RAW,
        DLT_RAW_ALT,
        ETH_P_ALL,
        ETH_P_IP,
        ETH_P_IPV6,
        MTU,
        SO_TIMESTAMPNS,
        SOL_PACKET,
    )
    from scapy.error import Scapy_Exception, log_runtime, warning
    from scapy.interfaces import NetworkInterface, network_name, resolve_iface
    from scapy.packet import Packet
    from scapy.supersocket import SuperSocket
except ModuleNotFoundError as err:
    if err.name is None or err.name.partition(".")[0] != "scapy":
        raise
    raise ImportError("gprocket.scapy needs scapy, which is not installed: "
                      "pip install scapy", name="scapy") from err

from ._api import acquire_in_thread
from ._ladder import DEFAULT_ORDER
from ._spec import SocketRequest
from .packet import bpf, interfaces

__all__ = [
    "L2ListenSocket",
    "L2Socket",
    "L3PacketSocket",
    "L3RawSocket",
    "L3RawSocket6",
    "compile_filter",
    "install",
    "is_installed",
    "uninstall",
]

_PACKET_AUXDATA = 8
_IPPROTO_RAW = 255
_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF  # what scapy passes to pcap_compile

Interface = str | NetworkInterface | None
HelperPath = str | os.PathLike[str] | None


class _Options:
    """What :func:`install` was given; read each time a socket is opened."""

    strategies: str | Sequence[str] | None = None
    helper: HelperPath = None


_options = _Options()
_lock = threading.Lock()
_saved: dict[tuple[object, str], Any] = {}


def _default_strategies() -> tuple[str, ...] | None:
    """The default ladder with a one-shot helper where it has the broker.

    scapy opens its sockets from whichever native thread asks (``sr``'s
    sender, ``AsyncSniffer``), a few per call; a broker is tied to the hub of
    the thread that started it and its child would outlive that use.
    GPROCKET_STRATEGIES, when set, is used as given.
    """
    if os.environ.get("GPROCKET_STRATEGIES", "").strip():
        return None
    return tuple("helper" if rung == "broker" else rung for rung in DEFAULT_ORDER)


def _ladder_socket(family: str, type_: str, protocol: int) -> tuple[socket.socket, str]:
    """A blocking socket on a descriptor from the ladder, and the rung that served it.

    ``socket.socket`` is looked up at call time, so a gevent-patched program
    gets gevent's cooperative class, as scapy itself would.
    """
    request = SocketRequest(0, family=family, type=type_, protocol=protocol)
    # scapy opens sockets from its own short-lived threads (AsyncSniffer).
    got = acquire_in_thread(request, strategies=_options.strategies if _options.strategies
                            is not None else _default_strategies(), helper=_options.helper)
    try:
        sock = socket.socket(fileno=got.fd)
    except BaseException:
        os.close(got.fd)
        raise
    sock.setblocking(True)
    return sock, got.rung


def _link_type(iface: str) -> int:
    """The pcap link type (DLT) of ``iface``, from its ARPHRD type as scapy maps it."""
    try:
        hwtype = int(getattr(resolve_iface(iface), "type", -1))
    except ValueError:
        hwtype = -1  # scapy raises ValueError for a name it does not know
    if hwtype < 0:
        # Not in scapy's interface list (it reloads it once, then gives up).
        try:
            hwtype = int(Path(f"/sys/class/net/{iface}/type").read_text())
        except (OSError, ValueError) as err:
            raise Scapy_Exception(
                f"Cannot set filter: the link type of interface {iface!r} is unknown "
                f"({err}); give iface= an existing interface") from err
    linktype: int | None = ARPHRD_TO_DLT.get(hwtype)
    if linktype is None or linktype < 0:
        raise Scapy_Exception(
            f"Cannot set filter: interface {iface!r} has link type ARPHRD {hwtype}, "
            "which libpcap cannot compile filters for; use nofilter=1")
    return DLT_RAW if linktype == DLT_RAW_ALT else linktype


def compile_filter(expression: str, iface: str) -> bpf.Program:
    """``expression`` compiled by libpcap for ``iface``'s link type, as scapy would.

    Raises scapy's ``Scapy_Exception`` ("Cannot set filter: ...") with
    libpcap's message for a bad expression or without libpcap, as scapy does.
    """
    linktype = _link_type(iface)
    try:
        return bpf.compile_expression(expression, linktype=linktype, snaplen=MTU,
                                      netmask=_PCAP_NETMASK_UNKNOWN)
    except (ValueError, bpf.PcapUnavailable) as err:
        raise Scapy_Exception(f"Cannot set filter: {err}") from err


def _with_except_filter(expression: str | None) -> str | None:
    """``expression`` combined with ``conf.except_filter`` exactly as scapy combines them."""
    excepted = conf.except_filter
    if excepted:
        return f"({expression}) and not ({excepted})" if expression else f"not ({excepted})"
    return expression


def _enable_auxdata(sock: SuperSocket) -> None:
    """VLAN tags and nanosecond timestamps in ancillary data, where the kernel has them."""
    try:
        sock.ins.setsockopt(SOL_PACKET, _PACKET_AUXDATA, 1)
        sock.ins.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.auxdata_available = True
    except OSError:
        log_runtime.info("Your Linux Kernel does not support Auxiliary Data!")


class L2Socket(_linux.L2Socket):
    """scapy's ``L2Socket`` on a packet socket from gprocket's ladder.

    Same arguments as scapy's; ``filter`` is a tcpdump expression;
    ``rung`` says which rung of the ladder served the socket.
    Raises gprocket.PrivilegeError when no rung may open a packet socket
    (the helper's policy needs ``allow SUBJECT packet``), scapy's
    Scapy_Exception for a filter that does not compile, OSError (ENODEV)
    for an unknown interface.
    """

    desc = "read/write packets at layer 2 on PF_PACKET sockets from gprocket's ladder"

    # Positional like scapy's: callers pass iface and type by position.
    def __init__(self, iface: Interface = None, type: int = ETH_P_ALL,  # noqa: PLR0917
                 promisc: Any | None = None, filter: str | None = None,
                 nofilter: int = 0, monitor: Any | None = None) -> None:
        name = network_name(iface or conf.iface)
        self.iface = name
        self.type = type
        self.promisc = conf.sniff_promisc if promisc is None else promisc
        self.ins, self.rung = _ladder_socket("packet", "raw", 0)
        try:
            self._configure(name, filter, nofilter)
        except BaseException:
            self.ins.close()
            raise

    def _configure(self, name: str, filter: str | None, nofilter: int) -> None:
        expression = None if nofilter else _with_except_filter(filter)
        if expression is not None:
            bpf.attach(self.ins, compile_filter(expression, name))
        if self.promisc:
            interfaces.set_promiscuous(self.ins, name)
        self.ins.bind((name, self.type))
        self.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, conf.bufsize)
        _enable_auxdata(self)
        if isinstance(self, _linux.L2ListenSocket):
            self.outs = None  # type: ignore[assignment]  # scapy's own None for "cannot send"
        else:
            self.outs = self.ins
            self.outs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, conf.bufsize)
        # What scapy dissects with: the link layer the bound socket reports.
        sa_ll = self.ins.getsockname()
        if sa_ll[3] in conf.l2types:
            self.LL = conf.l2types.num2layer[sa_ll[3]]
            self.lvl = 2
        elif sa_ll[1] in conf.l3types:
            self.LL = conf.l3types.num2layer[sa_ll[1]]
            self.lvl = 3
        else:
            self.LL = conf.default_l2
            self.lvl = 2
            warning("Unable to guess type (interface=%s protocol=%#x family=%i). Using %s",
                    sa_ll[0], sa_ll[1], sa_ll[3], self.LL.name)


class L2ListenSocket(L2Socket, _linux.L2ListenSocket):
    """scapy's ``L2ListenSocket`` (receive only, outgoing frames too) from the ladder."""

    desc = "read packets at layer 2 on PF_PACKET sockets from gprocket's ladder"


class L3PacketSocket(L2Socket, _linux.L3PacketSocket):
    """scapy's ``L3PacketSocket`` from the ladder, including its per-interface send sockets."""

    desc = "read/write packets at layer 3 on PF_PACKET sockets from gprocket's ladder"

    def __init__(self, iface: Interface = None, type: int = ETH_P_ALL,  # noqa: PLR0917
                 promisc: Any | None = None, filter: str | None = None,
                 nofilter: int = 0, monitor: Any | None = None) -> None:
        self.send_socks = {}
        super().__init__(iface=iface, type=type, promisc=promisc, filter=filter,
                         nofilter=nofilter, monitor=monitor)
        self.filter = filter
        self.send_socks = {network_name(self.iface): self}

    def send(self, x: Packet) -> int:
        # scapy's send() opens a socket for another interface with its own
        # class, which would not come from the ladder: open ours first.
        iface = x.route()[0] or network_name(conf.iface)
        if iface not in self.send_socks:
            self.send_socks[iface] = type(self)(
                iface=iface, type=conf.l3types.layer2num.get(type(x), self.type),
                filter=self.filter, promisc=self.promisc)
        sent: int = _linux.L3PacketSocket.send(self, x)
        return sent


class L3RawSocket(_supersocket.L3RawSocket):
    """scapy's ``L3RawSocket`` (IPv4 to loopback) with both sockets from the ladder.

    Sends on an ``AF_INET``/``IPPROTO_RAW`` socket (policy ``raw 255``),
    receives on a packet socket (policy ``packet``); ``send_rung`` and
    ``rung`` say which rung served each. Like scapy's, it ignores ``filter``.
    """

    desc = "Layer 3 using raw sockets (PF_INET/SOCK_RAW) from gprocket's ladder"

    def __init__(self, type: int = ETH_P_IP, filter: str | None = None,
                 iface: Interface = None, promisc: bool | None = None,
                 nofilter: int = 0) -> None:
        self.outs, self.send_rung = _ladder_socket("inet", "raw", _IPPROTO_RAW)
        try:
            self.outs.setsockopt(socket.SOL_IP, socket.IP_HDRINCL, 1)
            # Unbound, it receives from every interface, as scapy's does.
            self.ins, self.rung = _ladder_socket("packet", "raw", type)
            if iface is not None:
                self.iface = network_name(iface)
                self.ins.bind((self.iface, type))
            else:
                self.iface = "any"
            _enable_auxdata(self)
        except BaseException:
            self.close()
            raise


class L3RawSocket6(L3RawSocket, _supersocket.L3RawSocket6):
    """scapy's ``L3RawSocket6`` (IPv6 to loopback) with both sockets from the ladder."""

    def __init__(self, type: int = ETH_P_IPV6, filter: str | None = None,
                 iface: Interface = None, promisc: bool | None = None,
                 nofilter: int = 0) -> None:
        # The kernel fragments what needs it (RFC 2292), as for scapy's.
        self.outs, self.send_rung = _ladder_socket("inet6", "raw", _IPPROTO_RAW)
        try:
            self.ins, self.rung = _ladder_socket("packet", "raw", type)
        except BaseException:
            self.close()
            raise
        self.iface = "any" if iface is None else network_name(iface)


def _replacements() -> dict[tuple[object, str], Any]:
    return {
        (conf, "L2socket"): L2Socket,
        (conf, "L2listen"): L2ListenSocket,
        (conf, "L3socket"): L3PacketSocket,
        (conf, "L3socket6"): cast("type[SuperSocket]",
                                  functools.partial(L3PacketSocket, filter="ip6")),
        (_supersocket, "L3RawSocket"): L3RawSocket,
        (_supersocket, "L3RawSocket6"): L3RawSocket6,
    }


def install(*, strategies: str | Sequence[str] | None = None,
            helper: HelperPath = None) -> None:
    """Make every socket scapy opens from now on come from gprocket's ladder.

    Sets ``conf.L2socket``, ``conf.L2listen``, ``conf.L3socket`` and
    ``conf.L3socket6`` to this module's classes and replaces
    ``scapy.supersocket.L3RawSocket``/``L3RawSocket6`` (loopback). Sockets
    scapy already opened are left as they are. ``strategies`` and
    ``helper`` are passed to every ladder call (default: the ladder's
    order with a one-shot helper instead of the broker, or
    ``GPROCKET_STRATEGIES``; the helper from ``GPROCKET_HELPER`` or the
    standard places); an unknown strategy name raises ValueError when a
    socket is opened, as from ``gprocket.open``. Calling it again only
    updates those two; undo with :func:`uninstall`.
    """
    with _lock:
        _options.strategies = strategies
        _options.helper = helper
        if _saved:
            return
        for (owner, attr), replacement in _replacements().items():
            _saved[owner, attr] = getattr(owner, attr)
            setattr(owner, attr, replacement)


def uninstall() -> None:
    """Put back scapy's own socket classes (idempotent); open sockets stay open."""
    with _lock:
        for (owner, attr), original in _saved.items():
            setattr(owner, attr, original)
        _saved.clear()
        _options.strategies = None
        _options.helper = None


def is_installed() -> bool:
    """True between :func:`install` and :func:`uninstall`."""
    with _lock:
        return bool(_saved)
