"""The inherited rung: sockets passed by systemd socket activation.

systemd (and ``systemd-socket-activate``) starts a service with its listening
sockets already open from descriptor 3 on, and says so in the environment:
``LISTEN_PID`` (the process they are meant for), ``LISTEN_FDS`` (how many) and
``LISTEN_FDNAMES`` (colon-separated names). We follow ``sd_listen_fds(3)``:
the variables count only when ``LISTEN_PID`` is our pid (a child that merely
inherited the environment must not take its parent's sockets), the
descriptors are made close-on-exec, and the variables are removed once taken
so no child mistakes them for its own.

A request is matched against what each descriptor *is* — family, type,
protocol, bound address and port, bound device — read from the socket itself,
never from names or the order systemd happened to use.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from .._errors import RungUnavailable
from .._socket import disown
from .._spec import SocketRequest

__all__ = ["InheritedSocket", "InheritedStrategy", "inherited_sockets", "take_listen_fds"]

# sd_listen_fds(3): passed descriptors always start right after stdio.
SD_LISTEN_FDS_START = 3
_ENV_NAMES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_IFNAMSIZ = 16


@dataclass(frozen=True)
class InheritedSocket:
    """One socket passed by socket activation, described from the kernel's view."""

    fd: int
    name: str
    family: int
    type: int
    protocol: int
    address: str | None
    port: int
    interface: str | None
    v6only: bool = False

    def describe(self) -> str:
        """A short human description, e.g. ``fd 3 'dns' inet6 dgram [::]:53``."""
        families = {int(socket.AF_INET): "inet", int(socket.AF_INET6): "inet6",
                    int(socket.AF_PACKET): "packet"}
        types = {int(socket.SOCK_STREAM): "stream", int(socket.SOCK_DGRAM): "dgram",
                 int(socket.SOCK_RAW): "raw", int(socket.SOCK_SEQPACKET): "seqpacket"}
        fam = families.get(self.family, str(self.family))
        typ = types.get(self.type, str(self.type))
        where = f"[{self.address}]:{self.port}" if self.family == socket.AF_INET6 \
            else f"{self.address}:{self.port}"
        return f"fd {self.fd} {self.name!r} {fam} {typ} {where}"


def _describe_fd(fd: int, name: str) -> InheritedSocket | None:
    """Read family/type/protocol/address of `fd`; None when it is no socket."""
    copy = os.dup(fd)
    probe = socket.socket.__new__(socket.socket)
    try:
        socket.socket.__init__(probe, fileno=copy)
    except OSError:
        disown(probe, copy)
        os.close(copy)  # not a socket: closed here, once
        return None
    try:
        family = probe.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        type_ = probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        address: str | None = None
        port = 0
        v6only = False
        if family == socket.AF_INET6 and type_ != socket.SOCK_RAW:
            v6only = bool(probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        if family in (socket.AF_INET, socket.AF_INET6):
            bound: Any = probe.getsockname()
            address, port = str(bound[0]), int(bound[1])
            address = str(ipaddress.ip_address(address.split("%", 1)[0]))
        elif family == socket.AF_PACKET:
            # SO_PROTOCOL holds the ethertype in network order for packet sockets.
            proto = socket.ntohs(proto)
        device = probe.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, _IFNAMSIZ)
        interface = device.split(b"\0", 1)[0].decode() or None
        return InheritedSocket(fd, name, family, type_, proto, address, port, interface,
                               v6only)
    except OSError:
        return None
    finally:
        probe.close()


def take_listen_fds(environ: MutableMapping[str, str] | None = None,
                    pid: int | None = None) -> tuple[InheritedSocket, ...]:
    """Take the sockets socket activation passed to this process.

    Follows sd_listen_fds(3) with ``unset_environment`` true: returns nothing
    unless ``LISTEN_PID`` equals `pid` (default: ours); the descriptors
    become close-on-exec; the three variables are removed from `environ`
    (default ``os.environ``) in every case, as systemd does, since they can
    never be meant for a child of ours.
    Descriptors that are not sockets are left alone and not returned.
    """
    env = os.environ if environ is None else environ
    me = os.getpid() if pid is None else pid
    values = {key: env.pop(key, "") for key in _ENV_NAMES}
    try:
        listen_pid = int(values["LISTEN_PID"])
        count = int(values["LISTEN_FDS"])
    except ValueError:
        return ()
    if listen_pid != me or count <= 0:
        return ()
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] else []
    found = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        name = names[index] if index < len(names) else "unknown"
        described = _describe_fd(fd, name)
        if described is not None:
            found.append(described)
    return tuple(found)


class _Pool:
    """The process's inherited sockets, taken from the environment once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: tuple[InheritedSocket, ...] | None = None

    def get(self) -> tuple[InheritedSocket, ...]:
        with self._lock:
            if self._sockets is None:
                self._sockets = take_listen_fds()
            return self._sockets


_POOL = _Pool()


def inherited_sockets() -> tuple[InheritedSocket, ...]:
    """The sockets this process inherited by socket activation (taken once)."""
    return _POOL.get()


def _mismatch(candidate: InheritedSocket, request: SocketRequest) -> str | None:
    """Why `candidate` cannot serve `request`, or None when it can."""
    if request.family != candidate.family:
        return "family differs"
    if request.type != candidate.type:
        return "type differs"
    # The request spells out the protocol the kernel picks for 0, and
    # SO_PROTOCOL reports that same number, so they compare directly.
    if request.protocol != candidate.protocol:
        return "protocol differs"
    if candidate.family in (socket.AF_INET, socket.AF_INET6):
        # A raw socket's "port" is its protocol: only bound ports count.
        if candidate.type != socket.SOCK_RAW and request.port != candidate.port:
            return "port differs"
        if request.bind_ip != candidate.address:
            return "address differs"
    if request.interface != candidate.interface:
        return "bound device differs"
    # A dual-stack socket serves IPv6 requests too, not the other way round.
    if request.dualstack and candidate.v6only:
        return "IPv6-only, dual-stack wanted"
    return None


class InheritedStrategy:
    """Serve a request from a matching socket passed by socket activation.

    Needs no privilege and starts no process. Each match hands out a new
    close-on-exec duplicate, so the inherited socket itself stays open for
    the process's lifetime (as it does in systemd) and a program that closes
    and reopens its listener gets it again.
    """

    name = "inherited"

    def acquire(self, request: object) -> int:
        """Return a duplicate of the inherited socket matching `request`.

        Raises RungUnavailable when nothing was passed to this process, when
        the request names a network namespace, or when no passed socket
        matches (the reason lists what was passed).
        """
        if not isinstance(request, SocketRequest):
            raise RungUnavailable("socket activation passes sockets only, not devices")
        if request.namespace:
            raise RungUnavailable("inherited sockets live in the namespace we started in; "
                                  "a request for another namespace is never served from them")
        passed = inherited_sockets()
        if not passed:
            raise RungUnavailable("no sockets passed by socket activation "
                                  "(LISTEN_FDS/LISTEN_PID not set for this process)")
        reasons = []
        for candidate in passed:
            why = _mismatch(candidate, request)
            if why is None:
                try:
                    return fcntl.fcntl(candidate.fd, fcntl.F_DUPFD_CLOEXEC, 0)
                except OSError as err:
                    if err.errno == errno.EBADF:
                        reasons.append(f"{candidate.describe()}: closed by the program")
                        continue
                    raise
            reasons.append(f"{candidate.describe()}: {why}")
        raise RungUnavailable("no passed socket matches: " + "; ".join(reasons))
